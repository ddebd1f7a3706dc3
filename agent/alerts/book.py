"""Open alerts kept in the local store, so ``pulsetrace alerts`` works from another process.

The delivering process (the supervisor of ``pulsetrace run``, or ``pulsetrace serve``) replaces
the table ``alerts_open`` with its engine's open alerts after every change; readers only read.
Rows hold what ``pulsetrace alerts --json`` shows: never a channel's URL or key (channel
*names* only). Never raises for a storage problem on the writing side (counted instead).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from pulsetrace.alerts.engine import OpenAlert
from pulsetrace.store import LocalStore

__all__ = ["AlertBook", "read_open_alerts"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts_open (
    key TEXT PRIMARY KEY, severity TEXT, title TEXT, source TEXT, started REAL, value TEXT, threshold TEXT,
    channels TEXT, state TEXT, flaps INTEGER, silenced INTEGER, updated REAL
)"""


def row(st: OpenAlert) -> tuple[Any, ...]:
    a = st.alert
    state = "firing" if st.active and st.sent_at is not None else "pending" if st.active else "resolving"
    if st.active and st.silenced_by is not None:
        state = "silenced"
    return (a.key, a.severity, a.title, a.source, a.started, json.dumps(a.value), json.dumps(a.threshold),
            json.dumps(list(st.channels)), state, st.flaps, int(st.silenced_by is not None), time.time())


class AlertBook:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.failures = 0

    def save(self, open_alerts: Iterable[OpenAlert]) -> bool:
        rows = [row(st) for st in open_alerts]
        try:
            conn = self.store.connect()
            conn.execute(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM alerts_open")
                conn.executemany("INSERT INTO alerts_open VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
        except (sqlite3.Error, OSError):
            self.failures += 1
            return False
        return True


def read_open_alerts(store: LocalStore) -> list[dict[str, Any]]:
    """The ``alerts`` list of ``pulsetrace alerts --json`` (empty when nothing was ever recorded)."""
    if not store.exists():
        return []
    try:
        rows = store.connect().execute(
            "SELECT key, severity, title, source, started, value, threshold, channels, state, flaps, silenced "
            "FROM alerts_open ORDER BY started").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [{"key": r[0], "severity": r[1], "title": r[2], "source": r[3], "started": r[4],
             "value": json.loads(r[5]), "threshold": json.loads(r[6]), "channels": json.loads(r[7]),
             "state": r[8], "flaps": r[9], "silenced": bool(r[10])} for r in rows]
