"""The span pipeline: bounded and non-blocking on the application's thread, isolated per exporter, bounded in time.

The exporters here are small recording/blocking stand-ins for the pipeline's only
collaborator (the pipeline is what is under test); the "hung collector" case uses
the real OTLP exporter against a real TCP listener that never answers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from pulsetrace.config.schema import Config, OtlpConfig, StoreConfig, TracingConfig
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.local import LocalStoreExporter
from pulsetrace.exporters.otlp import OtlpExporter
from pulsetrace.tracing.pipeline import SpanPipeline
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore
from tests.agent.span_factory import provider


class Recording:
    """Keeps what it is given."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.spans: list[ReadableSpan] = []
        self.lock = threading.Lock()
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        with self.lock:
            self.spans.extend(spans)
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        self.shut = True

    def after_fork(self) -> None:
        pass

    def names(self) -> list[str]:
        with self.lock:
            return [s.name for s in self.spans]


class Blocking:
    """Never returns from export until released: a destination that hangs."""

    def __init__(self, name: str = "stuck", block_shutdown: bool = False) -> None:
        self.name = name
        self.release = threading.Event()
        self.entered = threading.Event()
        self.block_shutdown = block_shutdown
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        self.calls += 1
        self.entered.set()
        self.release.wait(60)
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        if self.block_shutdown:
            self.release.wait(60)

    def after_fork(self) -> None:
        pass


class Raising:
    name = "raising"

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        raise RuntimeError("exporter bug")

    def shutdown(self, timeout: float) -> None:
        raise RuntimeError("shutdown bug")

    def after_fork(self) -> None:
        pass


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    b = Blocking()
    yield b
    b.release.set()


def wire(pipeline: SpanPipeline, sampler: Sampler | None = None) -> TracerProvider:
    prov, _ = provider()
    if sampler is not None:
        prov.sampler = sampler  # type: ignore[misc]
    prov.add_span_processor(pipeline)
    return prov


def emit(prov: TracerProvider, n: int, prefix: str = "op") -> None:
    tracer = prov.get_tracer("t")
    for i in range(n):
        with tracer.start_as_current_span(f"{prefix}-{i}", kind=SpanKind.SERVER):
            pass


