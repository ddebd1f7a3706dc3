"""The ``local`` exporter: spans into the embedded SQLite store (the default).

Runs on its pipeline channel thread. A write that fails (read-only or missing
directory, disk full, a corrupt file, a lock held too long by another process)
returns ``FAILURE``, which the pipeline counts as ``spans_dropped{export_failed:local}``;
nothing is raised. Each export also records this process's agent counters in the
store so that ``pulsetrace status`` can sum them over every worker (as the same rows as
the pipeline's :class:`~pulsetrace.store.CounterWriter`, which writes them whatever the exporters).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore, counters_instance

_log = logging.getLogger("pulsetrace.exporters.local")


class LocalStoreExporter:
    name = "local"

    def __init__(self, ctx: ExporterContext) -> None:
        store_cfg = ctx.config.store
        self.metrics: SelfMetrics = ctx.metrics
        self._path = store_cfg.path
        self._retention_s = store_cfg.retention
        self._max_mb = store_cfg.max_mb
        self.store = self._open()

    def _open(self) -> LocalStore:
        return LocalStore(self._path, retention_s=self._retention_s, max_mb=self._max_mb)

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            self.store.write_spans(spans)
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
        # The child gets its own connection, prune clock and counter identity.
        self.store = self._open()

    def shutdown(self, timeout: float) -> None:
        self._write_counters(busy_timeout_s=timeout)
        self.store.close()
