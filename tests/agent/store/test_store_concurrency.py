"""Several processes write the store at once while a reader reads: every row arrives, nothing is locked out.

Writers are separate interpreters (multiprocessing ``spawn``), each with its own
``local`` exporter, as worker processes of one service would be.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from pathlib import Path
from typing import Any

from pulsetrace.store import LocalStore

WRITERS = 4
SPANS_PER_WRITER = 2000
BATCH = 50


def _writer(store_dir: str, index: int, go: Any, results: Any) -> None:
    try:
        from pulsetrace.config.schema import Config, StoreConfig
        from pulsetrace.exporters.base import ExporterContext, ExportOutcome
        from pulsetrace.exporters.local import LocalStoreExporter
        from pulsetrace.selfmetrics import SelfMetrics
        from tests.agent.span_factory import make_spans

        spans = make_spans(SPANS_PER_WRITER, service=f"writer-{index}")
        metrics = SelfMetrics()
        exporter = LocalStoreExporter(ExporterContext(Config(store=StoreConfig(path=store_dir)), metrics))
        go.wait(60)
        failures = 0
        for i in range(0, len(spans), BATCH):
            if exporter.export(spans[i:i + BATCH]) is not ExportOutcome.SUCCESS:
                failures += 1
            metrics.inc("spans_exported", min(BATCH, len(spans) - i), reason="local")
        exporter.shutdown(5.0)
        results.put((index, failures, ""))
    except BaseException:
        results.put((index, -1, traceback.format_exc()))


def test_four_processes_write_2000_spans_each_while_a_reader_reads(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, go, results), name=f"writer-{i}")
             for i in range(WRITERS)]
    for p in procs:
        p.start()
    reader = LocalStore(tmp_path)
    reader.span_count()  # the store exists (schema, WAL) before the race starts
    time.sleep(0.5)
    go.set()

    seen: list[int] = []
    reads = 0
    deadline = time.monotonic() + 120
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        seen.append(reader.span_count())  # a 'database is locked' here would fail the test
        if reader.recent_trace_ids(limit=5):
            reads += 1
        time.sleep(0.01)
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=10) for _ in procs)
    for index, failures, error in outcomes:
        assert error == "", error
        assert failures == 0, f"writer {index} had {failures} failed batches"
    assert all(p.exitcode == 0 for p in procs)

    assert reader.span_count() == WRITERS * SPANS_PER_WRITER
    rows = reader.connect().execute("SELECT service, count(*) FROM spans GROUP BY service").fetchall()
    assert sorted(rows) == [(f"writer-{i}", SPANS_PER_WRITER) for i in range(WRITERS)]
    assert seen == sorted(seen), "the reader saw the count go backwards"
    assert len(seen) > 3 and reads > 0, "the reader did not read while the writers wrote"
    assert reader.counters()[("spans_exported", "local")] == WRITERS * SPANS_PER_WRITER
    assert reader.processes() == WRITERS
