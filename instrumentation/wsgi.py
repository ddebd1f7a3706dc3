"""A lean WSGI server-span middleware (the sync twin of :mod:`pulsetrace.instrumentation.asgi`).

One SERVER span per request, context extracted only when a trace header is
present, request metrics for every request. The span ends when the response
iterable is closed, so streamed bodies are covered. Never raises into the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pulsetrace.instrumentation import hooks as _hooks
from pulsetrace.instrumentation._http import GETTER as _GETTER
from pulsetrace.instrumentation._http import (
    MAX_QUERY_CHARS,
    ROUTE_KEY,
    SPAN_KEY,
    cut_query,
    path_template,
    split_host,
    trace_response_headers,
)

_ENV_TRACE_HEADERS = {"HTTP_TRACEPARENT": "traceparent", "HTTP_TRACESTATE": "tracestate", "HTTP_BAGGAGE": "baggage",
                      "HTTP_X_AMZN_TRACE_ID": "x-amzn-trace-id"}
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ClosingIterable:
    """The app's response body; the span ends when the server closes it.

    The request's context is attached again while the body is iterated, so spans made
    while streaming (a generator body querying a database) stay in the request's trace.
    """

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[BaseException | None], None],
                 ctx: otel_context.Context) -> None:
        self._inner = inner
        self._on_close = on_close
        self._ctx = ctx
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        token = otel_context.attach(self._ctx)
        try:
            yield from self._inner
        except BaseException as exc:
            self._finish(exc)
            raise
        finally:
            otel_context.detach(token)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(exc)


class PulseTraceWSGIMiddleware:
    def __init__(self, app: WSGIApp, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.app = app
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None

    def _get_tracer(self) -> trace.Tracer:
        if self._tracer is None:
            self._tracer = (self._provider or trace.get_tracer_provider()).get_tracer("pulsetrace.wsgi")
        return self._tracer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get(SPAN_KEY) is not None:  # already traced by an outer pulsetrace middleware
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            span, token = self._start(environ)
        except Exception:
            return self.app(environ, start_response)
        status_holder = [0]

        def start_response_wrapper(status: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                status_holder[0] = int(status.split(" ", 1)[0])
            except (ValueError, AttributeError):
                pass
            if _hooks.response_header:
                try:
                    headers = [*headers, *trace_response_headers(span)]
                except Exception:
                    pass
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def finish(exc: BaseException | None) -> None:
            try:
                self._finish(environ, span, status_holder[0], exc, started)
            except Exception:
                pass

        ctx = otel_context.get_current()
        try:
            result = self.app(environ, start_response_wrapper)
        except BaseException as exc:
            finish(exc)
            raise
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
        return _ClosingIterable(result, finish, ctx)

    def _start(self, environ: dict[str, Any]) -> tuple[trace.Span, object]:
        carrier = {name: str(environ[key])[:8192] for key, name in _ENV_TRACE_HEADERS.items() if key in environ}
        parent_ctx = None
        if carrier:
            try:
                parent_ctx = propagate.extract(carrier, getter=_GETTER)  # type: ignore[arg-type]
            except Exception:
                parent_ctx = None
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        host, port = split_host(str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")))
        attributes: dict[str, Any] = {
            "http.request.method": method, "url.path": path, "url.scheme": environ.get("wsgi.url_scheme", "http"),
            "server.address": host, "http.method": method, "http.target": path,
        }
        # The port the client addressed (Host header), else the one the server listens on: as the ASGI twin.
        if not port:
            port = split_host(f":{environ.get('SERVER_PORT') or ''}")[1]
        if port:
            attributes["server.port"] = port
        if environ.get("HTTP_USER_AGENT"):
            attributes["user_agent.original"] = str(environ["HTTP_USER_AGENT"])[:512]
        if environ.get("REMOTE_ADDR"):
            attributes["client.address"] = environ["REMOTE_ADDR"]
        if environ.get("QUERY_STRING"):
            attributes["url.query"] = cut_query(str(environ["QUERY_STRING"])[:MAX_QUERY_CHARS + 1])
        span = self._get_tracer().start_span(method, context=parent_ctx, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent_ctx))
        environ[SPAN_KEY] = span
        return span, token

    def _finish(self, environ: dict[str, Any], span: trace.Span, status: int, exc: BaseException | None,
                started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        method = environ.get("REQUEST_METHOD", "GET")
        matched = environ.get(ROUTE_KEY)  # left by a framework hook (Django's resolver, Flask's url rule)
        if not isinstance(matched, str):
            matched = None
        route = matched or path_template(environ.get("PATH_INFO", "/") or "/")
        if exc is not None and status == 0:
            status = 500
        if span.is_recording():
            span.update_name(f"{method} {route}")
            if matched is not None:
                span.set_attribute("http.route", matched)
            if status:
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("http.status_code", status)
            if exc is not None and environ.get("pulsetrace.exception") is not exc:  # a framework hook recorded it
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            elif status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        recorder = _hooks.recorder
        if recorder is not None:
            # without a framework hook a WSGI app gives no route template: the path template stands in, unrouted
            recorder.record(f"{method} {route}", "", latency_ms, 400 <= status < 500,
                            status >= 500 or exc is not None, routed=matched is not None, status=status)
