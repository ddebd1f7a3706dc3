"""Django: pulsetrace's server span around Django's own handlers, the route template, and 500s.

- The span: ``WSGIHandler.__call__`` and ``ASGIHandler.__call__`` are wrapped (``servers.wrap_call``),
  so every server that runs the project (gunicorn, uWSGI, waitress, ``manage.py runserver``,
  daphne, uvicorn, hypercorn, granian) gives one server span per request.
- The route: after Django's resolver matches, the route template of the match
  (``users/<slug:name>/``, the whole include chain; ``/`` for the empty root route) is handed
  to the middleware, which names the span ``GET users/<slug:name>/``, sets ``http.route`` and
  uses it as the CloudWatch ``Operation``.
- Exceptions: Django turns a view's exception into a 500 response, so no exception reaches
  the middleware; the ``got_request_exception`` signal records it on the server span.

Contrib's Django instrumentor is not used: it would start a second span per request.
Never raises into Django: each step swallows its own errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentelemetry.trace import Status, StatusCode, TracerProvider

from pulsetrace.instrumentation._http import ROUTE_KEY, SPAN_KEY
from pulsetrace.instrumentation.servers import wrap_call

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]

#: The modules whose import activates this: each is patched when it is first imported.
MODULES = ("django.core.handlers.base", "django.core.handlers.wsgi", "django.core.handlers.asgi")


def _carrier(request: Any) -> Any:
    """The WSGI environ or ASGI scope the middleware saw (the same dict object)."""
    environ = getattr(request, "environ", None)
    if isinstance(environ, dict) and SPAN_KEY in environ:
        return environ
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else environ


def _patch_resolver(module: ModuleType) -> Undo:
    handler = module.BaseHandler
    original = handler.resolve_request

    def resolve_request(self: Any, request: Any) -> Any:
        match = original(self, request)
        try:
            route = getattr(match, "route", None)
            carrier = _carrier(request)
            if isinstance(route, str) and carrier is not None:
                carrier[ROUTE_KEY] = route or "/"
        except Exception:
            _log.debug("django route not recorded", exc_info=True)
        return match

    handler.resolve_request = resolve_request

    def undo() -> None:
        handler.resolve_request = original

    return undo


def _on_request_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    try:
        exc = sys.exc_info()[1]
        carrier = _carrier(request) if request is not None else None
        span = carrier.get(SPAN_KEY) if carrier is not None else None
        if exc is None or span is None or not span.is_recording():
            return
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    except Exception:
        _log.debug("django exception not recorded", exc_info=True)


def _connect_signal() -> Undo:
    from django.core.signals import got_request_exception

    # weak=False: the receiver is a module function, kept alive anyway; the uid makes it idempotent.
    got_request_exception.connect(_on_request_exception, weak=False, dispatch_uid="pulsetrace")

    def undo() -> None:
        got_request_exception.disconnect(dispatch_uid="pulsetrace")

    return undo


def activate(module: ModuleType, provider: TracerProvider) -> Undo:
    """Patch what ``module`` (one of :data:`MODULES`) holds; returns the undo."""
    name = module.__name__
    if name == "django.core.handlers.base":
        undos = [_patch_resolver(module), _connect_signal()]

        def undo_all() -> None:
            for undo in reversed(undos):
                undo()

        return undo_all
    if name == "django.core.handlers.wsgi":
        return wrap_call(module.WSGIHandler, provider, asgi=False)
    return wrap_call(module.ASGIHandler, provider, asgi=True)
