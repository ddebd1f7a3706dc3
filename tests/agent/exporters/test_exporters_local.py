"""The ``local`` exporter: spans land in the store; a store that cannot be written costs counted drops, never an exception."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from pulsetrace.config.schema import Config, StoreConfig
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.local import LocalStoreExporter
from pulsetrace.tracing.pipeline import SpanPipeline
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore
from tests.agent.span_factory import make_spans, provider


def exporter_for(path: Path, metrics: SelfMetrics | None = None) -> LocalStoreExporter:
    return LocalStoreExporter(ExporterContext(Config(store=StoreConfig(path=str(path))), metrics or SelfMetrics()))


def test_export_writes_spans_and_this_process_counters(tmp_path: Path) -> None:
    metrics = SelfMetrics()
    metrics.inc("spans_dropped", 3, reason="queue_full")
    exporter = exporter_for(tmp_path / "st", metrics)
    assert exporter.export(make_spans(4)) is ExportOutcome.SUCCESS
    exporter.shutdown(1.0)
    store = LocalStore(tmp_path / "st", create=False)
    assert store.span_count() == 4
    assert store.counters()[("spans_dropped", "queue_full")] == 3


def test_store_path_under_a_regular_file_fails_without_raising(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    exporter = exporter_for(tmp_path / "file" / "store")
    assert exporter.export(make_spans(2)) is ExportOutcome.FAILURE
    exporter.shutdown(0.5)  # must not raise either


def test_corrupt_database_file_is_moved_aside_and_the_export_succeeds(tmp_path: Path) -> None:
    garbage = b"this is not an SQLite database" * 100
    (tmp_path / "spans.db").write_bytes(garbage)
    exporter = exporter_for(tmp_path)
    assert exporter.export(make_spans(2)) is ExportOutcome.SUCCESS
    exporter.shutdown(2.0)
    (aside,) = tmp_path.glob("spans.db.corrupt-*")
    assert aside.read_bytes() == garbage  # kept for a post-mortem, never deleted
    assert LocalStore(tmp_path, create=False).span_count() == 2


def test_exporter_recovers_once_the_directory_is_writable_again(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("in the way")
    exporter = exporter_for(blocker)
    assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
    blocker.unlink()
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway; the path-under-a-file "
                                              "and corrupt-file cases cover failed writes as root")
def test_read_only_directory_fails_without_raising(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert exporter_for(ro).export(make_spans(1)) is ExportOutcome.FAILURE
    finally:
        ro.chmod(0o755)


def test_a_lock_held_by_another_process_costs_a_bounded_failure(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pulsetrace.store.db.BUSY_TIMEOUT_S", 0.3)
    exporter = exporter_for(tmp_path)
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS
    exporter.store.close()
    holder = sqlite3.connect(tmp_path / "spans.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
        assert time.monotonic() - started < 3.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS


def test_failed_writes_are_counted_as_dropped_by_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    metrics = SelfMetrics()
    pipeline = SpanPipeline([exporter_for(tmp_path / "file" / "store", metrics)], metrics, batch_size=10,
                            interval=0.05)
    prov, _ = provider()
    prov.add_span_processor(pipeline)
    tracer = prov.get_tracer("t")
    for i in range(25):
        with tracer.start_as_current_span(f"op-{i}"):
            pass  # on_end runs here, on the "application" thread: must not raise
    assert pipeline.force_flush(5000)
    assert metrics.counter("spans_dropped", "export_failed:local") == 25
    assert metrics.counter("spans_exported") == 0
    pipeline.shutdown(1.0)


def test_the_counter_writer_and_the_local_exporter_write_one_set_of_counters(tmp_path: Path) -> None:
    from pulsetrace.store import CounterWriter

    metrics = SelfMetrics()
    exporter = exporter_for(tmp_path / "st", metrics)
    pipeline = SpanPipeline([exporter], metrics, interval=0.01,
                            counter_sink=CounterWriter(tmp_path / "st", metrics), counter_interval=0.01)
    prov, _ = provider()
    prov.add_span_processor(pipeline)
    tracer = prov.get_tracer("t")
    for i in range(20):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    assert pipeline.force_flush(5000)
    time.sleep(0.1)  # several counter writes by both
    pipeline.shutdown(1.0)
    store = LocalStore(tmp_path / "st", create=False)
    assert store.counters()[("spans_exported", "local")] == 20  # not 40: the same rows, not two processes
    assert store.processes() == 1


def test_the_counter_writer_is_harmless_when_the_store_cannot_be_written(tmp_path: Path) -> None:
    from pulsetrace.store import CounterWriter

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    metrics = SelfMetrics()
    metrics.inc("spans_dropped", 4, reason="export_failed:otlp")
    writer = CounterWriter(blocker / "store", metrics)
    writer()
    writer()
    assert metrics.counter("counter_writes_failed") == 2
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "spans.db").write_bytes(b"garbage" * 1000)
    CounterWriter(corrupt, metrics)()
    # A corrupt file is moved aside: the counters land in a new store, where status can read them.
    assert metrics.counter("counter_writes_failed") == 2
    assert LocalStore(corrupt, create=False).counters()[("spans_dropped", "export_failed:otlp")] == 4
