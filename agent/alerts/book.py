"""Open alerts kept in the local store, so ``pulsetrace alerts`` works from another process.

The delivering process (the supervisor of ``pulsetrace run``, or ``pulsetrace serve``) replaces
the table ``alerts_open`` with its engine's open alerts after every change; readers only read.
Rows hold what ``pulsetrace alerts --json`` shows: never a channel's URL or key (channel
*names* only). Never raises for a storage problem on the writing side (counted instead).

The rows also keep what a restarted delivering process needs to carry on (:func:`load_open`): the
whole alert, when its last message left and to which channels, so a deploy during an outage does
not page again, and an outage that ends while the process is away still gets its resolve.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from pulsetrace.alerts.engine import OpenAlert
from pulsetrace.alerts.model import Alert
from pulsetrace.store import LocalStore

__all__ = ["AlertBook", "load_open", "read_open_alerts"]

_ALERT_FIELDS = frozenset(f.name for f in dataclasses.fields(Alert))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts_open (
    key TEXT PRIMARY KEY, severity TEXT, title TEXT, source TEXT, started REAL, value TEXT, threshold TEXT,
    channels TEXT, state TEXT, flaps INTEGER, silenced INTEGER, updated REAL,
    first_seen REAL, sent_at REAL, sent_severity TEXT, alert TEXT
)"""
_COLUMNS = 16


def row(st: OpenAlert) -> tuple[Any, ...]:
    a = st.alert
    state = "firing" if st.active and st.sent_at is not None else "pending" if st.active else "resolving"
    if st.active and st.silenced_by is not None:
        state = "silenced"
    return (a.key, a.severity, a.title, a.source, a.started, json.dumps(a.value), json.dumps(a.threshold),
            json.dumps(list(st.channels)), state, st.flaps, int(st.silenced_by is not None), time.time(),
            st.first_seen, st.sent_at, st.sent_severity, json.dumps(dataclasses.asdict(a)))


def _ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA)
    if len(conn.execute("PRAGMA table_info(alerts_open)").fetchall()) != _COLUMNS:
        # A table of an older pulsetrace: it only mirrors the engine, so it is rebuilt.
        conn.execute("DROP TABLE alerts_open")
        conn.execute(_SCHEMA)


def load_open(store: LocalStore) -> list[OpenAlert]:
    """The open alerts a previous delivering process left (those it had sent), to carry on with."""
    if not store.exists():
        return []
    try:
        conn = store.connect()
        rows = conn.execute("SELECT alert, channels, flaps, first_seen, sent_at, sent_severity FROM alerts_open "
                            "WHERE sent_at IS NOT NULL AND alert IS NOT NULL").fetchall()
    except sqlite3.Error:
        return []
    out: list[OpenAlert] = []
    for alert_json, channels, flaps, first_seen, sent_at, sent_severity in rows:
        try:
            doc = json.loads(alert_json)
            alert = Alert(**{k: v for k, v in doc.items() if k in _ALERT_FIELDS})
        except (ValueError, TypeError):
            continue
        out.append(OpenAlert(alert=alert, first_seen=float(first_seen or sent_at), sent_at=float(sent_at),
                             sent_severity=sent_severity, channels=tuple(json.loads(channels or "[]")),
                             flaps=int(flaps or 0)))
    return out


class AlertBook:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.failures = 0

    def save(self, open_alerts: Iterable[OpenAlert]) -> bool:
        rows = [row(st) for st in open_alerts]
        try:
            conn = self.store.connect()
            _ensure_table(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM alerts_open")
                conn.executemany(f"INSERT INTO alerts_open VALUES ({','.join('?' * _COLUMNS)})", rows)
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