def wait_until(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# -- the application's side -------------------------------------------------------------------


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    metrics = SelfMetrics()
    rec = Recording()
    # batch_size above queue_size and a long interval: nothing drains until we flush.
    pipeline = SpanPipeline([rec], metrics, queue_size=16, batch_size=1000, interval=60)
    prov = wire(pipeline)
    started = time.perf_counter()
    emit(prov, 100)
    assert time.perf_counter() - started < 2.0
    assert metrics.counter("spans_dropped", "queue_full") == 84
    assert metrics.gauges()["export_queue_depth"] == 16
    assert pipeline.force_flush(5000)
    assert rec.names() == [f"op-{i}" for i in range(16)]
    assert metrics.counter("spans_exported", "rec") == 16
    pipeline.shutdown(1.0)


def test_on_end_stays_fast_while_an_exporter_hangs(blocking: Blocking) -> None:
    metrics = SelfMetrics()
    pipeline = SpanPipeline([blocking], metrics, queue_size=100_000, batch_size=50, interval=0.01)
    prov = wire(pipeline)
    emit(prov, 50)
    assert blocking.entered.wait(5)
    started = time.perf_counter()
    emit(prov, 2000)
    per_span = (time.perf_counter() - started) / 2000
    assert per_span < 0.002, f"{per_span * 1e6:.0f} µs per span with a hung exporter"
    pipeline.shutdown(0.2)


def test_a_hung_exporter_does_not_delay_the_others(blocking: Blocking) -> None:
    metrics = SelfMetrics()
    rec = Recording()
    pipeline = SpanPipeline([blocking, rec], metrics, batch_size=10, interval=0.01, max_backlog_batches=4)
    prov = wire(pipeline)
    for rounds in range(1, 21):  # traffic over time, with the first exporter hung throughout
        emit(prov, 10)
        assert wait_until(lambda: len(rec.names()) == 10 * rounds, 5), (rounds, len(rec.names()))
    assert blocking.calls == 1
    # The hung one keeps a bounded backlog: the oldest batches go, counted.
    assert wait_until(lambda: metrics.counter("spans_dropped", "backlog:stuck") > 0, 5)
    assert metrics.counter("spans_dropped", "backlog:stuck") <= 200
    pipeline.shutdown(0.2)


def test_hung_otlp_collector_does_not_block_on_end_nor_the_local_store(tmp_path: Path) -> None:
    """A real TCP peer that accepts and never answers, through the real OTLP exporter."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes the handshakes; nobody ever reads
    port = listener.getsockname()[1]
    try:
        cfg = Config(store=StoreConfig(path=str(tmp_path)),
                     tracing=TracingConfig(otlp=OtlpConfig(endpoint=f"http://127.0.0.1:{port}", timeout=30.0)))
        metrics = SelfMetrics()
        ctx = ExporterContext(cfg, metrics)
        pipeline = SpanPipeline([OtlpExporter(ctx), LocalStoreExporter(ctx)], metrics, batch_size=20, interval=0.01)
        prov = wire(pipeline)
        started = time.perf_counter()
        emit(prov, 300)
        assert time.perf_counter() - started < 1.5
        store = LocalStore(tmp_path, create=False)
        assert wait_until(lambda: store.exists() and store.span_count() == 300, 10)
        assert metrics.counter("spans_exported", "otlp") == 0
        started = time.monotonic()
        pipeline.shutdown(0.5)
        assert time.monotonic() - started < 0.5 + 1.0  # bounded, not fast: two busy cores add noise
    finally:
        listener.close()


def test_on_end_never_raises_and_counts_internal_errors() -> None:
    metrics = SelfMetrics()

    def bad_hook(span: ReadableSpan) -> Sequence[ReadableSpan] | None:
        raise RuntimeError("hook bug")

    pipeline = SpanPipeline([Recording()], metrics, unsampled_hook=bad_hook)
    prov = wire(pipeline, RecordOnly())
    emit(prov, 3)
    assert metrics.counter("spans_dropped", "internal_error") == 3
    pipeline.shutdown(0.5)


def test_a_failing_span_hook_does_not_cost_the_span() -> None:
    metrics = SelfMetrics()
    rec = Recording()

    def bad(span: ReadableSpan) -> None:
        raise ValueError("metrics hook bug")

    seen: list[str] = []
    pipeline = SpanPipeline([rec], metrics, span_hooks=[bad, lambda s: seen.append(s.name)], interval=0.01)
    prov = wire(pipeline)
    emit(prov, 3)
    assert pipeline.force_flush(5000)
    assert rec.names() == ["op-0", "op-1", "op-2"]
    assert seen == ["op-0", "op-1", "op-2"]
    assert metrics.counter("span_hook_errors") == 3
    pipeline.shutdown(0.5)


# -- processing on the export thread -------------------------------------------------------------


class RecordOnly(Sampler):
    """Records but does not sample: what keep-errors sees for unsampled traces."""

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
                      attributes: Attributes = None, links: Sequence[Link] | None = None,
                      trace_state: object = None) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY, attributes)

    def get_description(self) -> str:
        return "RecordOnly"


def test_unsampled_spans_go_to_the_hook_and_only_what_it_returns_is_exported() -> None:
    metrics = SelfMetrics()
    rec = Recording()
    kept: list[str] = []

    def keep_errors(span: ReadableSpan) -> Sequence[ReadableSpan] | None:
        kept.append(span.name)
        return [span] if span.status.status_code is StatusCode.ERROR else None

    pipeline = SpanPipeline([rec], metrics, unsampled_hook=keep_errors, interval=0.01)
    prov = wire(pipeline, RecordOnly())
    tracer = prov.get_tracer("t")
    with tracer.start_as_current_span("fine"):
        pass
    with tracer.start_as_current_span("failed") as span:
        span.set_status(Status(StatusCode.ERROR))
    assert pipeline.force_flush(5000)
    assert kept == ["fine", "failed"]
    assert rec.names() == ["failed"]
    pipeline.shutdown(0.5)


def test_scrubber_output_is_exported_and_a_failing_scrub_drops_the_span() -> None:
    metrics = SelfMetrics()
    rec = Recording()

    def scrub(span: ReadableSpan) -> ReadableSpan:
        if span.name == "op-1":
            raise ValueError("cannot scrub")
        return span

    pipeline = SpanPipeline([rec], metrics, scrubber=scrub, interval=0.01)
    prov = wire(pipeline)
    emit(prov, 3)
    assert pipeline.force_flush(5000)
    assert rec.names() == ["op-0", "op-2"]
    assert metrics.counter("spans_dropped", "scrub_failed") == 1
    pipeline.shutdown(0.5)


def test_a_raising_exporter_is_counted_as_failed_and_the_pipeline_carries_on() -> None:
    metrics = SelfMetrics()
    rec = Recording()
    pipeline = SpanPipeline([Raising(), rec], metrics, batch_size=5, interval=0.01)  # type: ignore[list-item]
    prov = wire(pipeline)
    emit(prov, 12)
    assert pipeline.force_flush(5000)
    assert metrics.counter("spans_dropped", "export_failed:raising") == 12
    assert len(rec.names()) == 12
    pipeline.shutdown(0.5)  # Raising.shutdown raises: swallowed


# -- flush and shutdown ------------------------------------------------------------------------


def test_force_flush_exports_everything_queued() -> None:
    metrics = SelfMetrics()
    rec = Recording()
    pipeline = SpanPipeline([rec], metrics, batch_size=1000, interval=60)
    prov = wire(pipeline)
    emit(prov, 250)
    assert rec.names() == []
    assert pipeline.force_flush(5000) is True
    assert len(rec.names()) == 250
    pipeline.shutdown(0.5)


def test_force_flush_gives_up_at_its_timeout_with_a_hung_exporter(blocking: Blocking) -> None:
    pipeline = SpanPipeline([blocking], SelfMetrics(), interval=0.01)
    prov = wire(pipeline)
    emit(prov, 5)
    started = time.monotonic()
    assert pipeline.force_flush(300) is False
    assert time.monotonic() - started < 0.3 + 1.0  # bounded, not fast: two busy cores add noise
    pipeline.shutdown(0.1)


@pytest.mark.parametrize("timeout", [0.0, 0.3, 1.0])
def test_shutdown_returns_within_its_timeout_with_a_dead_exporter(timeout: float) -> None:
    dead = Blocking(block_shutdown=True)  # hangs in export and in shutdown
    metrics = SelfMetrics()
    pipeline = SpanPipeline([dead, Recording()], metrics, batch_size=10, interval=0.01)
    prov = wire(pipeline)
    emit(prov, 100)
    assert dead.entered.wait(5)
    started = time.monotonic()
    pipeline.shutdown(timeout)
    elapsed = time.monotonic() - started
    dead.release.set()
    assert elapsed < timeout + 1.0, elapsed  # bounded, not fast (timeout 0.0 still starts helper threads)
    assert metrics.counter("spans_dropped", "shutdown_timeout") > 0


def test_shutdown_flushes_then_stops_and_later_spans_are_counted() -> None:
    metrics = SelfMetrics()
    rec = Recording()
    pipeline = SpanPipeline([rec], metrics, batch_size=1000, interval=60)
    prov = wire(pipeline)
    emit(prov, 30)
    pipeline.shutdown(2.0)
    assert len(rec.names()) == 30 and rec.shut
    emit(prov, 2)
    assert metrics.counter("spans_dropped", "shutdown") == 2
    assert pipeline.force_flush(100) is True  # nothing left, and no wait on dead threads
    pipeline.shutdown(1.0)  # twice is fine


def test_threads_are_named_and_daemonic() -> None:
    pipeline = SpanPipeline([Recording("x")], SelfMetrics())
    names = {t.name: t.daemon for t in threading.enumerate()}
    assert names.get("pulsetrace-pipeline") is True
    assert names.get("pulsetrace-export-x") is True
    pipeline.shutdown(0.5)


# -- fork ------------------------------------------------------------------------------------------


def test_pipeline_exports_in_a_forked_child(tmp_path: Path) -> None:
    metrics = SelfMetrics()
    cfg = Config(store=StoreConfig(path=str(tmp_path)))
    pipeline = SpanPipeline([LocalStoreExporter(ExporterContext(cfg, metrics))], metrics, interval=0.05)
    prov = wire(pipeline)
    emit(prov, 5, prefix="parent")
    assert pipeline.force_flush(5000)
    pid = os.fork()
    if pid == 0:  # the child: the pipeline's threads did not survive fork(); they must be back
        code = 1
        try:
            emit(prov, 7, prefix="child")
            code = 0 if pipeline.force_flush(5000) else 3
            pipeline.shutdown(2.0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    emit(prov, 3, prefix="after")
    assert pipeline.force_flush(5000)
    pipeline.shutdown(1.0)
    rows = LocalStore(tmp_path, create=False).connect().execute("SELECT name FROM spans").fetchall()
    names = sorted(r[0] for r in rows)
    assert sum(n.startswith("child-") for n in names) == 7
    assert sum(n.startswith("parent-") for n in names) == 5
    assert sum(n.startswith("after-") for n in names) == 3


class SlowScrub:
    """A scrubber that takes a moment per span: widens the time between a span leaving the queue and
    its batch reaching the exporters, where a flush must not think it is done."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        time.sleep(self.delay)
        return span


class SlowRecording(Recording):
    def __init__(self, delay: float) -> None:
        super().__init__("slow")
        self.delay = delay

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        time.sleep(self.delay)
        return super().export(spans)


class LingeringDrain(SpanPipeline):
    """A drain thread that lingers after each pass (preempted, or the GIL taken by the application), so
    a flush can begin while it is between one pass and the next: the moment a stale "idle" misleads."""

    def _drain(self) -> None:
        super()._drain()
        time.sleep(0.002)


def test_force_flush_true_means_every_span_ended_before_it_was_exported() -> None:
    rec = SlowRecording(0.001)
    pipeline = LingeringDrain([rec], SelfMetrics(), batch_size=4, interval=0.0005, scrubber=SlowScrub(0.002))
    prov = wire(pipeline)
    early = []
    want = 0
    for round_ in range(300):
        emit(prov, 1, prefix=f"r{round_}")
        want += 1
        assert pipeline.force_flush(10_000) is True
        got = len(rec.names())
        if got != want:
            early.append((round_, want - got))
    pipeline.shutdown(1.0)
    assert early == [], f"force_flush returned True with spans not yet exported (round, missing): {early[:10]}"


# -- the agent's counters in the local store, whatever the exporters --------------------------------------


def test_the_counter_sink_is_called_periodically_and_at_shutdown_and_its_failures_are_counted() -> None:
    metrics = SelfMetrics()
    calls: list[float] = []
    fail = threading.Event()

    def sink() -> None:
        calls.append(time.monotonic())
        if fail.is_set():
            raise RuntimeError("store gone")

    pipeline = SpanPipeline([Recording()], metrics, interval=0.01, counter_sink=sink, counter_interval=0.1)
    prov = wire(pipeline)
    emit(prov, 5)
    assert wait_until(lambda: len(calls) >= 3, 5)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= 0.09, gaps  # at most once per counter_interval
    fail.set()
    assert wait_until(lambda: metrics.counter("counter_sink_errors") >= 1, 5)
    emit(prov, 5)
    assert pipeline.force_flush(5000)  # a failing sink costs nothing else
    fail.clear()
    before = len(calls)
    pipeline.shutdown(1.0)
    assert len(calls) == before + 1  # the last report, after the shutdown's own counts


def test_a_hung_counter_sink_cannot_hold_shutdown_past_its_timeout() -> None:
    release = threading.Event()

    def hung() -> None:  # a store locked by another process, a disk that stalls
        release.wait(30)

    pipeline = SpanPipeline([Recording()], SelfMetrics(), interval=0.01, counter_interval=3600, counter_sink=hung)
    try:
        wire(pipeline)
        started = time.monotonic()
        pipeline.shutdown(0.5)
        assert time.monotonic() - started < 0.5 + 1.0
    finally:
        release.set()


def test_drops_reach_the_store_with_only_a_failing_remote_exporter(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from pulsetrace.cli.main import main
    from pulsetrace.store import CounterWriter

    metrics = SelfMetrics()
    store_dir = tmp_path / "store"
    pipeline = SpanPipeline([Raising()], metrics, interval=0.01, counter_sink=CounterWriter(store_dir, metrics),
                            counter_interval=0.05)
    prov = wire(pipeline)
    emit(prov, 12)
    pipeline.force_flush(2000)
    store = LocalStore(store_dir, create=False)
    assert wait_until(lambda: store.exists() and store.counters().get(("spans_dropped", "export_failed:raising")), 5)
    pipeline.shutdown(1.0)
    assert store.counters()[("spans_dropped", "export_failed:raising")] == 12
    assert store.processes() == 1
    capsys.readouterr()
    old = os.environ.get("PULSETRACE_STORE")
    os.environ["PULSETRACE_STORE"] = str(store_dir)
    try:
        assert main(["status", "--json"]) == 0
    finally:
        if old is None:
            del os.environ["PULSETRACE_STORE"]
        else:
            os.environ["PULSETRACE_STORE"] = old
    import json

    assert json.loads(capsys.readouterr().out)["dropped"] == {"export_failed:raising": 12}
