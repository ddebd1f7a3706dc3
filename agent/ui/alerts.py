"""Open alerts for the health page, as the process that delivers them keeps them in the local store.

HOOK (issue 12, alerts): the alerting engine keeps open alerts in the local store so that
``pulsetrace alerts`` works from another process. Until its reader is on main, this module
reads a table named ``alerts`` if the store has one, with whatever of the ``alerts --json``
fields (``key, severity, title, source, started, value, threshold, channels``) it holds.
When the alerts package lands, replace the body of :func:`open_alerts` with a call to its
reader; the health page already shows whatever list this returns.

Read-only; ``None`` means "alerts are not kept in this store" (the page then says nothing
about alerts), an empty list means "none open".
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.store import LocalStore

__all__ = ["open_alerts", "FIELDS"]

FIELDS = ("key", "severity", "title", "source", "started", "value", "threshold", "channels")
_MAX = 200


def open_alerts(store: LocalStore) -> list[dict[str, Any]] | None:
    if not store.exists():
        return None
    try:
        conn = store.connect()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alerts" not in tables:
            return None
        cur = conn.execute(f"SELECT * FROM alerts LIMIT {_MAX}")
        columns = [d[0] for d in cur.description or ()]
        rows = [dict(zip(columns, r)) for r in cur.fetchall()]
    except sqlite3.Error:
        return None
    open_rows = [r for r in rows if not r.get("resolved") and r.get("status") not in ("resolved", "closed")]
    return [{k: r.get(k) for k in FIELDS if k in r} for r in open_rows]
