"""``tracing.response_header``: the server middleware answers with the request's trace, ASGI and WSGI.

Driven in process through real Starlette and WSGI applications; the headers are compared
with the server span the exporter received. ``X-Amzn-Trace-Id`` is what a client or an ALB
log line quotes to the X-Ray console; ``traceresponse`` is W3C Trace Context Level 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.instrumentation import hooks
from pulsetrace.instrumentation._http import split_host
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
from pulsetrace.instrumentation.wsgi import PulseTraceWSGIMiddleware
from tests.instrumentation.test_asgi_middleware import APP, call, provider


@pytest.fixture
def header_on() -> Iterator[None]:
    hooks.install(None, add_response_header=True)
    yield
    hooks.clear()


def expected(span: ReadableSpan, sampled: bool = True) -> dict[str, str]:
    ctx = span.get_span_context()
    hex_trace = format(ctx.trace_id, "032x")
    flags = int(ctx.trace_flags)  # the sampled bit, and Level 2's random-trace-id bit the SDK sets
    assert flags & 1 == int(sampled)
    flag = f"{flags:02x}"
    return {"x-amzn-trace-id": f"Root=1-{hex_trace[:8]}-{hex_trace[8:]};Sampled={int(sampled)}",
            "traceresponse": f"00-{hex_trace}-{format(ctx.span_id, '016x')}-{flag}"}


def asgi_headers(sent: list[dict[str, Any]]) -> dict[str, str]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {k.decode(): v.decode() for k, v in start["headers"]}


def test_asgi_response_carries_the_server_spans_trace(header_on: None) -> None:
    p, c = provider()
    headers = asgi_headers(call(PulseTraceMiddleware(APP, p), "/items/1"))
    (span,) = c.spans
    for name, value in expected(span).items():
        assert headers[name] == value
    assert headers["content-type"].startswith("text/plain")  # the app's own headers kept


def test_asgi_continues_the_callers_trace_and_says_when_not_sampled(header_on: None) -> None:
    p, c = provider(sampled=False)
    parent = b"00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"
    headers = asgi_headers(call(PulseTraceMiddleware(APP, p), "/items/2", headers=[(b"traceparent", parent)]))
    assert not c.spans
    assert headers["x-amzn-trace-id"] == "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"
    assert headers["traceresponse"].startswith("00-5759e988bd862e3fe1be46a994272793-")
    assert int(headers["traceresponse"].rsplit("-", 1)[1], 16) & 1 == 0


def test_no_header_unless_configured() -> None:
    p, _ = provider()
    headers = asgi_headers(call(PulseTraceMiddleware(APP, p), "/items/3"))
    assert "x-amzn-trace-id" not in headers and "traceresponse" not in headers


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"ok"]


def wsgi_call(environ_extra: dict[str, str]) -> tuple[dict[str, str], list[ReadableSpan]]:
    p, c = provider()
    got: list[dict[str, str]] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders", "wsgi.url_scheme": "http", **environ_extra}
    body = PulseTraceWSGIMiddleware(wsgi_app, p)(environ, lambda status, headers, exc=None: got.append(dict(headers)))
    b"".join(body)
    body.close()
    return got[0], c.spans


def test_wsgi_response_carries_the_server_spans_trace(header_on: None) -> None:
    headers, (span,) = wsgi_call({"HTTP_HOST": "shop.test:8080"})
    for name, value in expected(span).items():
        assert headers[name] == value
    assert headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize(("environ", "address", "port"), [
    ({"HTTP_HOST": "shop.test:8080", "SERVER_PORT": "9000"}, "shop.test", 8080),
    ({"HTTP_HOST": "shop.test", "SERVER_PORT": "9000"}, "shop.test", 9000),
    ({"SERVER_NAME": "10.0.0.5", "SERVER_PORT": "8000"}, "10.0.0.5", 8000),
    ({"HTTP_HOST": "[::1]:8443"}, "::1", 8443),
])
def test_wsgi_spans_carry_server_port(environ: dict[str, str], address: str, port: int) -> None:
    _, (span,) = wsgi_call(environ)
    attrs = span.attributes or {}
    assert attrs["server.address"] == address and attrs["server.port"] == port


@pytest.mark.parametrize("host", ["shop:", "shop:abc", "shop:99999", "[::1", ""])
def test_a_malformed_host_gives_no_port(host: str) -> None:
    assert split_host(host)[1] == 0
