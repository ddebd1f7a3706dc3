"""X-Ray encoding: spans → segment documents (JSON) against OTLP protobuf encoding of the same spans.

Both run on the exporter thread, so both cost GIL time the application also wants. The
spans are the demo shop's: per request a server span (the ASGI middleware's attributes),
a business span with annotations, and asyncpg, redis, httpx and botocore client spans
with the attributes those instrumentations (plus the export-side enrichment) write; one
request in four fails at the payment gateway. Made by the SDK's own tracer, with the
X-Ray id generator and a resource like the agent's. Ours: ``XRayTranslator.encode_spans``
(view, translate, nest, ``json`` encode, size check). Peer: the OTLP exporter's
``encode_spans(spans).SerializeToString()``. Interleaved rounds; each round's figure is the
best of several passes, per span.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from pulsetrace.xray.segments import XRayTranslator
from benchmarks.harness import Comparison, interleaved

RESOURCE = {"service.name": "shop-api", "service.version": "1.4.2", "deployment.environment": "uat",
            "deployment.environment.name": "uat", "telemetry.distro.name": "pulsetrace",
            "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.language": "python",
            "telemetry.sdk.version": "1.45.0", "cloud.provider": "aws", "cloud.platform": "aws_ecs",
            "cloud.region": "ap-south-1", "cloud.account.id": "123456789012", "host.name": "ip-10-0-0-12"}


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _server(path: str, status: int) -> dict[str, Any]:
    return {"http.request.method": "POST", "url.path": path, "url.scheme": "http", "server.address": "127.0.0.1",
            "server.port": 8000, "http.route": path, "user_agent.original": "python-httpx/0.27",
            "client.address": "10.0.3.7", "http.response.status_code": status, "http.method": "POST",
            "http.target": path, "http.status_code": status, "http.url": f"http://127.0.0.1:8000{path}"}


def shop_spans(requests: int) -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource(RESOURCE), id_generator=AwsXRayIdGenerator(), shutdown_on_exit=False)
    collect = _Collect()
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("bench.xray")
    for i in range(requests):
        fail = i % 4 == 3
        with tracer.start_as_current_span("POST /payments", kind=SpanKind.SERVER,
                                          attributes=_server("/payments", 502 if fail else 200)) as root:
            with tracer.start_as_current_span("payment.create", attributes={
                    "payment.method": "upi", "payment.amount": 499.0, "business.operation": "payment.create",
                    "aws.xray.annotations": ("payment.method", "business.operation")}):
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
                        "db.system": "postgresql", "db.name": "shop", "db.user": "app", "net.peer.name": "127.0.0.1",
                        "net.peer.port": 5432, "db.statement": "SELECT id, total FROM orders WHERE id = $1",
                        "peer.service": "shop@127.0.0.1", "server.address": "127.0.0.1", "server.port": 5432}):
                    pass
                with tracer.start_as_current_span("INCR", kind=SpanKind.CLIENT, attributes={
                        "db.system": "redis", "db.statement": "INCR ?", "net.peer.name": "127.0.0.1",
                        "net.peer.port": 6379, "peer.service": "redis@127.0.0.1:6379",
                        "server.address": "127.0.0.1", "server.port": 6379}):
                    pass
                with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                        "http.request.method": "POST", "url.full": "https://pay.example.test/v1/charge",
                        "server.address": "pay.example.test", "server.port": 443,
                        "http.response.status_code": 500 if fail else 200}) as call:
                    if fail:
                        call.set_status(Status(StatusCode.ERROR))
                with tracer.start_as_current_span("DynamoDB.PutItem", kind=SpanKind.CLIENT, attributes={
                        "rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "PutItem",
                        "cloud.region": "ap-south-1", "aws.dynamodb.table_names": ("orders",),
                        "aws.request_id": "7Q1V2KIEXAMPLE", "retry_attempts": 0, "http.status_code": 200}):
                    pass
            if fail:
                root.set_status(Status(StatusCode.ERROR))
    return collect.spans


def _per_span(fn: Any, spans: list[ReadableSpan], batch: int, repeat: int) -> float:
    """Seconds per span: the best of ``repeat`` passes over ``spans`` (other processes share
    the two cores; the best pass is the one they disturbed least, for ours and peer alike)."""
    batches = [spans[i:i + batch] for i in range(0, len(spans), batch)]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - start)
    return best / len(spans)


def run(quick: bool) -> list[Comparison]:
    rounds, repeat = (5, 3) if quick else (15, 10)
    spans = shop_spans(64)  # 384 spans
    batch = 256  # the pipeline's default batch size
    translator = XRayTranslator()

    def ours() -> float:
        return _per_span(translator.encode_spans, spans, batch, repeat)

    def peer() -> float:
        return _per_span(lambda b: encode_spans(b).SerializeToString(), spans, batch, repeat)

    ours(), peer()  # warm caches (resource parts, name cleaning, protobuf descriptors)
    o, p = interleaved(rounds, ours, peer)
    xray_bytes = sum(len(d.encode()) for d in translator.encode_spans(spans)) / len(spans)
    otlp_bytes = len(encode_spans(spans).SerializeToString()) / len(spans)
    return [
        Comparison("X-Ray encoding, per span", "spans → X-Ray JSON", "OTLP protobuf encode", "s", o, p,
                   goal=("<=", 0.3), note="demo shop spans (6 per request, 1 in 4 failing), batches of 256"),
        Comparison("X-Ray document size, per span", "X-Ray JSON", "OTLP protobuf", "B",
                   [xray_bytes] * len(o), [otlp_bytes] * len(o), goal=None,
                   note="bytes on the wire before compression"),
    ]
