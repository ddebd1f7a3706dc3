"""One process's agent counters (spans exported, dropped by reason ...) written to the local store.

So that ``pulsetrace status`` shows them whichever exporters run. Called on the pipeline's
thread, never on the request path; never raises for a storage problem.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
import weakref

from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store.db import LocalStore

_log = logging.getLogger("pulsetrace.store")


_COUNTER_INSTANCES: weakref.WeakKeyDictionary[object, tuple[int, str]] = weakref.WeakKeyDictionary()
_COUNTER_INSTANCES_LOCK = threading.Lock()


def counters_instance(source: object) -> str:
    """The ``process_counters`` instance of a counter source (a ``SelfMetrics``) in this process.

    Every writer of the same counters (the ``local`` exporter, :class:`CounterWriter`) uses it,
    so the rows are one set per process; a forked child gets its own.
    """
    pid = os.getpid()
    with _COUNTER_INSTANCES_LOCK:
        found = _COUNTER_INSTANCES.get(source)
        if found is None or found[0] != pid:
            found = (pid, uuid.uuid4().hex)
            _COUNTER_INSTANCES[source] = found
        return found[1]


class CounterWriter:
    """Writes one process's agent counters to the local store: the span pipeline's ``counter_sink``.

    So that ``pulsetrace status`` shows exports and drops whichever exporters are configured
    (the ``local`` exporter writes them too, as the same rows). Called from the pipeline thread
    every few seconds and at shutdown; the store is opened (and created) on first use.
    Harmless when the store cannot be written (read-only or full disk, a corrupt file, a lock
    held too long): the failure is counted as ``counter_writes_failed`` and the next call
    tries again. Never raises for a storage problem.
    """

    def __init__(self, store_path: str | os.PathLike[str], metrics: SelfMetrics, *, busy_timeout_s: float = 0.5,
                 retention_s: float = 7 * 86400.0) -> None:
        self.store_path = store_path
        self.metrics = metrics
        self.busy_timeout_s = busy_timeout_s
        self.retention_s = retention_s
        self._store: LocalStore | None = None

    def __call__(self) -> None:
        counters = self.metrics.counters()
        if not counters:
            return
        try:
            if self._store is None:
                self._store = LocalStore(self.store_path, retention_s=self.retention_s)
            self._store.write_counters(os.getpid(), counters, busy_timeout_s=self.busy_timeout_s,
                                       instance=counters_instance(self.metrics))
        except (sqlite3.Error, OSError, ValueError) as exc:
            _log.debug("agent counters not written to the local store: %s", exc)
            self.metrics.inc("counter_writes_failed")
            if self._store is not None:
                try:
                    self._store.close()  # the next call reconnects (the directory may be back)
                except sqlite3.Error:
                    pass
