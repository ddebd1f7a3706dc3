"""The lean httpx and requests hooks give the spans contrib's instrumentors give, against a loopback server.

Documented differences (docs/performance.md): the span is named ``GET host:port`` (issue 15:
the current conventions' name plus the peer), and the keys nothing downstream reads are left
out (``http.host``, the ``network.peer.*``/``net.peer.port`` duplicates, ``http.flavor``,
``network.protocol.version``; requests' ``user_agent.original``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
import requests
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation

from pulsetrace.instrumentation.clients import httpx_hook, requests_hook
from opentelemetry.sdk.trace import ReadableSpan

from tests.instrumentation.lean_compare import (
    Capture, LoopbackHTTP, assert_same_spans, capture, contrib_dup_mode, loopback_http, run_under_root,
    unsampled_capture,
)

HTTP_CONTRIB_ONLY = frozenset({"http.host", "network.peer.address", "net.peer.port", "network.peer.port",
                               "http.flavor", "network.protocol.version", "user_agent.original"})


def lean_name(span: ReadableSpan) -> str:
    """``GET host:port``: contrib's name plus the peer (the test server is never on a default port)."""
    attrs = span.attributes or {}
    return f"{attrs['http.request.method']} {attrs['server.address']}:{attrs['server.port']}"


@pytest.fixture
def server() -> Iterator[LoopbackHTTP]:
    with loopback_http() as box:
        yield box


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    httpx_hook.uninstrument()
    requests_hook.uninstrument()


def _calls(url: str) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client() as client:
            client.get(url + "/a?x=1")
            client.post(url + "/fail", content=b"body")
        with pytest.raises(httpx.ConnectError):
            httpx.get("http://127.0.0.1:1/")

        async def in_async() -> None:
            async with httpx.AsyncClient() as client:
                await client.get(url + "/b")
                await client.put(url + "/fail/async", content=b"x")
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as client:
                    await client.get("http://127.0.0.1:1/async")

        asyncio.run(in_async())

    return run


def _run_contrib(monkeypatch: pytest.MonkeyPatch, url: str) -> Capture:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    cap = capture()
    with contrib_dup_mode(monkeypatch):
        instrumentor = HTTPXClientInstrumentor()
        instrumentor.instrument(tracer_provider=cap.provider)
        try:
            run_under_root(cap, _calls(url))
        finally:
            instrumentor.uninstrument()
    return cap


