"""The ``local`` exporter: spans into the embedded SQLite store (the default)."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from agent.exporters.base import ExporterContext, ExportOutcome
from agent.store import LocalStore

_log = logging.getLogger("pulsetrace.exporters.local")


class LocalStoreExporter:
    name = "local"

    def __init__(self, ctx: ExporterContext) -> None:
        store_cfg = ctx.config.store
        self.metrics = ctx.metrics
        self.store = LocalStore(store_cfg.path, retention_s=store_cfg.retention, max_mb=store_cfg.max_mb)

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            self.store.write_spans(spans)
            self.store.write_counters(os.getpid(), self.metrics.counters())
        except (sqlite3.Error, OSError) as exc:
            # Disk full, read-only directory, locked too long: drop (counted by the pipeline).
            _log.debug("local store write failed: %s", exc)
            self.store.close()
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS

    def after_fork(self) -> None:
        self.store = LocalStore(self.store.dir, retention_s=self.store.retention_s,
                                max_mb=self.store.max_bytes / (1024 * 1024))

    def shutdown(self, timeout: float) -> None:
        try:
            self.store.write_counters(os.getpid(), self.metrics.counters())
        except (sqlite3.Error, OSError):
            pass
        self.store.close()
