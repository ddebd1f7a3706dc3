"""Health history in the local store: SLA minute buckets and status transitions.

Tables live in the store's SQLite database (``LocalStore.connect()``), next to the spans:

- ``health_sla``: one row per probe and minute (seconds up/degraded/down, result counts,
  a sparse latency histogram), at most 30 days per probe (older rows pruned);
- ``health_transitions``: each change of a probe's reported status with its time and
  reason, at most :data:`MAX_TRANSITIONS` per probe and 30 days.

So a restart of ``pulsetrace serve`` does not reset a 30-day SLA. Every method does
blocking SQLite I/O: call it from the health I/O thread or the CLI, never the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.damping import Transition
from pulsetrace.healthchecks.sla import RETENTION_MINUTES, MinuteRow

if TYPE_CHECKING:
    from pulsetrace.store import LocalStore

MAX_TRANSITIONS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS health_sla (
    probe TEXT NOT NULL,
    minute INTEGER NOT NULL,
    up_s REAL NOT NULL,
    degraded_s REAL NOT NULL,
    down_s REAL NOT NULL,
    n_up INTEGER NOT NULL,
    n_degraded INTEGER NOT NULL,
    n_down INTEGER NOT NULL,
    lat TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (probe, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health_transitions (
    probe TEXT NOT NULL,
    at REAL NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_transitions_probe_at ON health_transitions(probe, at);
"""


def encode_hist(hist: dict[int, int]) -> str:
    return ",".join(f"{b}:{n}" for b, n in sorted(hist.items()) if n)


def decode_hist(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in text.split(",") if text else ():
        b, _, n = part.partition(":")
        if b.isdigit() and n.isdigit():
            out[int(b)] = int(n)
    return out


class HealthHistory:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn = self.store.connect()
        if not self._ready:
            conn.executescript(_SCHEMA)
            self._ready = True
        return conn

    def save_minutes(self, probe: str, rows: Sequence[MinuteRow]) -> None:
        if not rows:
            return
        conn = self._conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO health_sla VALUES (?,?,?,?,?,?,?,?,?)",
                             [(probe, r.minute, r.up_s, r.degraded_s, r.down_s, r.n_up, r.n_degraded, r.n_down,
                               encode_hist(r.hist)) for r in rows])

    def load_minutes(self, probe: str, since_minute: int) -> list[MinuteRow]:
        rows = self._conn().execute(
            "SELECT minute, up_s, degraded_s, down_s, n_up, n_degraded, n_down, lat FROM health_sla "
            "WHERE probe = ? AND minute >= ? ORDER BY minute", (probe, since_minute)).fetchall()
        return [MinuteRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], decode_hist(r[7])) for r in rows]

    def add_transitions(self, transitions: Iterable[Transition]) -> None:
        rows = [(t.probe, t.at, t.from_status.value, t.to_status.value, t.reason[:500]) for t in transitions]
        if not rows:
            return
        conn = self._conn()
        with conn:
            conn.executemany("INSERT INTO health_transitions VALUES (?,?,?,?,?)", rows)

    def transitions(self, probe: str, limit: int = 50) -> list[Transition]:
        rows = self._conn().execute(
            "SELECT probe, at, from_status, to_status, reason FROM health_transitions WHERE probe = ? "
            "ORDER BY at DESC LIMIT ?", (probe, limit)).fetchall()
        return [Transition(r[0], r[1], _status(r[2]), _status(r[3]), r[4]) for r in reversed(rows)]

    def probes(self) -> list[str]:
        rows = self._conn().execute("SELECT DISTINCT probe FROM health_sla ORDER BY probe").fetchall()
        return [r[0] for r in rows]

    def prune(self, now: float) -> int:
        """Drop minute buckets and transitions older than 30 days, and transitions beyond the cap."""
        oldest_minute = int(now // 60) - RETENTION_MINUTES - 1
        conn = self._conn()
        with conn:
            n = conn.execute("DELETE FROM health_sla WHERE minute < ?", (oldest_minute,)).rowcount
            n += conn.execute("DELETE FROM health_transitions WHERE at < ?", (oldest_minute * 60.0,)).rowcount
            n += conn.execute(
                "DELETE FROM health_transitions WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
                "(PARTITION BY probe ORDER BY at DESC) AS rn FROM health_transitions) WHERE rn > ?)",
                (MAX_TRANSITIONS,)).rowcount
        return n


def _status(text: str) -> Status:
    try:
        return Status(text)
    except ValueError:
        return Status.UNKNOWN
