"""Every X-Ray document pulsetrace produces from a corpus of real traces validates against AWS's schema.

The spans are made by the OpenTelemetry SDK's own tracer with the attribute sets the
instrumentations write (the lead's ASGI middleware, upstream asyncpg/redis/httpx/
botocore plus the export-side enrichment), so the documents checked are the ones the
exporters would send. The builders here are shared by the other X-Ray tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, Tracer, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from pulsetrace.xray.limits import MAX_DOCUMENT_BYTES
from pulsetrace.xray.segments import XRayTranslator

#: AWS's published segment document schema, vendored unchanged (origin and license: tests/specs/README.md).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "specs" / "xray-segmentdocument-schema-v1.0.0.json"

BASE_RESOURCE = {
    "service.name": "shop-api", "service.version": "1.4.2", "deployment.environment": "uat",
    "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.language": "python", "telemetry.distro.name": "pulsetrace",
}
ECS_RESOURCE = {**BASE_RESOURCE, "cloud.provider": "aws", "cloud.platform": "aws_ecs", "cloud.account.id": "123456789012",
                "cloud.region": "ap-south-1", "host.name": "ip-10-0-0-12", "container.id": "c0ffee",
                "aws.ecs.task.arn": "arn:aws:ecs:ap-south-1:123456789012:task/shop/abc",
                "aws.ecs.cluster.arn": "arn:aws:ecs:ap-south-1:123456789012:cluster/shop", "aws.ecs.launchtype": "fargate"}


def schema_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json.loads(SCHEMA_PATH.read_text()))


class Collect(SpanProcessor):
    """Keeps every ended span, in the order they end (children before parents)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def make_tracer(resource: dict[str, Any] | None = None) -> tuple[Tracer, Collect]:
    provider = TracerProvider(resource=Resource(resource or ECS_RESOURCE), id_generator=AwsXRayIdGenerator(),
                              shutdown_on_exit=False)
    collect = Collect()
    provider.add_span_processor(collect)
    return provider.get_tracer("tests.xray"), collect


def server_attrs(method: str, path: str, status: int, route: str | None = None) -> dict[str, Any]:
    """What the ASGI middleware writes (current keys plus the old-semconv duplicates)."""
    attrs: dict[str, Any] = {
        "http.request.method": method, "url.path": path, "url.scheme": "http", "server.address": "127.0.0.1",
        "server.port": 8000, "user_agent.original": "python-httpx/0.27", "client.address": "127.0.0.1",
        "http.response.status_code": status, "http.method": method, "http.target": path,
        "http.status_code": status, "http.url": f"http://127.0.0.1:8000{path}",
    }
    if route:
        attrs["http.route"] = route
    return attrs


def postgres_attrs(statement: str = "SELECT id, total FROM orders WHERE id = $1") -> dict[str, Any]:
    """Upstream asyncpg (old keys) plus the export-side enrichment (peer.service, server.*)."""
    return {"db.system": "postgresql", "db.name": "shop", "db.user": "app", "net.peer.name": "127.0.0.1",
            "net.peer.port": 5432, "net.transport": "ip_tcp", "db.statement": statement,
            "peer.service": "shop@127.0.0.1", "server.address": "127.0.0.1", "server.port": 5432,
            "db.namespace": "shop"}


def redis_attrs(command: str = "GET ?") -> dict[str, Any]:
    return {"db.system": "redis", "db.statement": command, "db.redis.database_index": 0,
            "net.peer.name": "127.0.0.1", "net.peer.port": 6379, "net.transport": "ip_tcp",
            "db.redis.args_length": 2, "peer.service": "redis@127.0.0.1:6379", "server.address": "127.0.0.1",
            "server.port": 6379}


def httpx_attrs(url: str, status: int, method: str = "POST") -> dict[str, Any]:
    return {"http.request.method": method, "url.full": url, "server.address": "127.0.0.1", "server.port": 9000,
            "network.protocol.version": "1.1", "http.response.status_code": status}


def dynamodb_attrs() -> dict[str, Any]:
    return {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "PutItem",
            "cloud.region": "us-east-1", "aws.dynamodb.table_names": ("orders",),
            "aws.request_id": "7Q1V2KIEXAMPLE", "retry_attempts": 0, "http.status_code": 200,
            "server.address": "dynamodb.us-east-1.amazonaws.com"}


def sqs_attrs() -> dict[str, Any]:
    return {"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "SendMessage", "cloud.region": "us-east-1",
            "aws.queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/orders",
            "messaging.system": "aws.sqs", "messaging.destination": "orders", "aws.request_id": "r-1",
            "http.status_code": 200}


def shop_request(tracer: Tracer, *, path: str = "/payments", status: int = 200, gateway_status: int = 200,
                 method: str = "card", with_aws: bool = True) -> None:
    """One demo-like request: server span → payment.create (business) → postgres, redis, gateway, DynamoDB."""
    with tracer.start_as_current_span(f"POST {path}", kind=SpanKind.SERVER,
                                      attributes=server_attrs("POST", path, status, route=path)) as root:
        with tracer.start_as_current_span("payment.create", attributes={
                "payment.method": method, "payment.amount": 499.0, "business.operation": "payment.create",
                "sampling.tier": "critical", "aws.xray.annotations": ("payment.method", "business.operation")}):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=postgres_attrs()):
                pass
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes=redis_attrs()):
                pass
            with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=httpx_attrs(
                    "http://127.0.0.1:9000/charge", gateway_status)) as call:
                if gateway_status >= 500:
                    call.set_status(Status(StatusCode.ERROR))
            if with_aws:
                with tracer.start_as_current_span("DynamoDB.PutItem", kind=SpanKind.CLIENT,
                                                  attributes=dynamodb_attrs()):
                    pass
        if status >= 500:
            root.set_status(Status(StatusCode.ERROR))


