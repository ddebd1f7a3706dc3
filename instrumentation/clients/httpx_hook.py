"""Lean client spans for httpx, sync and async: the transports' request methods are wrapped.

``httpx.HTTPTransport.handle_request`` and ``httpx.AsyncHTTPTransport.handle_async_request``
(what every ``Client``/``AsyncClient`` with the default transport calls, once per
request, redirects included) get one client span each, named ``GET host[:port]``, with
the trace context injected into the outgoing headers. In a trace that is neither
sampled nor recorded only the headers are written. A custom transport that does not
derive from httpx's is not seen (contrib's instrumentor has the same limit).

Never raises into the application from its own code; never imports httpx before
:func:`instrument` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.trace import set_span_in_context

from pulsetrace.instrumentation.clients.base import (
    PROPAGATE, SKIP, ClientTracer, LeanHook, Patches, current, decide, end_http_span, fail_span, inject,
    start_client_span,
)
from pulsetrace.instrumentation.clients.semconv import http_attributes, http_span_name

__all__ = ["instrument", "is_instrumented", "uninstrument"]


def _describe(request: Any) -> tuple[str, dict[str, Any]]:
    url = request.url
    method = request.method
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    method = method.upper()
    host, port, scheme = url.host, url.port, url.scheme
    return http_span_name(method, host, port, scheme), http_attributes(method, str(url), host, port, scheme)


def _wrap_sync(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def handle_request(self: Any, request: Any) -> Any:
            ctx = current()
            mode = decide(ctx, http=True)
            if mode == SKIP:
                return original(self, request)
            if mode == PROPAGATE:
                inject(request.headers, ctx)
                return original(self, request)
            try:
                name, attrs = _describe(request)
            except Exception:  # an odd request costs its span, never the call
                return original(self, request)
            span = start_client_span(tracer, name, ctx, attrs)
            inject(request.headers, set_span_in_context(span, ctx))
            try:
                response = original(self, request)
            except BaseException as exc:
                fail_span(span, exc)
                raise
            end_http_span(span, response.status_code)
            return response

        return handle_request

    return make


def _wrap_async(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        async def handle_async_request(self: Any, request: Any) -> Any:
            ctx = current()
            mode = decide(ctx, http=True)
            if mode == SKIP:
                return await original(self, request)
            if mode == PROPAGATE:
                inject(request.headers, ctx)
                return await original(self, request)
            try:
                name, attrs = _describe(request)
            except Exception:  # an odd request costs its span, never the call
                return await original(self, request)
            span = start_client_span(tracer, name, ctx, attrs)
            inject(request.headers, set_span_in_context(span, ctx))
            try:
                response = await original(self, request)
            except BaseException as exc:
                fail_span(span, exc)
                raise
            end_http_span(span, response.status_code)
            return response

        return handle_async_request

    return make


def _patch(tracer: ClientTracer, patches: Patches) -> None:
    import httpx

    patches.wrap(httpx.HTTPTransport, "handle_request", _wrap_sync(tracer))
    patches.wrap(httpx.AsyncHTTPTransport, "handle_async_request", _wrap_async(tracer))


_HOOK = LeanHook("pulsetrace.instrumentation.clients.httpx", _patch)
instrument = _HOOK.instrument
uninstrument = _HOOK.uninstrument
is_instrumented = _HOOK.is_instrumented
