"""Keeps the local store within ``store.retention`` and ``store.max_mb``, off the export thread.

:class:`StoreMaintainer` runs on its own background worker (instrumentation suppressed): at
start-up it checks the database (up to 64 MB; a corrupt one is moved aside and recreated), converts an
older store to incremental vacuum once, and prunes; afterwards it prunes whenever the store's
writer says a prune is due (every ``prune_every_rows`` rows or ``prune_every_s`` seconds, it
only wakes this thread) and at least every ``interval_s``. Each prune deletes the oldest spans
in short transactions, returns the freed pages to the filesystem and truncates the WAL, so the
files on disk stay near the cap. A last pass runs at shutdown, within its deadline.

Never raises: a failed pass is logged at debug level, counted as ``store_maintenance_failed``
and tried again at the next one. Never runs on the request path nor on the export thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref

from pulsetrace.background import start_worker
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store.db import LocalStore

__all__ = ["QUICK_CHECK_MAX_BYTES", "StoreMaintainer"]

#: The start-up integrity check reads every page: done for stores up to this size (every worker of a
#: service starts one); a larger corrupt store is found by the first write or prune that meets the damage.
QUICK_CHECK_MAX_BYTES = 64 * 1024 * 1024

_log = logging.getLogger("pulsetrace.store")

#: How long a fork() waits for a running pass to end before it goes ahead anyway.
FORK_WAIT_S = 2.0
#: Started maintainers, for the fork hooks: a pass runs inside SQLite, whose own mutexes a child
#: forked in the middle of it would find held forever (its first write would hang), so fork()
#: waits for the pass to end and no pass starts until fork() has returned.
_LIVE: weakref.WeakSet[StoreMaintainer] = weakref.WeakSet()
_fork_hooks_installed = False


def _before_fork() -> None:
    for maintainer in list(_LIVE):
        maintainer._held_for_fork = maintainer._pass_lock.acquire(timeout=FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    for maintainer in list(_LIVE):
        if maintainer._held_for_fork:
            maintainer._held_for_fork = False
            maintainer._pass_lock.release()


def _after_fork_in_child() -> None:
    for maintainer in list(_LIVE):  # the worker thread is gone; LocalStoreExporter.after_fork starts a new one
        maintainer._pass_lock = threading.Lock()
        maintainer._held_for_fork = False


def _install_fork_hooks() -> None:
    global _fork_hooks_installed
    if not _fork_hooks_installed and hasattr(os, "register_at_fork"):
        _fork_hooks_installed = True
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)


class StoreMaintainer:
    """The background worker that prunes, shrinks and checks one :class:`LocalStore`."""

    def __init__(self, store: LocalStore, metrics: SelfMetrics | None = None, *, interval_s: float = 30.0) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        #: Passes completed (for tests and ``pulsetrace status``-style diagnostics).
        self.passes = 0
        #: Held while a pass runs in SQLite, and by fork() (see :data:`_LIVE`).
        self._pass_lock = threading.Lock()
        self._held_for_fork = False

    def start(self) -> StoreMaintainer:
        """Start the worker (once); the writer then only wakes it when a prune is due."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self.store.prune_due = self.wake
            _install_fork_hooks()
            _LIVE.add(self)
            self._thread = start_worker("pulsetrace-store-maintenance", self._run)
        return self

    def wake(self) -> None:
        """Ask for a pass soon (cheap: sets an event; safe from any thread)."""
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no pass is pending or running (tests, shutdown)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after one last pass, bounded by ``timeout``."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        self.store.prune_due = None

    def _run(self) -> None:
        with self._pass_lock:
            self._startup()
            self.store.close()
        while not self._stop.is_set():
            self._idle.set()
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._idle.clear()
            with self._pass_lock:
                self._pass()
                self.store.close()  # between passes the worker holds no file open
        with self._pass_lock:
            self._pass()  # the last one, at shutdown
            self.store.close()
        _LIVE.discard(self)
        self._idle.set()

    def _startup(self) -> None:
        try:
            problem = self.store.check_integrity() if self.store.file_bytes() <= QUICK_CHECK_MAX_BYTES else "ok"
            if problem != "ok":
                # quick_check reads every page: a corruption a write has not met yet is found here.
                self.store.recover_if_corrupt(sqlite3.DatabaseError(f"database disk image is malformed ({problem})"))
            if self.store.convert_to_incremental_vacuum():
                _log.debug("local store %s converted to incremental vacuum", self.store.db_path)
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and self.store.recover_if_corrupt(exc):
                return self._pass()
            self._failed(exc)
        self._pass()

    def _pass(self) -> None:
        started = time.monotonic()
        try:
            self.store.prune()
        except (sqlite3.Error, OSError) as exc:
            if not (isinstance(exc, sqlite3.DatabaseError) and self.store.recover_if_corrupt(exc)):
                self._failed(exc)
        else:
            self.passes += 1
            _log.debug("local store pass in %.3fs", time.monotonic() - started)

    def _failed(self, exc: BaseException) -> None:
        _log.debug("local store maintenance failed: %s", exc)
        if self.metrics is not None:
            self.metrics.inc("store_maintenance_failed")
        self.store.close()  # the next pass reconnects