def _ping(depth: int) -> None:
    if depth == 0:
        raise KeyError("order-42")
    _pong(depth - 1)


def _pong(depth: int) -> None:
    _ping(depth - 1 if depth else 0)


def raise_deep(depth: int = 120) -> None:
    """An exception with a long stack trace (alternating frames, which Python does not collapse)
    and a chained cause."""
    try:
        _ping(depth)
    except KeyError as exc:
        raise RuntimeError("payment could not be recorded") from exc


def corpus() -> Iterator[tuple[str, list[ReadableSpan]]]:
    """Named batches of spans, as the pipeline would hand them to an exporter."""
    tracer, collect = make_tracer()
    shop_request(tracer)
    shop_request(tracer, status=502, gateway_status=500)
    yield "demo payments ok and gateway 500", collect.spans

    tracer, collect = make_tracer()
    for path, status in (("/orders", 200), ("/health", 200), ("/missing", 404), ("/orders", 429)):
        with tracer.start_as_current_span(f"GET {path}", kind=SpanKind.SERVER,
                                          attributes=server_attrs("GET", path, status)):
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes=redis_attrs()):
                pass
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.PRODUCER, attributes=sqs_attrs()):
        pass
    yield "demo routes, 404, 429, a producer", collect.spans

    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /payments", kind=SpanKind.SERVER,
                                      attributes=server_attrs("POST", "/payments", 500)) as root:
        try:
            raise_deep()
        except RuntimeError as exc:
            root.record_exception(exc, escaped=True)
            root.set_status(Status(StatusCode.ERROR, str(exc)))
    yield "exception with a long chained stack trace", collect.spans

    tracer, collect = make_tracer({**BASE_RESOURCE, "service.name": "café-服务 🚀 (naïve)"})
    with tracer.start_as_current_span("GET /ürün/商品", kind=SpanKind.SERVER,
                                      attributes={**server_attrs("GET", "/ürün/商品", 200), "school.name": "École 🚸",
                                                  "aws.xray.annotations": ("school.name",)}):
        with tracer.start_as_current_span("zahlung.prüfen ✓", attributes={"note": "日本語 \u2028 text"}):
            pass
    yield "unicode names", collect.spans

    tracer, collect = make_tracer()
    big = "x" * 10_000
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER,
                                      attributes={**server_attrs("POST", "/orders", 200), "order.blob": big,
                                                  "order.note": "é" * 10_000, "aws.xray.annotations": ("order.blob",),
                                                  "user_agent.original": "A" * 10_000}):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                          attributes=postgres_attrs("SELECT " + "a, " * 5000 + "b FROM t")):
            pass
        # Alone bigger than a document (8 × 20 KB of UTF-8): must be trimmed, not refused.
        with tracer.start_as_current_span("order.render", attributes={f"part.{i}": "é" * 10_000 for i in range(8)}):
            pass
    yield "10,000-character attributes", collect.spans

    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER,
                                      attributes=server_attrs("GET", "/report", 200)):
        for i in range(500):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                              attributes={**postgres_attrs(), "row.index": i}):
                pass
    yield "500 subsegments", collect.spans

    tracer, collect = make_tracer()
    with tracer.start_as_current_span("nightly.sync", kind=SpanKind.CLIENT, attributes=httpx_attrs(
            "https://user:pw@pay.example.test/v1/settle?token=abc", 200, "GET")):
        pass
    yield "a local-root client call (a script)", collect.spans

    tracer, collect = make_tracer()
    shop_request(tracer)
    yield "a trace split across batches", collect.spans[:3]


CORPUS = list(corpus())


def documents(spans: Sequence[ReadableSpan], translator: XRayTranslator | None = None) -> list[dict[str, Any]]:
    texts = (translator or XRayTranslator()).encode_spans(spans)
    return [json.loads(t) for t in texts]


@pytest.mark.parametrize(("name", "spans"), CORPUS, ids=[n for n, _ in CORPUS])
def test_every_document_validates_against_the_published_xray_schema(name: str, spans: list[ReadableSpan]) -> None:
    validator = schema_validator()
    texts = XRayTranslator().encode_spans(spans)
    assert texts
    for text in texts:
        doc = json.loads(text)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].path)}"


@pytest.mark.parametrize(("name", "spans"), CORPUS, ids=[n for n, _ in CORPUS])
def test_every_document_is_utf8_json_within_64kb_with_an_end_time(name: str, spans: list[ReadableSpan]) -> None:
    for text in XRayTranslator().encode_spans(spans):
        raw = text.encode("utf-8")
        assert len(raw) <= MAX_DOCUMENT_BYTES
        doc = json.loads(raw)
        assert isinstance(doc["end_time"], float) and "in_progress" not in doc
        assert doc["end_time"] >= doc["start_time"]


def _all_ids(doc: dict[str, Any]) -> Iterator[str]:
    yield doc["id"]
    for sub in doc.get("subsegments", ()):
        yield from _all_ids(sub)


@pytest.mark.parametrize(("name", "spans"), CORPUS, ids=[n for n, _ in CORPUS])
def test_every_span_appears_exactly_once_across_the_documents(name: str, spans: list[ReadableSpan]) -> None:
    ids = [i for d in documents(spans) for i in _all_ids(d)]
    span_ids = {f"{s.context.span_id:016x}" for s in spans if s.context is not None}
    assert span_ids <= set(ids)
    assert len([i for i in ids if i in span_ids]) == len(span_ids)
