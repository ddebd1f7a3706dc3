"""The embedded local store's database: SQLite in ``store.path`` (``spans.db``), WAL mode.

Written from export threads in batches by any number of processes at once: WAL
lets readers (the CLI) read while services write, each batch is one short
``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two writers
never deadlock upgrading a read lock), and a busy timeout makes writers queue
instead of failing. Bounded by ``store.retention`` and a size cap: the oldest
spans go first, in short chunks so a prune never holds the write lock for long.
Other components (health history, SLA buckets) keep their own tables in the same
database through :meth:`LocalStore.connect`.

Never called on the request path. Errors surface as ``sqlite3.Error``/``OSError``
to the caller (the ``local`` exporter turns them into a counted failure).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pulsetrace.store.rows import StoredSpan, row_to_span, span_row

_log = logging.getLogger("pulsetrace.store")

DB_NAME = "spans.db"
#: How long a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT_S = 10.0
#: Rows deleted per transaction while pruning.
_PRUNE_CHUNK = 2000

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
CREATE TABLE IF NOT EXISTS process_counters (
    instance TEXT NOT NULL,
    pid INTEGER NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    value REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (instance, name, reason)
);
"""

_COLS = ("trace_id, span_id, parent_span_id, name, kind, service, start, end, status, status_message, "
         "attributes, events, resource, links, scope, remote_parent")

#: Connections inherited through fork(): never used nor closed in the child (closing one there
#: releases POSIX locks and may checkpoint or unlink files the parent still uses), just kept from
#: the garbage collector.
_INHERITED: list[sqlite3.Connection] = []
#: Every connection this process opened and has not closed yet, by ``id``. Connections live in
#: per-thread ``threading.local`` slots, and fork() frees the slots of every thread but the one
#: that forked (CPython clears their thread states), which would close the child's copies of
#: the parent's descriptors; the at-fork hook moves them all to ``_INHERITED`` first. Plain
#: dict operations, no lock: the hook runs in a child where another thread may have held one.
_OPENED: dict[int, sqlite3.Connection] = {}
_fork_hook_installed = False


def _keep_inherited() -> None:
    """After fork(), in the child: the parent's connections are kept alive, never used or closed."""
    _INHERITED.extend(_OPENED.values())
    _OPENED.clear()


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_keep_inherited)


