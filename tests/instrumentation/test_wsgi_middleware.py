"""The WSGI middleware, driven in process (a real WSGI callable, an in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from pulsetrace.instrumentation.wsgi import PulseTraceWSGIMiddleware


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def serve(app: Any, path: str) -> tuple[str, bytes, list[ReadableSpan]]:
    provider = TracerProvider()
    collected = Collect()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    mw = PulseTraceWSGIMiddleware(app, provider)
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http", "HTTP_HOST": "shop.test",
               "REMOTE_ADDR": "10.1.1.1", "_provider": provider}
    body = mw(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close")()
    return statuses[0], data, collected.spans


def test_a_streamed_body_stays_in_the_request_trace_and_the_span_ends_on_close() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        tracer = environ["_provider"].get_tracer("app")

        def body() -> Iterator[bytes]:
            with tracer.start_as_current_span("stream.chunk"):
                yield b"a"
            yield b"b"

        return body()

    status, data, spans = serve(app, "/export/2024")
    assert status == "200 OK" and data == b"ab"
    by_name = {s.name: s for s in spans}
    server = by_name["GET /export/{id}"]
    chunk = by_name["stream.chunk"]
    assert server.kind is SpanKind.SERVER
    assert chunk.parent is not None and chunk.parent.span_id == server.context.span_id
    assert server.end_time is not None and chunk.end_time is not None and server.end_time >= chunk.end_time
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


def test_an_exception_is_recorded_and_reraised_and_5xx_is_an_error() -> None:
    def boom(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise LookupError("nope")

    with pytest.raises(LookupError):
        serve(boom, "/x")

    def fails(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [])
        return [b""]

    _, _, spans = serve(fails, "/y")
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[0].attributes is not None and spans[0].attributes["http.response.status_code"] == 503
