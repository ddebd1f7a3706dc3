"""The embedded local store's database: SQLite in ``store.path`` (``spans.db``), WAL mode.

Written from export threads in batches by any number of processes at once: WAL
lets readers (the CLI) read while services write, each batch is one short
``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two writers
never deadlock upgrading a read lock), and a busy timeout makes writers queue
instead of failing. Bounded by ``store.retention`` and a size cap: the oldest
spans go first, in short chunks so a prune never holds the write lock for long, and
the freed pages are returned to the filesystem (incremental vacuum, then a WAL
checkpoint that truncates), so the file shrinks. With a
:class:`~pulsetrace.store.maintenance.StoreMaintainer` attached, writers only wake it and
every prune runs on its thread (the export thread never prunes).

Files are private (0700/0600), symlinks refused, and a database SQLite reports corrupt is
moved aside and recreated (:mod:`pulsetrace.store.files`); each recovery is recorded in
the ``store_events`` table of the new database and counted as ``store_recovered``.
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store.connections import Held, install_fork_hook
from pulsetrace.store.files import (
    check_no_symlinks,
    is_corruption,
    move_aside,
    precreate,
    prepare_dir,
    recovered_files,
)
from pulsetrace.store.queries import COLUMNS as _COLS
from pulsetrace.store.queries import SpanQueries
from pulsetrace.store.rows import row_to_span, span_row

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
CREATE TABLE IF NOT EXISTS store_events (
    time REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL,
    file TEXT NOT NULL
);
"""


