"""Open alerts for the health page, as the process that delivers them keeps them in the local store.

The alerting engine (``pulsetrace.alerts``) replaces the store's ``alerts_open`` table after
every change, so ``pulsetrace alerts`` (and this page) work from another process; this module
only reads it, through :func:`pulsetrace.alerts.book.read_open_alerts`.

Read-only. ``None`` means alerts are neither configured (``alerts.channels``) nor kept in this
store: the page then says nothing about alerts. An empty list means none is open.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from pulsetrace.alerts.book import read_open_alerts

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.store import LocalStore

__all__ = ["open_alerts"]


def _kept(store: LocalStore) -> bool:
    if not store.exists():
        return False
    row = store.connect().execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts_open'"
                                  ).fetchone()
    return row is not None


def open_alerts(store: LocalStore, cfg: Config) -> list[dict[str, Any]] | None:
    try:
        if not cfg.alerts.channels and not _kept(store):
            return None
        return read_open_alerts(store)
    except sqlite3.Error:
        return None
