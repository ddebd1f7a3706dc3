"""Lean client spans for requests: ``Session.send`` is wrapped (every request, redirects included).

One client span per request sent, named ``GET host[:port]``, the trace context injected
into the prepared request's headers. HTTP instrumentation is suppressed while the request
is sent, so a urllib3 instrumentation below does not record the same call twice (contrib's
requests instrumentor does the same). In a trace that is neither sampled nor recorded only
the headers are written.

Never raises into the application from its own code; never imports requests before
:func:`instrument` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY
from opentelemetry.trace import set_span_in_context

from pulsetrace.instrumentation.clients.base import (
    PROPAGATE, SKIP, ClientTracer, LeanHook, Patches, current, decide, end_http_span, fail_span, inject,
    start_client_span,
)
from pulsetrace.instrumentation.clients.semconv import http_attributes, http_span_name

__all__ = ["instrument", "is_instrumented", "uninstrument"]


def _describe(request: Any) -> tuple[str, dict[str, Any]]:
    method = str(request.method or "GET").upper()
    url = str(request.url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port
    scheme = parts.scheme
    return http_span_name(method, host, port, scheme), http_attributes(method, url, host, port, scheme)


def _send_suppressed(original: Any, ctx: otel_context.Context, session: Any, request: Any, kwargs: Any) -> Any:
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx))
    try:
        return original(session, request, **kwargs)
    finally:
        otel_context.detach(token)


def _wrap_send(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            ctx = current()
            mode = decide(ctx, http=True)
            if mode == SKIP:
                return original(self, request, **kwargs)
            if mode == PROPAGATE:
                inject(request.headers, ctx)
                return _send_suppressed(original, ctx, self, request, kwargs)
            try:
                name, attrs = _describe(request)
            except Exception:  # an odd request costs its span, never the call
                return original(self, request, **kwargs)
            span = start_client_span(tracer, name, ctx, attrs)
            span_ctx = set_span_in_context(span, ctx)
            inject(request.headers, span_ctx)
            try:
                response = _send_suppressed(original, span_ctx, self, request, kwargs)
            except BaseException as exc:
                fail_span(span, exc)
                raise
            end_http_span(span, response.status_code)
            return response

        return send

    return make


def _patch(tracer: ClientTracer, patches: Patches) -> None:
    import requests.sessions

    patches.wrap(requests.sessions.Session, "send", _wrap_send(tracer))


_HOOK = LeanHook("pulsetrace.instrumentation.clients.requests", _patch)
instrument = _HOOK.instrument
uninstrument = _HOOK.uninstrument
is_instrumented = _HOOK.is_instrumented
