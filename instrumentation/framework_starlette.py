"""Starlette and FastAPI: pulsetrace's server span around the application, and FastAPI's telemetry folded in.

``Starlette.__call__`` and ``FastAPI.__call__`` are wrapped, so hypercorn, daphne, granian
and uvicorn all give one server span; the route template comes from the matched route in
the scope (``/users/{name}``).

Current FastAPI starts its own server span when a tracer provider is configured, from the
request headers rather than the current context: with pulsetrace's span around it, every
request would become two traces. Instead, FastAPI is told through the ASGI scope that the
request is already traced (``scope["fastapi.telemetry"]`` holds its per-request record with
pulsetrace's span in it): FastAPI then names that span from its route (mounts included),
and its operation spans (dependencies, endpoint, serialization; ``operation_spans``) become
its children. Should FastAPI's private record change shape, the scope key is set to ``None``,
which makes FastAPI skip its own span: one server span either way. FastAPI's
``telemetry={"tracing": False}`` and ``exclude`` are honoured.

Contrib's Starlette/FastAPI instrumentors are not used. Never raises into the application.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider

from pulsetrace.instrumentation._http import ROUTE_KEY, SPAN_KEY
from pulsetrace.instrumentation.servers import wrap_call

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]

MODULES = ("starlette.applications", "fastapi.applications")
_FASTAPI_KEY = "fastapi.telemetry"


def _request_telemetry(app: Any, span: Any, scope: MutableMapping[str, Any],
                       provider: TracerProvider) -> tuple[Any, Any] | None:
    """FastAPI's per-request record holding our span, and its context key; ``None`` if unavailable."""
    try:
        import fastapi
        from fastapi.telemetry._api import _REQUEST_TELEMETRY_KEY, _RequestTelemetry

        config = getattr(app, "_telemetry", None) or {}
        tracer = None
        if config.get("operation_spans", True):
            tracer = (config.get("tracer_provider") or provider).get_tracer(
                "fastapi", getattr(fastapi, "__version__", ""))
        record = _RequestTelemetry(
            span=span, span_method=str(scope.get("method") or "GET"), tracer=tracer, logger=None,
            _mount_prefix=str(scope.get("app_root_path", scope.get("root_path", ""))).rstrip("/"),
        )
        return record, _REQUEST_TELEMETRY_KEY
    except Exception:
        _log.debug("FastAPI telemetry record not built", exc_info=True)
        return None


def _fastapi_around(provider: TracerProvider) -> Callable[[Any, Any, Callable[[], Awaitable[None]]],
                                                            Awaitable[None]]:
    async def around(app: Any, scope: MutableMapping[str, Any], call: Callable[[], Awaitable[None]]) -> None:
        span = scope.get(SPAN_KEY)
        config = getattr(app, "_telemetry", None) or {}
        exclude = config.get("exclude")
        if span is None or _FASTAPI_KEY in scope or config.get("tracing", True) is False:
            await call()
            return
        built = None
        try:
            if not (exclude is not None and exclude(scope)):
                built = _request_telemetry(app, span, scope, provider)
        except Exception:
            built = None
        if built is None:
            scope[_FASTAPI_KEY] = None  # FastAPI keeps out: one server span, ours
            try:
                await call()
            finally:
                scope.pop(_FASTAPI_KEY, None)
            return
        record, key = built
        scope[_FASTAPI_KEY] = record
        token = otel_context.attach(otel_context.set_value(key, record))
        try:
            await call()
        finally:
            otel_context.detach(token)
            scope.pop(_FASTAPI_KEY, None)
            route = getattr(record, "route", None)
            if isinstance(route, str) and route:
                scope[ROUTE_KEY] = route

    return around


def activate(module: ModuleType, provider: TracerProvider) -> Undo:
    if module.__name__ == "fastapi.applications":
        return wrap_call(module.FastAPI, provider, asgi=True, around=_fastapi_around(provider))
    return wrap_call(module.Starlette, provider, asgi=True)
