"""Business spans and sampling against the plain OpenTelemetry SDK, in the same process.

1. A sampled business span with 5 attributes, all the way: span → our span pipeline
   (tiered sampler, queue, PII scrub + annotation marking on the export thread) →
   OTLP protobuf encoding; against a plain SDK span with the same 5 attributes
   through ``BatchSpanProcessor`` into an exporter that OTLP-encodes. Wall time of
   ``n`` spans plus the flush that encodes them, per span. Goal ≤ 1.0×.
2. A business span in a trace that is not sampled (keep-errors off): against the
   SDK's non-recording span (``start_as_current_span`` under ``ParentBased(ALWAYS_OFF)``).
   Goal ≤ 0.5×. Reported too: the same with keep-errors on, where the trace is
   recorded (``RECORD_ONLY``) so that a failure can still be kept: no goal, the
   honest price of keep-errors.
3. A root sampling decision with 20 rules (the match is the last rule) against
   ``TraceIdRatioBased``: reported.
4. The export-side PII scrub + annotation step per span, against OTLP encoding of
   the same span: reported (both run on the export thread).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.util._once import Once

from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import RuleConfig, TierConfig
from pulsetrace.exporters.base import ExportOutcome
from pulsetrace.tracing.pipeline import SpanPipeline
from pulsetrace.tracing.sampling import TieredSampler
from pulsetrace.selfmetrics import SelfMetrics
from benchmarks.harness import Comparison, interleaved
from pulsetrace.instrumentation.business import business_span
from pulsetrace.instrumentation.pii import build_scrubber

RESOURCE = Resource({"service.name": "shop-api", "service.version": "1.4.2", "deployment.environment": "uat",
                     "cloud.provider": "aws", "cloud.region": "ap-south-1"})
ATTRS: dict[str, Any] = {"payment.amount": 499.0, "payment.method": "upi", "order.id": "o-1042", "school.id": 42,
         "payment.currency": "INR"}
TIERS = ("critical", "business", "general", "health")


def _install_global(provider: TracerProvider) -> None:
    """Make ``provider`` the global one (the business API uses the global, as under the agent).

    The SDK allows setting the global once per process; the benchmark runner runs every
    benchmark in one process, so the set-once guard is reset first (as the tests do).
    """
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)


class _OtlpEncode:
    """Our exporter protocol: encodes each batch to OTLP protobuf bytes (the network is left out)."""

    name = "otlp-encode"

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        encode_spans(spans).SerializeToString()
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        return None


class _SdkOtlpEncode(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


def _tiers(rate: float) -> dict[str, TierConfig]:
    return {t: TierConfig(rate, 0.0) for t in TIERS}


def _cfg() -> Any:
    return config_from_mapping({"tracing": {"pii": {"hash_keys": ["user.id"], "hash_secret": "bench"}}}, env={})


def _per_op(fn: Callable[[], None], n: int, after: Callable[[], object] | None = None) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if after is not None:
        after()
    return (time.perf_counter() - start) / n


#: What a business span carries after the export step: the peer of the "same attributes" comparison.
SAME_ATTRS: dict[str, Any] = {
    "business.operation": "payment.create", "business.tier": "critical", "business.outcome": "success", **ATTRS,
    "aws.xray.annotations": ("payment.method", "school.id", "business.operation", "business.outcome"),
}


def sampled(rounds: int, n: int) -> list[Comparison]:
    metrics = SelfMetrics()
    pipeline = SpanPipeline([_OtlpEncode()], metrics, queue_size=4 * n, batch_size=512, interval=0.2,
                            scrubber=build_scrubber(_cfg(), metrics))
    ours_provider = TracerProvider(sampler=TieredSampler(_tiers(1.0), "general"), resource=RESOURCE,
                                   id_generator=AwsXRayIdGenerator(), shutdown_on_exit=False)
    ours_provider.add_span_processor(pipeline)
    bsp = BatchSpanProcessor(_SdkOtlpEncode(), max_queue_size=4 * n, max_export_batch_size=512,
                             schedule_delay_millis=200)
    peer_provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=RESOURCE,
                                   id_generator=AwsXRayIdGenerator(), shutdown_on_exit=False)
    peer_provider.add_span_processor(bsp)
    peer_tracer = peer_provider.get_tracer("bench")
    _install_global(ours_provider)

    def one_ours() -> None:
        with business_span("payment.create", tier="critical", amount=499.0, method="upi", order_id="o-1042",
                           school_id=42, currency="INR"):
            pass

    def one_peer() -> None:
        with peer_tracer.start_as_current_span("payment.create", attributes=ATTRS):
            pass

    def one_peer_same() -> None:
        with peer_tracer.start_as_current_span("payment.create", attributes=SAME_ATTRS):
            pass

    def in_request(tracer: trace.Tracer, fn: Callable[[], None], flush: Callable[[], object]) -> Callable[[], float]:
        """``n`` spans inside one sampled request span (how business spans are used), then the flush."""
        def measure() -> float:
            root = tracer.start_span("POST /payments", attributes={"url.path": "/payments"})
            token = otel_context.attach(trace.set_span_in_context(root))
            try:
                return _per_op(fn, n, flush)
            finally:
                otel_context.detach(token)
                root.end()
        return measure

    ours = in_request(ours_provider.get_tracer("bench"), one_ours, lambda: pipeline.force_flush(30_000))
    peer = in_request(peer_tracer, one_peer, lambda: bsp.force_flush(30_000))
    peer_same = in_request(peer_tracer, one_peer_same, lambda: bsp.force_flush(30_000))
    ours(), peer(), peer_same()
    o: list[float] = []
    p: list[float] = []
    q: list[float] = []
    for i in range(rounds):  # interleaved, the order rotating so drift hits all three
        for which in ((0, 1, 2), (1, 2, 0), (2, 0, 1))[i % 3]:
            (o, p, q)[which].append((ours, peer, peer_same)[which]())
    pipeline.shutdown(2.0)
    bsp.shutdown()  # type: ignore[no-untyped-call]
    return [
        Comparison("sampled business span + export encoding, per span",
                   "business_span, 5 attrs → pipeline → scrub+annotate → OTLP encode",
                   "SDK span, 5 attrs → BatchSpanProcessor → OTLP encode", "s", o, p, goal=("<=", 1.0),
                   note=f"{n} spans per round inside a sampled request span, wall time including the flush that "
                        "encodes them; ours carries 4 more attributes (business.operation/tier/outcome and the "
                        "aws.xray.annotations list), which the OTLP encoder pays for"),
        Comparison("sampled business span, same attributes as the peer",
                   "business_span, 5 attrs → pipeline → scrub+annotate → OTLP encode",
                   "SDK span with the same 9 attributes + list → BatchSpanProcessor → OTLP encode", "s", o, q,
                   goal=None, note="isolates our overhead (business API, tiered sampler, pipeline, scrub, annotate) "
                                   "from the cost of encoding the attributes the issue asks for"),
    ]


def unsampled(rounds: int, n: int, *, keep_errors: bool) -> Comparison:
    ours_provider = TracerProvider(sampler=TieredSampler(_tiers(0.0), "general", record_unsampled=keep_errors),
                                   resource=RESOURCE, shutdown_on_exit=False)
    if keep_errors:
        metrics = SelfMetrics()
        from pulsetrace.instrumentation.keep_errors import KeepErrorsBuffer

        ours_provider.add_span_processor(SpanPipeline([], metrics, unsampled_hook=KeepErrorsBuffer(metrics)))
    peer_provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF), resource=RESOURCE, shutdown_on_exit=False)
    peer_tracer = peer_provider.get_tracer("bench")
    _install_global(ours_provider)
    ours_root = ours_provider.get_tracer("bench").start_span("GET /orders")
    peer_root = peer_tracer.start_span("GET /orders")
    assert ours_root.is_recording() == keep_errors and not peer_root.is_recording()

    def one_ours() -> None:
        with business_span("payment.create", tier="critical", amount=499.0, method="upi", order_id="o-1042",
                           school_id=42, currency="INR"):
            pass

    def one_peer() -> None:
        with peer_tracer.start_as_current_span("payment.create", attributes=ATTRS):
            pass

    def within(root: trace.Span, fn: Callable[[], None]) -> Callable[[], float]:
        def measure() -> float:
            token = otel_context.attach(trace.set_span_in_context(root))
            try:
                return _per_op(fn, n)
            finally:
                otel_context.detach(token)
        return measure

    ours, peer = within(ours_root, one_ours), within(peer_root, one_peer)
    ours(), peer()
    o, p = interleaved(rounds, ours, peer)
    if keep_errors:
        return Comparison("business span in an unsampled trace, keep-errors on", "business_span, light (recorded trace)",
                          "SDK non-recording span", "s", o, p, goal=("<=", 1.5),
                          note="the trace is recorded so that a failure can be kept: the business span is a light "
                          "span (plain fields, one ReadableSpan to the keep-errors buffer at its end), no SDK span")
    return Comparison("business span in an unsampled trace", "business_span, 5 attrs (no span made)",
                      "SDK non-recording span, 5 attrs", "s", o, p, goal=("<=", 0.5),
                      note="keep-errors off: the operation is timed and counted, no span object is created")


def decision(rounds: int, n: int) -> Comparison:
    rules = [RuleConfig(tier="critical", path=f"/api/v1/service{i}/*", method="POST") for i in range(19)]
    rules.append(RuleConfig(tier="business", path="/orders*"))
    ours_sampler = TieredSampler({t: TierConfig(0.2, 1.0) for t in TIERS}, "general", rules)
    peer_sampler = TraceIdRatioBased(0.2)
    attrs: dict[str, Any] = {"http.request.method": "GET", "url.path": "/orders/1042", "server.address": "shop.internal",
             "url.scheme": "http", "server.port": 8000}
    ids = [random.getrandbits(128) for _ in range(1024)]

    def ours() -> float:
        start = time.perf_counter()
        for i in range(n):
            ours_sampler.should_sample(None, ids[i & 1023], "GET", None, attrs)
        return (time.perf_counter() - start) / n

    def peer() -> float:
        start = time.perf_counter()
        for i in range(n):
            peer_sampler.should_sample(None, ids[i & 1023], "GET", None, attrs)
        return (time.perf_counter() - start) / n

    ours(), peer()
    o, p = interleaved(rounds, ours, peer)
    return Comparison("root sampling decision, 20 rules", "TieredSampler (match on rule 20)",
                      "TraceIdRatioBased", "s", o, p, goal=None,
                      note="rules compiled into one regex; includes the reservoir lock and the attribute merge")


def scrub(rounds: int, n: int) -> Comparison:
    provider = TracerProvider(resource=RESOURCE, id_generator=AwsXRayIdGenerator(), shutdown_on_exit=False)
    tracer = provider.get_tracer("bench")
    spans: list[ReadableSpan] = []
    for i in range(64):
        attributes: dict[str, Any] = {
            "http.request.method": "POST", "url.path": "/payments", "url.query": f"page={i}&token=t{i}",
            "user_agent.original": "python-httpx/0.27", "client.address": "10.0.3.7", "user.id": f"u-{i}",
            "http.response.status_code": 200, **ATTRS}
        with tracer.start_as_current_span("POST /payments", attributes=attributes) as s:
            s.add_event("note", {"detail": "customer bob@example.com paid"})
        spans.append(s)  # type: ignore[arg-type]
    transform = build_scrubber(_cfg(), SelfMetrics())
    assert transform is not None
    reps = max(1, n // len(spans))

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            for s in spans:
                transform(s)
        return (time.perf_counter() - start) / (reps * len(spans))

    def peer() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            encode_spans(spans).SerializeToString()
        return (time.perf_counter() - start) / (reps * len(spans))

    ours(), peer()
    o, p = interleaved(rounds, ours, peer)
    return Comparison("PII scrub + annotate on the export thread, per span", "scrubber + annotator",
                      "OTLP protobuf encode", "s", o, p, goal=None,
                      note="server spans with 13 attributes and an event, secrets in the query and event")


def run(quick: bool) -> list[Comparison]:
    rounds, n = (5, 2_000) if quick else (15, 10_000)
    try:
        return [
            *sampled(rounds, n),
            unsampled(rounds, n, keep_errors=False),
            unsampled(rounds, n, keep_errors=True),
            decision(rounds, n * 5),
            scrub(rounds, n),
        ]
    finally:
        _install_global(TracerProvider(shutdown_on_exit=False))
