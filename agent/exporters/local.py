"""The ``local`` exporter: spans into the embedded SQLite store (the default).

Runs on its pipeline channel thread. A write that fails (read-only or missing
directory, disk full, a corrupt file, a lock held too long by another process)
returns ``FAILURE``, which the pipeline counts as ``spans_dropped{export_failed:local}``;
nothing is raised. Each export also records this process's agent counters in the
store so that ``pulsetrace status`` can sum them over every worker (as the same rows as
the pipeline's :class:`~pulsetrace.store.CounterWriter`, which writes them whatever the exporters).

Retention and the size cap are kept by a :class:`~pulsetrace.store.StoreMaintainer` on its own
background worker, started with the exporter (so at start-up) and again in a forked child:
the export thread only writes. A symlinked store path is refused: said once as a warning,
then every batch is a counted drop.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore, StoreMaintainer, StorePathError, counters_instance

_log = logging.getLogger("pulsetrace.exporters.local")


class LocalStoreExporter:
    name = "local"

    def __init__(self, ctx: ExporterContext) -> None:
        store_cfg = ctx.config.store
        self.metrics: SelfMetrics = ctx.metrics
        self._path = store_cfg.path
        self._retention_s = store_cfg.retention
        self._max_mb = store_cfg.max_mb
        self._path_refused = False
        self.store = self._open()
        self.maintainer = StoreMaintainer(self.store, self.metrics).start()

    def _open(self) -> LocalStore:
        return LocalStore(self._path, retention_s=self._retention_s, max_mb=self._max_mb, metrics=self.metrics)

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            self.store.write_spans(spans)
        except StorePathError as exc:
            if not self._path_refused:
                self._path_refused = True
                _log.warning("local store not written: %s", exc)
            return ExportOutcome.FAILURE
        except (sqlite3.Error, OSError, ValueError) as exc:
            _log.debug("local store write failed: %s", exc)
            self.store.close()  # the next batch reconnects (the directory may be back)
            return ExportOutcome.FAILURE
        self._write_counters()
        return ExportOutcome.SUCCESS

    def _write_counters(self, busy_timeout_s: float | None = None) -> None:
        try:
            self.store.write_counters(os.getpid(), self.metrics.counters(), busy_timeout_s=busy_timeout_s,
                                      instance=counters_instance(self.metrics))
        except (sqlite3.Error, OSError) as exc:
            _log.debug("local store counters write failed: %s", exc)

    def after_fork(self) -> None:
        # The child gets its own connection, prune clock, counter identity and maintenance worker.
        self.store = self._open()
        self.maintainer = StoreMaintainer(self.store, self.metrics).start()

    def shutdown(self, timeout: float) -> None:
        self._write_counters(busy_timeout_s=timeout)
        self.store.close()
        self.maintainer.stop(timeout)