def test_lean_httpx_spans_equal_contribs_for_the_same_calls(server: LoopbackHTTP,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    contrib = _run_contrib(monkeypatch, server.url)
    lean = capture()
    httpx_hook.instrument(lean.provider)
    run_under_root(lean, _calls(server.url))

    assert_same_spans(contrib, lean, contrib_only=HTTP_CONTRIB_ONLY, lean_name=lean_name)
    statuses = [(s.attributes or {}).get("http.response.status_code") for s in lean.client_spans()]
    assert statuses == [200, 500, None, 200, 500, None]


def test_lean_httpx_injects_the_client_spans_context(server: LoopbackHTTP) -> None:
    lean = capture()
    httpx_hook.instrument(lean.provider)
    run_under_root(lean, lambda: httpx.get(server.url + "/a"))
    (span,) = lean.client_spans()
    version, trace_id, parent_id, flags = server.seen[-1]["traceparent"].split("-")
    assert (trace_id, parent_id) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_unsampled_request_makes_no_span_and_propagates_the_not_sampled_decision(server: LoopbackHTTP) -> None:
    cap = unsampled_capture()
    httpx_hook.instrument(cap.provider)
    tracer = cap.provider.get_tracer("test")
    with tracer.start_as_current_span("root") as root:
        httpx.get(server.url + "/a")

        async def in_async() -> None:
            async with httpx.AsyncClient() as client:
                await client.get(server.url + "/b")

        asyncio.run(in_async())
    assert cap.spans() == []
    ctx = root.get_span_context()
    for headers in server.seen[-2:]:
        _v, trace_id, parent_id, flags = headers["traceparent"].split("-")
        assert (trace_id, parent_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        assert not int(flags, 16) & 1  # the next service follows the not-sampled decision


@pytest.mark.parametrize("suppress", [suppress_instrumentation, suppress_http_instrumentation])
def test_suppressed_context_is_not_traced_nor_propagated(server: LoopbackHTTP, suppress: Callable[[], object]) -> None:
    lean = capture()
    httpx_hook.instrument(lean.provider)
    with suppress():  # type: ignore[attr-defined]
        run_under_root(lean, lambda: httpx.get(server.url + "/a"))
    assert lean.client_spans() == []
    assert "traceparent" not in server.seen[-1]


def test_uninstrument_restores_httpx_and_instrument_is_idempotent(server: LoopbackHTTP) -> None:
    originals = (httpx.HTTPTransport.__dict__["handle_request"],
                 httpx.AsyncHTTPTransport.__dict__["handle_async_request"])
    lean = capture()
    httpx_hook.instrument(lean.provider)
    httpx_hook.instrument(lean.provider)
    assert httpx.HTTPTransport.__dict__["handle_request"] is not originals[0]
    run_under_root(lean, lambda: httpx.get(server.url + "/a"))
    assert len(lean.client_spans()) == 1  # patched once, not twice
    httpx_hook.uninstrument()
    httpx_hook.uninstrument()
    assert (httpx.HTTPTransport.__dict__["handle_request"],
            httpx.AsyncHTTPTransport.__dict__["handle_async_request"]) == originals
    assert not httpx_hook.is_instrumented()
    before = len(lean.spans())
    run_under_root(lean, lambda: httpx.get(server.url + "/a"))
    assert len(lean.spans()) == before + 1  # the root only
    assert otel_context.get_current() == otel_context.Context()


# --- requests --------------------------------------------------------------------------------------------

def _requests_calls(url: str) -> Callable[[], None]:
    def run() -> None:
        with requests.Session() as session:
            session.get(url + "/a?x=1", timeout=10)
            session.post(url + "/fail", data=b"body", timeout=10)
            session.delete(url + "/b", timeout=10)
        with pytest.raises(requests.ConnectionError):
            requests.get("http://127.0.0.1:1/", timeout=10)

    return run


def test_lean_requests_spans_equal_contribs_for_the_same_calls(server: LoopbackHTTP,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    contrib = capture()
    with contrib_dup_mode(monkeypatch):
        instrumentor = RequestsInstrumentor()
        instrumentor.instrument(tracer_provider=contrib.provider)
        try:
            run_under_root(contrib, _requests_calls(server.url))
        finally:
            instrumentor.uninstrument()
    lean = capture()
    requests_hook.instrument(lean.provider)
    run_under_root(lean, _requests_calls(server.url))
    assert_same_spans(contrib, lean, contrib_only=HTTP_CONTRIB_ONLY, lean_name=lean_name)
    spans = lean.client_spans()
    assert [s.name.split()[0] for s in spans] == ["GET", "POST", "DELETE", "GET"]
    version, trace_id, parent_id, flags = server.seen[-1]["traceparent"].split("-")
    assert parent_id == f"{spans[2].context.span_id:016x}"


def test_lean_requests_suppresses_http_instrumentation_below_it(server: LoopbackHTTP) -> None:
    """A urllib3 instrumentation under requests must not record the same call again."""
    import urllib3.connectionpool

    from opentelemetry import context as otel_context
    from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY

    seen_below: list[object] = []
    original = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def spy(self: object, *args: object, **kwargs: object) -> object:
        seen_below.append(otel_context.get_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    urllib3.connectionpool.HTTPConnectionPool.urlopen = spy  # type: ignore[method-assign]
    try:
        lean = capture()
        requests_hook.instrument(lean.provider)
        run_under_root(lean, lambda: requests.get(server.url + "/a", timeout=10))
        unsampled = unsampled_capture()
        requests_hook.uninstrument()
        requests_hook.instrument(unsampled.provider)
        run_under_root(unsampled, lambda: requests.get(server.url + "/a", timeout=10))
    finally:
        urllib3.connectionpool.HTTPConnectionPool.urlopen = original  # type: ignore[method-assign]
    assert seen_below == [True, True]
    assert len(lean.client_spans()) == 1 and unsampled.spans() == []
    assert otel_context.get_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY) is None


def test_uninstrument_restores_requests() -> None:
    original = vars(requests.Session)["send"]
    requests_hook.instrument(capture().provider)
    requests_hook.instrument(capture().provider)
    assert vars(requests.Session)["send"] is not original
    assert vars(requests.Session)["send"].__wrapped__ is original
    requests_hook.uninstrument()
    assert vars(requests.Session)["send"] is original


def test_the_agents_own_background_io_is_never_traced(server: LoopbackHTTP, redis_server: object) -> None:
    """A worker of pulsetrace.background (the agent's exporters, probes, pollers) calls libraries the
    lean hooks patch: no span and no trace header, even inside a sampled trace's context."""
    import redis as redis_lib

    from pulsetrace.background import start_worker
    from pulsetrace.instrumentation.clients import redis_hook

    lean = capture()
    httpx_hook.instrument(lean.provider)
    requests_hook.instrument(lean.provider)
    redis_hook.instrument(lean.provider)
    done: list[bool] = []

    def agent_work() -> None:
        httpx.get(server.url + "/probe")
        requests.get(server.url + "/probe", timeout=10)
        client = redis_lib.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        client.ping()
        client.close()
        done.append(True)

    try:
        with lean.provider.get_tracer("test").start_as_current_span("root"):
            worker = start_worker("pulsetrace-test-worker", agent_work)
            worker.join(30)
    finally:
        redis_hook.uninstrument()
    assert done == [True]
    assert lean.client_spans() == []
    assert all("traceparent" not in h for h in server.seen[-2:])
