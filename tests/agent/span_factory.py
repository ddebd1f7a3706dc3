"""Real OpenTelemetry ``ReadableSpan`` objects for exporter, store and pipeline tests.

Spans are made by the SDK's own tracer (not hand-built), so what the tests feed the
exporters is exactly what the agent's pipeline would hand them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode


class Collect(SpanProcessor):
    """Keeps every ended span."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def provider(service: str = "shop-api") -> tuple[TracerProvider, Collect]:
    prov = TracerProvider(resource=Resource({"service.name": service}), id_generator=AwsXRayIdGenerator(),
                          shutdown_on_exit=False)
    collect = Collect()
    prov.add_span_processor(collect)
    return prov, collect


def make_trace(service: str = "shop-api", *, children: int = 2, error: bool = False,
               root_attrs: dict[str, Any] | None = None, root_name: str = "POST /orders") -> list[ReadableSpan]:
    """One trace: a server root span with ``children`` client children (ended children first)."""
    prov, collect = provider(service)
    tracer = prov.get_tracer("tests")
    attrs = {"http.request.method": "POST", "url.path": "/orders", "http.response.status_code": 200}
    attrs.update(root_attrs or {})
    with tracer.start_as_current_span(root_name, kind=SpanKind.SERVER, attributes=attrs) as root:
        for i in range(children):
            with tracer.start_as_current_span(f"child-{i}", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "postgresql", "i": i}):
                pass
        if error:
            root.set_status(Status(StatusCode.ERROR, "boom"))
    return list(collect.spans)


def make_spans(n: int, service: str = "shop-api") -> list[ReadableSpan]:
    """``n`` independent root spans (one trace each)."""
    prov, collect = provider(service)
    tracer = prov.get_tracer("tests")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}", attributes={"n": i, "payment.method": "card"}):
            pass
    return list(collect.spans)


def span_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    return {f"{s.context.span_id:016x}" for s in spans if s.context is not None}


def make_spans_at(n: int, start_epoch: float, service: str = "shop-api", payload: int = 0) -> list[ReadableSpan]:
    """``n`` root spans that started at ``start_epoch`` (seconds), with an optional ``payload``-byte attribute."""
    prov, collect = provider(service)
    tracer = prov.get_tracer("tests")
    start_ns = int(start_epoch * 1e9)
    blob = "x" * payload
    for i in range(n):
        span = tracer.start_span(f"op-{i}", start_time=start_ns + i * 1000, attributes={"n": i, "blob": blob})
        span.end(end_time=start_ns + i * 1000 + 5_000_000)
    return list(collect.spans)