class LocalStore(SpanQueries):
    """SQLite-backed store. One connection per thread (and per process); safe across processes.

    ``create=False`` opens an existing store for reading only: nothing is created,
    and :meth:`connect` raises ``FileNotFoundError`` when there is no store yet.
    """

    def __init__(self, path: str | os.PathLike[str], *, retention_s: float = 7 * 86400.0, max_mb: float = 512.0,
                 create: bool = True, prune_every_s: float = 60.0, prune_every_rows: int = 20_000,
                 metrics: SelfMetrics | None = None) -> None:
        self.dir = Path(path)
        self.db_path = self.dir / DB_NAME
        self.retention_s = retention_s
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.prune_every_s = prune_every_s
        self.prune_every_rows = prune_every_rows
        self.metrics = metrics
        #: Called instead of pruning on the writer's thread when a prune is due (a maintainer's ``wake``).
        self.prune_due: Callable[[], None] | None = None
        self._local = threading.local()
        self._create = create
        self._last_prune = time.monotonic()
        self._rows_since_prune = 0
        #: Bumped by each recovery: every thread's connection to the old file is then replaced.
        self._generation = 0
        self._recover_lock = threading.Lock()
        #: Identifies this process's counters (a pid alone is reused by the OS).
        self._instance = uuid.uuid4().hex
        self._instance_pid = os.getpid()

    def exists(self) -> bool:
        return self.db_path.is_file()

    def check_path(self) -> None:
        """Raise :class:`~pulsetrace.store.files.StorePathError` when the store's path is a symlink."""
        prepare_dir(self.dir, create=False)
        check_no_symlinks(self.db_path)

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (created, with the schema, on first use).

        Raises :class:`~pulsetrace.store.files.StorePathError` for a symlinked store path. A
        writer (``create=True``) that finds the database corrupt moves it aside and starts a new one.
        """
        held: Held | None = getattr(self._local, "held", None)
        if held is not None:
            if held.pid == os.getpid() and held.conn is not None and self._local.generation == self._generation:
                return held.conn
            self._local.held = None
            held.release(close=held.pid == os.getpid())  # inherited through fork(): kept alive, never used
        prepare_dir(self.dir, self._create)
        check_no_symlinks(self.db_path)
        if self._create:
            precreate(self.db_path)
        elif not self.db_path.is_file():
            raise FileNotFoundError(f"no local store at {self.dir}")
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not (self._create and is_corruption(exc)):
                raise
            self._recover(str(exc), None)
            precreate(self.db_path)
            conn = self._open()
        install_fork_hook()
        self._local.held = Held(conn)
        self._local.generation = self._generation
        self._local.inode = _inode(self.db_path)
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            if self._create:
                # Only takes effect on a new, empty database; an older one is converted by the maintainer.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._set_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                # A small cap gets a small WAL too: checkpoints every quarter of the cap, truncated after.
                pages = max(16, min(1000, self.max_bytes // 4096 // 4))
                conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
                conn.execute(f"PRAGMA journal_size_limit={pages * 4096}")
                conn.executescript(_SCHEMA)
            else:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a file that is no database fails here
        except BaseException:
            conn.close()
            raise
        return conn

    def recover_if_corrupt(self, exc: BaseException) -> bool:
        """After ``exc`` from this store: if it says the file is corrupt, move it aside; ``True`` if so.

        Another process may have moved it already (the file at the path is no longer the one
        this thread has open): then this thread only reconnects.
        """
        if not (self._create and is_corruption(exc)):
            return False
        self._recover(str(exc), getattr(self._local, "inode", None))
        return True

    def _recover(self, detail: str, opened_inode: int | None) -> None:
        with self._recover_lock:
            self.close()
            moved = ""
            current = _inode(self.db_path)
            if current is not None and (opened_inode is None or current == opened_inode):
                try:
                    moved = move_aside(self.db_path).name
                except FileNotFoundError:
                    moved = ""  # another process moved it first
            self._generation += 1
        if not moved:
            return
        _log.warning("local store %s was corrupt (%s): moved aside to %s, a new one is created",
                     self.db_path, detail, moved)
        if self.metrics is not None:
            self.metrics.inc("store_recovered")
        try:
            conn = self.connect()
            conn.execute("INSERT INTO store_events VALUES (?,?,?,?)", (time.time(), "recovered", detail, moved))
        except sqlite3.Error as exc:
            _log.debug("store recovery event not recorded: %s", exc)

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
        held: Held | None = getattr(self._local, "held", None)
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
        try:
            self._insert(rows)
        except sqlite3.DatabaseError as exc:
            if not self.recover_if_corrupt(exc):
                raise
            self._insert(rows)  # into the new database
        self._rows_since_prune += len(rows)
        if (self._rows_since_prune >= self.prune_every_rows
                or time.monotonic() - self._last_prune >= self.prune_every_s):
            if self.prune_due is not None:
                self._rows_since_prune = 0
                self._last_prune = time.monotonic()
                self.prune_due()  # the maintainer prunes on its own thread
            else:
                self.prune(now)
        return len(rows)

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

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
        self.shrink(conn)
        return removed

    def shrink(self, conn: sqlite3.Connection | None = None) -> None:
        """Give freed pages back to the filesystem and truncate the WAL: the file itself gets smaller."""
        conn = conn or self.connect()
        if (int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                and int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2):
            # executescript steps the pragma to the end; execute() would free one page per call.
            conn.executescript("PRAGMA incremental_vacuum;")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass  # a reader holds the WAL: truncated at a later pass

    def convert_to_incremental_vacuum(self) -> bool:
        """An older store (no auto-vacuum) is rewritten once so that later prunes can shrink it."""
        conn = self.connect()
        if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            return False
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        return True

    def check_integrity(self) -> str:
        """``"ok"``, or what SQLite's quick check found wrong (the first problem)."""
        row = self.connect().execute("PRAGMA quick_check(1)").fetchone()
        return str(row[0]) if row else "ok"

    def file_bytes(self) -> int:
        """Bytes on disk: the database and its WAL."""
        total = 0
        for path in (self.db_path, Path(str(self.db_path) + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

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
        try:
            self._write_counters(pid, counters, busy_timeout_s, instance or self._instance_id())
        except sqlite3.DatabaseError as exc:
            if not self.recover_if_corrupt(exc):
                raise
            self._write_counters(pid, counters, busy_timeout_s, instance or self._instance_id())

    def _write_counters(self, pid: int, counters: dict[tuple[str, str], float], busy_timeout_s: float | None,
                        instance: str) -> None:
        now = time.time()
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



def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def store_health(store: LocalStore) -> dict[str, Any]:
    """``{status, detail, recovered_files}`` for ``pulsetrace status``: ``ok``, ``recovered`` or ``unwritable``."""
    recovered = recovered_files(store.dir, DB_NAME)
    health: dict[str, Any] = {"status": "ok", "detail": "", "recovered_files": recovered}
    if store.exists():
        try:
            rows = store.connect().execute("SELECT time, detail, file FROM store_events WHERE event = 'recovered' "
                                           "ORDER BY time DESC LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                return {**health, "status": "unwritable",
                        "detail": f"corrupt: {exc} (the agent moves it aside and starts a new one when it next "
                                  "writes)"}
            if "no such table" not in str(exc):
                return {**health, "status": "unwritable", "detail": str(exc)}
            rows = []
        if rows:
            at, detail, name = rows[0]
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
            health.update(status="recovered", detail=f"corrupt store moved aside to {name} at {when}: {detail}")
        elif recovered:
            health.update(status="recovered", detail=f"corrupt store moved aside to {recovered[-1]}")
    if store.dir.is_dir() and not os.access(store.dir, os.W_OK):
        health.update(status="unwritable", detail=f"the store directory {store.dir} is not writable")
    return health


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction left to roll back (the failing statement ended it)


def open_store(path: str | os.PathLike[str], create: bool = False) -> LocalStore:
    return LocalStore(path, create=create)
