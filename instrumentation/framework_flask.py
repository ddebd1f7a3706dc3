"""Flask: pulsetrace's server span around ``Flask.__call__``, the url rule as the route, and 500s.

Wrapping ``Flask.__call__`` (not ``wsgi_app``, which applications replace with their own
middleware such as ``ProxyFix``) covers every server: gunicorn, uWSGI, waitress, ``flask run``.
The ``request_started`` signal hands the matched url rule (``/users/<name>``) to the
middleware; ``got_request_exception`` records the exception Flask turns into a 500.
Contrib's Flask instrumentor is not used (a second span per request). Never raises into Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentelemetry.trace import Status, StatusCode, TracerProvider

from pulsetrace.instrumentation._http import ROUTE_KEY, SPAN_KEY
from pulsetrace.instrumentation.servers import wrap_call

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]

MODULES = ("flask.app",)


def _on_request_started(sender: Any, **extra: Any) -> None:
    try:
        from flask import request

        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_KEY] = rule.rule
    except Exception:
        _log.debug("flask route not recorded", exc_info=True)


def _on_exception(sender: Any, exception: BaseException | None = None, **extra: Any) -> None:
    try:
        from flask import request

        span = request.environ.get(SPAN_KEY)
        if exception is None or span is None or not span.is_recording():
            return
        span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        request.environ["pulsetrace.exception"] = exception  # the middleware must not record it again
    except Exception:
        _log.debug("flask exception not recorded", exc_info=True)


def activate(module: ModuleType, provider: TracerProvider) -> Undo:
    from flask import signals

    undo_call = wrap_call(module.Flask, provider, asgi=False)
    # weak=False: module functions live for ever anyway; blinker ignores a second connect of the same receiver.
    signals.request_started.connect(_on_request_started, weak=False)
    signals.got_request_exception.connect(_on_exception, weak=False)

    def undo() -> None:
        signals.got_request_exception.disconnect(_on_exception)
        signals.request_started.disconnect(_on_request_started)
        undo_call()

    return undo
