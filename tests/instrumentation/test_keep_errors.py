"""Keep-errors: the local part of unsampled traces that fail or are slow is exported; the buffer is bounded.

Spans come from the real SDK with the real tiered sampler (every tier at rate 0,
reservoir 0, recording unsampled traces) through the real span pipeline; the
exporter is a recording stand-in for the pipeline's destination (what is under
test is what reaches it).
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import TierConfig
from pulsetrace.exporters.base import ExportOutcome
from pulsetrace.tracing.pipeline import SpanPipeline
from pulsetrace.tracing.sampling import TieredSampler
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.instrumentation.keep_errors import KEPT_BY_ATTR, KeepErrorsBuffer, build_keep_errors, span_failed

NEVER = {t: TierConfig(0.0, 0.0) for t in ("critical", "business", "general", "health")}


class Recording:
    name = "rec"

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        with self.lock:
            self.spans.extend(spans)
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        return None

    def after_fork(self) -> None:
        pass


class Rig:
    def __init__(self, buffer: KeepErrorsBuffer, metrics: SelfMetrics) -> None:
        self.metrics = metrics
        self.buffer = buffer
        self.exporter = Recording()
        self.pipeline = SpanPipeline([self.exporter], metrics, interval=0.02, unsampled_hook=buffer)
        self.provider = TracerProvider(sampler=TieredSampler(NEVER, "general", record_unsampled=True),
                                       shutdown_on_exit=False)
        self.provider.add_span_processor(self.pipeline)
        self.tracer = self.provider.get_tracer("test")

    def exported(self) -> list[ReadableSpan]:
        assert self.pipeline.force_flush(5000)
        return list(self.exporter.spans)

    def close(self) -> None:
        self.pipeline.shutdown(2.0)


def rig(**kwargs: object) -> Rig:
    metrics = SelfMetrics()
    return Rig(KeepErrorsBuffer(metrics, **kwargs), metrics)  # type: ignore[arg-type]


def one_request(r: Rig, *, error: str = "", status: int = 200, children: int = 2, sleep: float = 0.0) -> int:
    """A server root with ``children`` client children; returns the trace id."""
    with r.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={"url.path": "/x"},
                                        record_exception=False, set_status_on_exception=False) as root:
        for i in range(children):
            with r.tracer.start_as_current_span(f"child-{i}", kind=SpanKind.CLIENT) as child:
                if error == "status" and i == children - 1:
                    child.set_status(Status(StatusCode.ERROR, "db down"))
                if error == "exception" and i == 0:
                    child.record_exception(ValueError("boom"))
        if sleep:
            time.sleep(sleep)
        root.set_attribute("http.response.status_code", status)
        return root.get_span_context().trace_id


@pytest.mark.parametrize("error", ["status", "exception", "http500"])
def test_a_failed_unsampled_trace_is_exported_whole_and_marked_kept_by_error(error: str) -> None:
    r = rig()
    try:
        tid = one_request(r, error="" if error == "http500" else error, status=500 if error == "http500" else 200)
        spans = r.exported()
        assert sorted(s.name for s in spans) == ["GET /x", "child-0", "child-1"]
        assert all(s.context.trace_id == tid for s in spans)
        assert all((s.attributes or {})[KEPT_BY_ATTR] == "error" for s in spans)
        assert all(not s.context.trace_flags.sampled for s in spans)  # the flag is not rewritten
        assert r.metrics.counter("traces_kept", "error") == 1
    finally:
        r.close()


def test_a_good_fast_unsampled_trace_is_not_exported_and_not_counted_as_dropped() -> None:
    r = rig(slow_ms=1000.0)
    try:
        one_request(r, status=404)  # 4xx is the client's error, not ours
        assert r.exported() == []
        assert r.metrics.dropped() == {}
        assert r.buffer.pending_traces() == 0
    finally:
        r.close()


def test_a_slow_unsampled_trace_is_kept_by_slow() -> None:
    r = rig(slow_ms=50.0)
    try:
        one_request(r, sleep=0.08)
        spans = r.exported()
        assert len(spans) == 3
        assert {(s.attributes or {})[KEPT_BY_ATTR] for s in spans} == {"slow"}
    finally:
        r.close()


def test_errors_are_not_kept_when_only_slow_requests_are() -> None:
    r = rig(keep_errors=False, slow_ms=5000.0)
    try:
        one_request(r, error="status")
        assert r.exported() == []
    finally:
        r.close()


def test_build_keep_errors_follows_the_config() -> None:
    def cfg(keep: bool, slow: float) -> object:
        return config_from_mapping({"tracing": {"sampling": {"keep_errors": keep, "slow_ms": slow}}}, env={})

    assert build_keep_errors(cfg(False, 0), SelfMetrics()) is None  # type: ignore[arg-type]
    hook = build_keep_errors(cfg(True, 0), SelfMetrics())  # type: ignore[arg-type]
    assert isinstance(hook, KeepErrorsBuffer) and hook.keep_errors and hook.slow_ns == 0
    hook = build_keep_errors(cfg(False, 250), SelfMetrics())  # type: ignore[arg-type]
    assert isinstance(hook, KeepErrorsBuffer) and not hook.keep_errors and hook.slow_ns == 250_000_000


def test_spans_over_the_per_trace_cap_are_counted_but_still_make_the_trace_failed() -> None:
    r = rig(max_spans_per_trace=5)
    try:
        with r.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
            for i in range(20):
                with r.tracer.start_as_current_span(f"c{i}") as c:
                    if i == 19:
                        c.set_status(Status(StatusCode.ERROR))
        spans = r.exported()
        assert len(spans) == 6  # the first 5 children and the root
        assert {s.name for s in spans} == {"GET /x", "c0", "c1", "c2", "c3", "c4"}
        assert r.metrics.counter("spans_dropped", "keep_errors_overflow") == 15
    finally:
        r.close()


def test_total_spans_held_are_capped_by_evicting_the_oldest_traces() -> None:
    r = rig(max_total_spans=10)
    try:
        roots = [r.tracer.start_span(f"open-{i}") for i in range(5)]
        for root in roots:
            for j in range(3):
                with r.tracer.start_as_current_span(f"c{j}", context=trace.set_span_in_context(root)):
                    pass
        assert r.buffer.pending_spans() <= 10
        assert r.metrics.counter("spans_dropped", "keep_errors_overflow") == 15 - r.buffer.pending_spans()
        roots[-1].set_status(Status(StatusCode.ERROR))
        roots[-1].end()  # the newest trace was held whole
        assert sorted(s.name for s in r.exported()) == ["c0", "c1", "c2", "open-4"]
    finally:
        r.close()


def test_two_local_roots_of_one_trace_are_decided_separately() -> None:
    """A service calling itself: the inner server span (remote parent) fails, the outer request does not."""
    r = rig()
    try:
        with r.tracer.start_as_current_span("GET /outer", kind=SpanKind.SERVER) as outer:
            with r.tracer.start_as_current_span("sibling"):
                pass
            with r.tracer.start_as_current_span("GET /inner (client)", kind=SpanKind.CLIENT) as call:
                ctx = call.get_span_context()
                remote = SpanContext(ctx.trace_id, ctx.span_id, is_remote=True, trace_flags=TraceFlags(0))
                with r.tracer.start_as_current_span("GET /inner", kind=SpanKind.SERVER,
                                                    context=trace.set_span_in_context(NonRecordingSpan(remote))) \
                        as inner:
                    with r.tracer.start_as_current_span("inner-db"):
                        pass
                    inner.set_status(Status(StatusCode.ERROR))
            assert outer.is_recording()
        spans = r.exported()
        assert sorted(s.name for s in spans) == ["GET /inner", "inner-db"]
        assert r.buffer.pending_traces() == 0
    finally:
        r.close()


def test_orphan_traces_whose_root_never_ends_age_out_and_are_counted() -> None:
    metrics = SelfMetrics()
    now = [0.0]
    buffer = KeepErrorsBuffer(metrics, max_age_s=10.0, clock=lambda: now[0])
    r = Rig(buffer, metrics)
    try:
        root = r.tracer.start_span("never ends")
        with r.tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
            pass
        assert buffer.pending_traces() == 1
        now[0] = 30.0
        one_request(r, children=1)
        assert buffer.pending_traces() == 0
        assert metrics.counter("spans_dropped", "keep_errors_expired") == 1
    finally:
        r.close()


def test_span_failed_reads_status_exception_events_and_http_5xx() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    spans = []
    for setup in ("ok", "status", "event", "new500", "old503", "s404"):
        span = tracer.start_span(setup)
        if setup == "status":
            span.set_status(Status(StatusCode.ERROR))
        elif setup == "event":
            span.record_exception(RuntimeError("x"))
        elif setup == "new500":
            span.set_attribute("http.response.status_code", 500)
        elif setup == "old503":
            span.set_attribute("http.status_code", 503)
        elif setup == "s404":
            span.set_attribute("http.response.status_code", 404)
        span.end()
        spans.append(span)
    assert [span_failed(s) for s in spans] == [False, True, True, True, True, False]  # type: ignore[arg-type]


@pytest.mark.parametrize("children", ["sdk", "light"])
def test_the_buffer_stays_bounded_with_10000_unsampled_traces_in_flight(children: str) -> None:
    """10,000 traces whose roots are still open: at most max_pending_traces are held; memory stops growing.

    The children are SDK spans, or the light spans the lean client hooks make in a recorded,
    unsampled trace (they reach the buffer the same way).
    """
    from pulsetrace.instrumentation.clients.base import ClientTracer
    from pulsetrace.instrumentation.clients.light import LightSpan

    metrics = SelfMetrics()
    buffer = KeepErrorsBuffer(metrics, max_pending_traces=2048, max_spans_per_trace=256)
    r = Rig(buffer, metrics)
    clients = ClientTracer(r.tracer, r.provider, "test.clients")
    try:
        def feed(n: int) -> None:
            for _ in range(n):
                root = r.tracer.start_span("GET /open", kind=SpanKind.SERVER)  # never ended: in flight
                parent = trace.set_span_in_context(root)
                for j in range(2):
                    attributes = {"db.system": "postgresql", "j": j}
                    if children == "light":
                        span = clients.start(f"db-{j}", parent, attributes)
                        assert isinstance(span, LightSpan)
                        span.end()
                        continue
                    with r.tracer.start_as_current_span(f"db-{j}", context=parent, attributes=attributes):
                        pass

        feed(100)  # warm caches before measuring
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            feed(2048 - 100)
            gc.collect()
            full = tracemalloc.get_traced_memory()[0] - base
            feed(10_000 - 2048)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert buffer.pending_traces() == 2048
        assert buffer.pending_spans() == 2 * 2048
        assert metrics.counter("spans_dropped", "keep_errors_overflow") == 2 * (10_000 - 2048)
        # Memory held after 10,000 traces is what 2,048 held (eviction, not growth) ...
        assert after <= full * 1.15 + 256 * 1024, (full, after)
        print(f"keep-errors buffer: {full / 1e6:.1f} MB at 2,048 traces, {after / 1e6:.1f} MB after 10,000")
        # ... and small in absolute terms (a few KB per held span).
        assert after < 32 * 1024 * 1024, after
    finally:
        r.close()


def test_a_forked_child_can_keep_errors_while_a_parent_thread_held_the_buffer_lock() -> None:
    from tests.instrumentation.test_sampling_limits import hold_lock_in_a_thread, run_in_forked_child

    metrics = SelfMetrics()
    buffer = KeepErrorsBuffer(metrics)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")

    def failed_trace(name: str) -> Sequence[ReadableSpan] | None:
        root = tracer.start_span(f"{name}-root")
        child = tracer.start_span(f"{name}-child", context=trace.set_span_in_context(root))
        child.set_status(Status(StatusCode.ERROR))
        child.end()
        assert buffer(child) is None  # type: ignore[arg-type]
        root.end()
        return buffer(root)  # type: ignore[arg-type]

    # A trace still held in the parent when it forks: the child must not export or count it.
    held_root = tracer.start_span("held-root")
    held_child = tracer.start_span("held-child", context=trace.set_span_in_context(held_root))
    held_child.end()
    buffer(held_child)  # type: ignore[arg-type]
    release = hold_lock_in_a_thread(buffer._lock)

    def child() -> None:
        assert buffer.pending_traces() == 0 and buffer.pending_spans() == 0
        kept = failed_trace("child")
        assert kept is not None and sorted(s.name for s in kept) == ["child-child", "child-root"]
        assert metrics.counter("spans_dropped") == 0

    try:
        assert run_in_forked_child(child) == 0
    finally:
        release()
    assert buffer.pending_traces() == 1  # the parent still has its own