class _Held:
    """One thread's connection, in the store's ``threading.local``; registered in ``_OPENED``.

    Unregistered when its thread ends (the slot is freed) or the store is closed, but only in
    the process that opened it: in a forked child the connection is the parent's and stays open.
    """

    __slots__ = ("conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.pid = os.getpid()
        _OPENED[id(conn)] = conn

    def release(self, close: bool) -> None:
        """Let go of the connection: closed (``close``) or left to whoever still holds it."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.pid != os.getpid():
            # The parent's: the fork hook moved it to _INHERITED (kept here too should the hook not
            # have run, e.g. a fork through a path that skips Python's at-fork hooks).
            if not any(c is conn for c in _INHERITED):
                _INHERITED.append(conn)
            return
        _OPENED.pop(id(conn), None)
        if close:
            conn.close()

    def __del__(self) -> None:
        # The thread ended or the store was dropped: not closed here, since a caller may still hold
        # the connection (``LocalStore(p).connect().execute(...)``); it closes when the last
        # reference goes, as any sqlite3 connection does.
        try:
            self.release(close=False)
        except Exception:  # a finalizer must not raise
            pass


class LocalStore:
    """SQLite-backed store. One connection per thread (and per process); safe across processes.

    ``create=False`` opens an existing store for reading only: nothing is created,
    and :meth:`connect` raises ``FileNotFoundError`` when there is no store yet.
    """

    def __init__(self, path: str | os.PathLike[str], *, retention_s: float = 7 * 86400.0, max_mb: float = 512.0,
                 create: bool = True, prune_every_s: float = 60.0, prune_every_rows: int = 20_000) -> None:
        self.dir = Path(path)
        self.db_path = self.dir / DB_NAME
        self.retention_s = retention_s
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.prune_every_s = prune_every_s
        self.prune_every_rows = prune_every_rows
        self._local = threading.local()
        self._create = create
        self._last_prune = time.monotonic()
        self._rows_since_prune = 0
        #: Identifies this process's counters (a pid alone is reused by the OS).
        self._instance = uuid.uuid4().hex
        self._instance_pid = os.getpid()

    def exists(self) -> bool:
        return self.db_path.is_file()

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (created, with the schema, on first use)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            if held.pid == os.getpid() and held.conn is not None:
                return held.conn
            self._local.held = None
            held.release(close=False)  # inherited through fork(): kept alive, never used
        if self._create:
            self.dir.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.is_file():
            raise FileNotFoundError(f"no local store at {self.dir}")
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            if self._create:
                self._set_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        _install_fork_hook()
        self._local.held = _Held(conn)
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Changing the journal mode needs a moment alone with the file; when several
        # processes open a new store at once, one of them wins and WAL then persists.
        for attempt in range(20):
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError:
                mode = ""
            if str(mode).lower() == "wal":
                return
            time.sleep(0.01 * (attempt + 1))

    def close(self) -> None:
        """Close this thread's connection (one inherited through fork() is kept open, unused)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._local.held = None
            held.release(close=True)

    def _instance_id(self) -> str:
        if os.getpid() != self._instance_pid:  # a forked child counts as its own process
            self._instance = uuid.uuid4().hex
            self._instance_pid = os.getpid()
        return self._instance

    # -- writing -------------------------------------------------------------------------

    def write_spans(self, spans: Iterable[Any]) -> int:
        """Insert (or replace) a batch of ``ReadableSpan`` in one transaction; prunes now and then."""
        now = time.time()
        rows = [span_row(s, now) for s in spans]
        if not rows:
            return 0
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._rows_since_prune += len(rows)
        if (self._rows_since_prune >= self.prune_every_rows
                or time.monotonic() - self._last_prune >= self.prune_every_s):
            self.prune(now)
        return len(rows)

    def prune(self, now: float | None = None) -> int:
        """Apply retention and the size cap; returns the number of spans removed."""
        now = time.time() if now is None else now
        self._last_prune = time.monotonic()
        self._rows_since_prune = 0
        conn = self.connect()
        removed = 0
        cutoff = now - self.retention_s
        while True:  # bounded: each chunk removes rows or the loop ends
            n = self._delete(conn, "DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans WHERE start < ? "
                                   "LIMIT ?)", (cutoff, _PRUNE_CHUNK))
            removed += n
            if n < _PRUNE_CHUNK:
                break
        self._delete(conn, "DELETE FROM process_counters WHERE updated < ?", (cutoff,))
        removed += self._enforce_size(conn)
        return removed

    def _enforce_size(self, conn: sqlite3.Connection) -> int:
        used = self.used_bytes(conn)
        if used <= self.max_bytes:
            return 0
        count = int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
        if count == 0:
            return 0
        # Down to 90 % of the cap, so that the next few batches do not prune again at once.
        per_span = used / count
        excess = math.ceil((used - 0.9 * self.max_bytes) / per_span)
        removed = 0
        while removed < excess:
            n = self._delete(conn, "DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans ORDER BY start LIMIT ?)",
                             (min(_PRUNE_CHUNK, excess - removed),))
            if n == 0:
                break
            removed += n
        return removed

    @staticmethod
    def _delete(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute(sql, args).rowcount
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return int(n)

    def used_bytes(self, conn: sqlite3.Connection | None = None) -> int:
        """Bytes of live data: pages in use, not the file size (freed pages are reused, not returned)."""
        conn = conn or self.connect()
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * page_size

    def write_counters(self, pid: int, counters: dict[tuple[str, str], float],
                       busy_timeout_s: float | None = None, *, instance: str | None = None) -> None:
        """Record this process's agent counters (totals so far), for ``pulsetrace status``.

        ``busy_timeout_s`` bounds the wait for another writer (used at shutdown). ``instance``
        names the set of counters (default: this store object's, per process); writers of the
        same counters pass the same one (:func:`counters_instance`) so that they replace each
        other's rows instead of being summed as two processes.
        """
        if not counters:
            return
        now = time.time()
        instance = instance or self._instance_id()
        conn = self.connect()
        if busy_timeout_s is not None:
            conn.execute(f"PRAGMA busy_timeout={max(0, int(busy_timeout_s * 1000))}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO process_counters VALUES (?,?,?,?,?,?)",
                                 [(instance, pid, n, r, v, now) for (n, r), v in counters.items()])
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        finally:
            if busy_timeout_s is not None:
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    # -- reading -------------------------------------------------------------------------

    _span = staticmethod(row_to_span)
    _COLS = _COLS

    def _read(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor | None:
        """Run a query; ``None`` when the store's tables do not exist yet (a writer is creating them)."""
        try:
            return self.connect().execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        cur = self._read(sql, args)
        return cur.fetchall() if cur is not None else []

    def trace_spans(self, trace_id: str) -> list[StoredSpan]:
        rows = self._rows(f"SELECT {_COLS} FROM spans WHERE trace_id = ? ORDER BY start", (trace_id.lower(),))
        return [row_to_span(r) for r in rows]

    def traces_spans(self, trace_ids: Sequence[str]) -> dict[str, list[StoredSpan]]:
        """The spans of several traces at once, each list in start order."""
        out: dict[str, list[StoredSpan]] = {t: [] for t in trace_ids}
        ids = list(trace_ids)
        for i in range(0, len(ids), 500):  # SQLite caps the number of bound parameters
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._rows(f"SELECT {_COLS} FROM spans WHERE trace_id IN ({marks}) ORDER BY start", chunk):
                out[row[0]].append(row_to_span(row))
        return out

    def find_trace_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Trace ids starting with ``prefix`` (lower-case hex), through the primary-key index."""
        prefix = prefix.lower()
        upper = prefix + "g"  # 'g' sorts after every hex digit
        rows = self._rows("SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? LIMIT ?",
                          (prefix, upper, limit))
        return [r[0] for r in rows]

    def recent_trace_ids(self, limit: int = 20, since: float | None = None) -> list[str]:
        """The ``limit`` traces with the most recent spans, newest first.

        Walks the ``start`` index backwards and stops at ``limit`` distinct traces, so
        the cost follows the number of traces asked for, not the size of the store.
        """
        if limit <= 0:
            return []
        sql = "SELECT trace_id FROM spans"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE start >= ?"
            args.append(since)
        sql += " ORDER BY start DESC"
        seen: dict[str, None] = {}
        cur = self._read(sql, args)
        if cur is None:
            return []
        while len(seen) < limit:
            rows = cur.fetchmany(512)
            if not rows:
                break
            for (trace_id,) in rows:
                seen.setdefault(trace_id, None)
                if len(seen) >= limit:
                    break
        cur.close()
        return list(seen)

    def trace_ids_before(self, limit: int, before: float | None = None, since: float | None = None
                         ) -> list[tuple[str, float]]:
        """Up to ``limit`` traces, newest first, as ``(trace_id, start of its newest span)``.

        Only spans with ``since <= start < before`` are looked at, through the ``start`` index
        walked backwards, so a page costs the traces it returns, not the size of the store.
        A caller pages on by passing the last start it got back as the next ``before``.
        """
        if limit <= 0:
            return []
        clauses, args = [], []
        if before is not None:
            clauses.append("start < ?")
            args.append(before)
        if since is not None:
            clauses.append("start >= ?")
            args.append(since)
        sql = "SELECT trace_id, start FROM spans" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        cur = self._read(sql + " ORDER BY start DESC", args)
        if cur is None:
            return []
        seen: dict[str, float] = {}
        try:
            while len(seen) < limit:
                rows = cur.fetchmany(512)
                if not rows:
                    break
                for trace_id, start in rows:
                    if trace_id not in seen:
                        seen[trace_id] = float(start)
                        if len(seen) >= limit:
                            break
        finally:
            cur.close()
        return list(seen.items())

    def spans_since(self, since: float, limit: int = 200_000) -> list[StoredSpan]:
        rows = self._rows(f"SELECT {_COLS} FROM spans WHERE start >= ? ORDER BY start LIMIT ?", (since, limit))
        return [row_to_span(r) for r in rows]

    def span_count(self) -> int:
        rows = self._rows("SELECT count(*) FROM spans")
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[tuple[str, str], float]:
        """Agent counters summed over every process that wrote them."""
        rows = self._rows("SELECT name, reason, sum(value) FROM process_counters GROUP BY name, reason")
        return {(r[0], r[1]): float(r[2]) for r in rows}

    def processes(self) -> int:
        """How many agent processes have reported counters (within the retention period)."""
        rows = self._rows("SELECT count(DISTINCT instance) FROM process_counters")
        return int(rows[0][0]) if rows else 0


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction left to roll back (the failing statement ended it)


def open_store(path: str | os.PathLike[str], create: bool = False) -> LocalStore:
    return LocalStore(path, create=create)
