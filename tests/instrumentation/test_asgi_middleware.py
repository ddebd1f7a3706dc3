"""The ASGI middleware, driven in process with an in-memory exporter (the app is a real ASGI callable)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pulsetrace.instrumentation._http import path_template
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def provider(sampled: bool = True) -> tuple[TracerProvider, Collect]:
    p = TracerProvider(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    c = Collect()
    p.add_span_processor(SimpleSpanProcessor(c))
    return p, c


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse("item", status_code=int(request.query_params.get("status", "200")))


async def boom(request: Request) -> PlainTextResponse:
    raise ValueError("boom")


APP = Starlette(routes=[Route("/items/{item_id}", item), Route("/boom", boom)])


def call(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None,
         query: bytes = b"") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": [(b"host", b"shop.test:8000"), (b"user-agent", b"pytest"), *(headers or [])],
             "client": ("10.0.0.7", 5000), "server": ("127.0.0.1", 8000)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_server_span_is_named_by_route_and_carries_http_attributes() -> None:
    p, c = provider()
    call(PulseTraceMiddleware(APP, p), "/items/42", query=b"page=2")
    (span,) = c.spans
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    a = span.attributes or {}
    assert a["http.route"] == "/items/{item_id}"
    assert a["http.request.method"] == "GET" and a["url.path"] == "/items/42"
    assert a["http.response.status_code"] == 200 and a["http.status_code"] == 200
    assert a["server.address"] == "shop.test" and a["server.port"] == 8000
    assert a["client.address"] == "10.0.0.7" and a["user_agent.original"] == "pytest"
    assert a["url.query"] == "page=2"
    assert span.status.status_code is StatusCode.UNSET


def test_5xx_marks_error_and_4xx_does_not() -> None:
    p, c = provider()
    call(PulseTraceMiddleware(APP, p), "/items/1", query=b"status=503")
    call(PulseTraceMiddleware(APP, p), "/items/1", query=b"status=404")
    assert [s.status.status_code for s in c.spans] == [StatusCode.ERROR, StatusCode.UNSET]


def test_application_exception_is_recorded_and_reraised_unchanged() -> None:
    p, c = provider()

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("original")

    with pytest.raises(KeyError) as info:
        call(PulseTraceMiddleware(raw, p), "/x")
    assert info.value.args == ("original",)
    (span,) = c.spans
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes and span.attributes["http.response.status_code"] == 500
    assert [e.name for e in span.events] == ["exception"]


def test_incoming_x_ray_header_is_continued_and_malformed_one_starts_fresh(clean_agent: None) -> None:
    from pulsetrace.runtime import install_propagators

    install_propagators()
    p, c = provider()
    mw = PulseTraceMiddleware(APP, p)
    call(mw, "/items/1", [(b"x-amzn-trace-id", b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;"
                                                b"Sampled=1")])
    call(mw, "/items/1", [(b"x-amzn-trace-id", b"Root=garbage;Parent=zz")])
    call(mw, "/items/1", [(b"traceparent", b"00-" + b"a" * 9000)])
    first, second, third = c.spans
    assert f"{first.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert first.parent is not None and f"{first.parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert second.parent is None and third.parent is None


def test_unsampled_request_creates_no_exported_span_but_carries_the_decision() -> None:
    p, c = provider(sampled=False)
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        seen.append(ctx.is_valid and not ctx.trace_flags.sampled)
        await APP(scope, receive, send)

    sent = call(PulseTraceMiddleware(app, p), "/items/3")
    assert sent[0]["status"] == 200
    assert c.spans == [] and seen == [True]


def test_non_http_scopes_pass_through_untouched() -> None:
    p, c = provider()
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def noop() -> dict[str, Any]:
        return {}

    async def nosend(m: Any) -> None:
        return None

    asyncio.run(PulseTraceMiddleware(app, p)({"type": "lifespan"}, noop, nosend))
    assert seen == ["lifespan"] and c.spans == []


@pytest.mark.parametrize("path,expected", [
    ("/orders/8812/items", "/orders/{id}/items"),
    ("/orders", "/orders"),
    ("/users/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/users/{id}"),
    ("/", "/"),
])
def test_path_template_hides_ids(path: str, expected: str) -> None:
    assert path_template(path) == expected


def test_request_metrics_are_recorded_for_unsampled_requests(clean_agent: None, tmp_path: Any) -> None:
    from pulsetrace.instrumentation import hooks

    calls: list[tuple[str, str, float, bool, bool]] = []

    class Recorder:
        def record(self, operation: str, tier: str, latency_ms: float, error: bool, fault: bool, *,
                   routed: bool = True, status: int = 0) -> None:
            calls.append((operation, tier, latency_ms, error, fault))

    hooks.install(Recorder())  # the middleware needs no agent: only a recorder through the hook module
    try:
        p, _ = provider(sampled=False)
        call(PulseTraceMiddleware(APP, p), "/items/9", query=b"status=404")
        call(PulseTraceMiddleware(APP, p), "/items/9", query=b"status=502")
    finally:
        hooks.clear()
    assert [(o, e, f) for o, _, _, e, f in calls] == [("GET /items/{item_id}", True, False),
                                                        ("GET /items/{item_id}", False, True)]


def test_a_cancelled_request_is_not_a_server_fault(clean_agent: None, tmp_path: Any) -> None:
    from pulsetrace.instrumentation import hooks
    from pulsetrace.validation import config_from_mapping

    calls: list[tuple[bool, bool]] = []

    class Recorder:
        def record(self, operation: str, tier: str, latency_ms: float, error: bool, fault: bool, *,
                   routed: bool = True, status: int = 0) -> None:
            calls.append((error, fault))

    async def hangs(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError()

    hooks.install(Recorder())
    try:
        p, c = provider()
        with pytest.raises(asyncio.CancelledError):
            call(PulseTraceMiddleware(hangs, p), "/slow")
    finally:
        hooks.clear()
    (span,) = c.spans
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None and "http.response.status_code" not in span.attributes
    assert span.attributes["error.type"] == "cancelled"
    assert calls == [(False, False)]


def test_context_is_restored_even_when_ending_the_span_fails() -> None:
    from opentelemetry import context as otel_context

    p, _ = provider()

    class Exploding(PulseTraceMiddleware):
        def _start(self, scope: Any) -> tuple[Any, object]:
            span, token = super()._start(scope)

            class Bad:
                def __getattr__(self, name: str) -> Any:
                    return getattr(span, name)

                def end(self) -> None:
                    span.end()
                    raise RuntimeError("end failed")

            return Bad(), token  # type: ignore[return-value]

    after: list[object] = []
    inner = Exploding(APP, p)

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        before = otel_context.get_current()  # checked in the same task the middleware ran in
        await inner(scope, receive, send)
        after.append(otel_context.get_current() == before)

    sent = call(outer, "/items/1")
    assert sent[0]["status"] == 200
    assert after == [True]


def test_huge_attribute_values_are_bounded_before_they_reach_the_pipeline(clean_agent: None, tmp_path: Any) -> None:
    from pulsetrace.validation import config_from_mapping
    from pulsetrace.runtime import build_agent

    agent = build_agent(config_from_mapping({"store": {"path": str(tmp_path)}}, env={}))
    try:
        tracer = agent.provider.get_tracer("t")
        with tracer.start_as_current_span("big") as span:
            span.set_attribute("body", "x" * 1_000_000)
            span.add_event("e", {"payload": "y" * 1_000_000})
        assert len((span.attributes or {})["body"]) == 8192  # type: ignore[attr-defined]
        assert len(span.events[0].attributes["payload"]) == 16384  # type: ignore[attr-defined, index]
        with tracer.start_as_current_span("many") as many:
            for i in range(500):
                many.set_attribute(f"k{i}", i)
        assert len(many.attributes or {}) == 128  # type: ignore[attr-defined]
    finally:
        agent.pipeline.shutdown(1.0)
