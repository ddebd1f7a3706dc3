"""The embedded local store: SQLite in ``store.path`` (``spans.db``), WAL mode.

Written from export threads in batches by any number of processes at once (WAL +
busy timeout; each write is one short transaction), read by the CLI while
services write. Bounded by ``store.retention`` and a size cap (oldest spans go
first). Other components (health history, SLA buckets) keep their own tables in
the same database through :meth:`LocalStore.connect`.

Never called on the request path.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DB_NAME = "spans.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    resource TEXT NOT NULL,
    links TEXT NOT NULL DEFAULT '[]',
    scope TEXT NOT NULL DEFAULT '',
    remote_parent INTEGER NOT NULL DEFAULT 0,
    written REAL NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_start ON spans(start);
CREATE INDEX IF NOT EXISTS spans_written ON spans(written);
CREATE TABLE IF NOT EXISTS agent_counters (
    pid INTEGER NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    value REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (pid, name, reason)
);
"""


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    start: float
    end: float
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    links: list[dict[str, Any]] = field(default_factory=list)
    scope: str = ""
    remote_parent: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000.0


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


def _attrs(mapping: Any) -> str:
    if not mapping:
        return "{}"
    return json.dumps({str(k): _clean(v) for k, v in mapping.items()}, separators=(",", ":"), ensure_ascii=False)


def span_row(span: Any, now: float) -> tuple[Any, ...]:
    """One ``spans`` row from an OpenTelemetry ``ReadableSpan``."""
    ctx = span.context
    parent = span.parent
    status = "error" if span.status.status_code.name == "ERROR" else "ok"
    events = [{"name": e.name, "time": e.timestamp / 1e9, "attributes": json.loads(_attrs(e.attributes))}
              for e in span.events]
    links = [{"trace_id": f"{ln.context.trace_id:032x}", "span_id": f"{ln.context.span_id:016x}"} for ln in span.links]
    resource = span.resource.attributes if span.resource is not None else {}
    end = span.end_time if span.end_time is not None else span.start_time
    return (
        f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{parent.span_id:016x}" if parent else None,
        span.name, span.kind.name.lower(), str(resource.get("service.name", "unknown_service")),
        span.start_time / 1e9, end / 1e9, status, span.status.description,
        _attrs(span.attributes), json.dumps(events, ensure_ascii=False, default=str), _attrs(resource),
        json.dumps(links), span.instrumentation_scope.name if span.instrumentation_scope else "",
        1 if parent is not None and parent.is_remote else 0, now,
    )


class LocalStore:
    """SQLite-backed store. One connection per thread; safe across processes."""

    def __init__(self, path: str | os.PathLike[str], *, retention_s: float = 7 * 86400.0, max_mb: float = 512.0,
                 create: bool = True) -> None:
        self.dir = Path(path)
        self.db_path = self.dir / DB_NAME
        self.retention_s = retention_s
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._local = threading.local()
        self._create = create
        self._last_prune = 0.0

    def exists(self) -> bool:
        return self.db_path.exists()

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (created, with the schema, on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        if self._create:
            self.dir.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.exists():
            raise FileNotFoundError(f"no local store at {self.dir}")
        conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # a read-only store can still be read in its current mode
        conn.execute("PRAGMA synchronous=NORMAL")
        if self._create:
            conn.executescript(_SCHEMA)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- writing -------------------------------------------------------------------------

    def write_spans(self, spans: Iterable[Any]) -> int:
        now = time.time()
        rows = [span_row(s, now) for s in spans]
        if not rows:
            return 0
        conn = self.connect()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if now - self._last_prune > 60.0:
            self._last_prune = now
            self.prune(now)
        return len(rows)

    def prune(self, now: float | None = None) -> int:
        """Apply retention and the size cap; returns the number of spans removed."""
        now = time.time() if now is None else now
        conn = self.connect()
        removed = conn.execute("DELETE FROM spans WHERE start < ?", (now - self.retention_s,)).rowcount
        try:
            size = self.db_path.stat().st_size
        except OSError:
            size = 0
        if size > self.max_bytes:
            total = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
            drop = max(1, int(total * 0.2))  # trim the oldest fifth, then let SQLite reuse the pages
            removed += conn.execute("DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans ORDER BY start "
                                    "LIMIT ?)", (drop,)).rowcount
        return removed

    def write_counters(self, pid: int, counters: dict[tuple[str, str], float]) -> None:
        now = time.time()
        conn = self.connect()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO agent_counters VALUES (?,?,?,?,?)",
                             [(pid, n, r, v, now) for (n, r), v in counters.items()])

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def _span(row: sqlite3.Row | tuple[Any, ...]) -> StoredSpan:
        return StoredSpan(trace_id=row[0], span_id=row[1], parent_span_id=row[2], name=row[3], kind=row[4],
                          service=row[5], start=row[6], end=row[7], status=row[8], status_message=row[9],
                          attributes=json.loads(row[10]), events=json.loads(row[11]), resource=json.loads(row[12]),
                          links=json.loads(row[13]), scope=row[14], remote_parent=bool(row[15]))

    _COLS = ("trace_id, span_id, parent_span_id, name, kind, service, start, end, status, status_message, "
             "attributes, events, resource, links, scope, remote_parent")

    def trace_spans(self, trace_id: str) -> list[StoredSpan]:
        rows = self.connect().execute(f"SELECT {self._COLS} FROM spans WHERE trace_id = ? ORDER BY start",
                                      (trace_id.lower(),)).fetchall()
        return [self._span(r) for r in rows]

    def recent_trace_ids(self, limit: int = 20, since: float | None = None) -> list[str]:
        q = "SELECT trace_id, max(start) AS s FROM spans"
        args: list[Any] = []
        if since is not None:
            q += " WHERE start >= ?"
            args.append(since)
        q += " GROUP BY trace_id ORDER BY s DESC LIMIT ?"
        args.append(limit)
        return [r[0] for r in self.connect().execute(q, args).fetchall()]

    def spans_since(self, since: float, limit: int = 200_000) -> list[StoredSpan]:
        rows = self.connect().execute(f"SELECT {self._COLS} FROM spans WHERE start >= ? ORDER BY start LIMIT ?",
                                      (since, limit)).fetchall()
        return [self._span(r) for r in rows]

    def span_count(self) -> int:
        return int(self.connect().execute("SELECT count(*) FROM spans").fetchone()[0])

    def counters(self) -> dict[tuple[str, str], float]:
        """Agent counters summed over every process that wrote them."""
        rows = self.connect().execute("SELECT name, reason, sum(value) FROM agent_counters GROUP BY name, reason")
        return {(r[0], r[1]): r[2] for r in rows.fetchall()}


def open_store(path: str | os.PathLike[str], create: bool = False) -> LocalStore:
    return LocalStore(path, create=create)


def group_traces(spans: Sequence[StoredSpan]) -> dict[str, list[StoredSpan]]:
    out: dict[str, list[StoredSpan]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out
