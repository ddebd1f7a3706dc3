"""pulsetrace's server span, put around the application a server or a framework hands over.

Two kinds of wrapping, both with pulsetrace's lean middleware (``asgi.py``/``wsgi.py``):

- at the server: uvicorn's ``Config.load`` (uvicorn and gunicorn's uvicorn workers) and
  gunicorn's ``BaseApplication.wsgi`` (sync/gthread workers), for any ASGI/WSGI callable;
- at the framework (``framework_*.py``): Django's handlers, Flask's ``__call__``,
  Starlette's and FastAPI's ``__call__``, so that every server that runs those apps
  (runserver, ``flask run``, waitress, hypercorn, daphne, granian, uWSGI) gets the span.

When both apply, the outer middleware marks the request (``SPAN_KEY``) and the inner one
lets it through: one server span per request. Every patch here returns its undo. Nothing
here runs on the request path but the middleware itself; a failure to wrap is logged at
debug level and leaves the application unwrapped, never broken.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]


def uvicorn(module: ModuleType, provider: TracerProvider) -> Undo:
    """Wrap the app every ``uvicorn.Config`` loads (uvicorn, and gunicorn's UvicornWorker)."""
    from pulsetrace.instrumentation.asgi import PulseTraceMiddleware

    config_cls = module.Config
    original = config_cls.load

    def load(self: Any) -> None:
        original(self)
        try:
            _wrap_inside_proxy_headers(self, lambda app: PulseTraceMiddleware(app, provider))
        except Exception:
            _log.debug("could not wrap the ASGI app", exc_info=True)

    config_cls.load = load

    def undo() -> None:
        config_cls.load = original

    return undo


def _wrap_inside_proxy_headers(config: Any, wrap: Callable[[Any], Any]) -> None:
    """Put our middleware inside uvicorn's ProxyHeadersMiddleware when there is one.

    Behind an ALB the proxy-headers middleware rewrites ``client`` and ``scheme`` from
    ``X-Forwarded-For``/``-Proto`` (for trusted proxies); wrapped inside it, the server span
    records the real client address, not the load balancer's.
    """
    from pulsetrace.instrumentation.asgi import PulseTraceMiddleware

    outer = config.loaded_app
    if isinstance(outer, PulseTraceMiddleware):
        return
    inner = getattr(outer, "app", None)
    if type(outer).__name__ == "ProxyHeadersMiddleware" and inner is not None:
        if not isinstance(inner, PulseTraceMiddleware):
            outer.app = wrap(inner)
        return
    config.loaded_app = wrap(outer)


def gunicorn(module: ModuleType, provider: TracerProvider) -> Undo:
    """Wrap WSGI apps that gunicorn's sync/gthread workers load (ASGI apps are left to uvicorn)."""
    from pulsetrace.instrumentation.wsgi import PulseTraceWSGIMiddleware

    base = module.BaseApplication
    original = base.wsgi

    def wsgi(self: Any) -> Any:
        app = original(self)
        try:
            # ASGI workers (uvicorn's) load the app through uvicorn.Config, which wraps it as ASGI.
            worker = str(getattr(getattr(self, "cfg", None), "worker_class_str", "") or "")
            call = getattr(app, "__call__", None)
            is_asgi = ("uvicorn" in worker.lower() or "asgi" in worker.lower()
                       or inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call))
            if not is_asgi and not isinstance(app, PulseTraceWSGIMiddleware):
                app = PulseTraceWSGIMiddleware(app, provider)
                self.callable = app
        except Exception:
            _log.debug("could not wrap the WSGI app", exc_info=True)
        return app

    base.wsgi = wsgi

    def undo() -> None:
        base.wsgi = original

    return undo


def wrap_call(cls: type, provider: TracerProvider, *, asgi: bool,
              around: Callable[[Any, Any, Callable[..., Any]], Any] | None = None) -> Undo:
    """Patch ``cls.__call__`` so every instance serves through pulsetrace's middleware.

    The middleware is built once per application instance (kept in its ``__dict__``) around
    the original bound ``__call__``. ``around(app, scope, call)``, when given, runs inside
    the server span (FastAPI's cooperation with its own telemetry).
    """
    from pulsetrace.instrumentation._http import SPAN_KEY
    from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
    from pulsetrace.instrumentation.wsgi import PulseTraceWSGIMiddleware

    original = cls.__dict__["__call__"]
    slot = f"_pulsetrace_mw_{cls.__name__}"

    def middleware_of(app: Any) -> Any:
        mw = app.__dict__.get(slot)
        if mw is None:
            def inner(first: Any, *rest: Any) -> Any:
                if around is not None:
                    return around(app, first, lambda: original(app, first, *rest))
                return original(app, first, *rest)

            mw = PulseTraceMiddleware(inner, provider) if asgi else PulseTraceWSGIMiddleware(inner, provider)
            app.__dict__[slot] = mw
        return mw

    if asgi:
        async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
            if scope.get(SPAN_KEY) is not None or scope.get("type") != "http":
                if around is not None and scope.get("type") == "http":
                    await around(self, scope, lambda: original(self, scope, receive, send))
                    return
                await original(self, scope, receive, send)
                return
            await middleware_of(self)(scope, receive, send)

        patched: Any = __call__
    else:
        def __call__(self: Any, environ: Any, start_response: Any) -> Any:  # type: ignore[misc]
            if environ.get(SPAN_KEY) is not None:
                return original(self, environ, start_response)
            return middleware_of(self)(environ, start_response)

        patched = __call__
    patched.__wrapped__ = original
    cls.__call__ = patched  # type: ignore[method-assign]

    def undo() -> None:
        if cls.__dict__.get("__call__") is patched:
            cls.__call__ = original  # type: ignore[method-assign]

    return undo


def hook_uwsgi_forks() -> Undo | None:
    """Inside uWSGI, run pulsetrace's at-fork callbacks in each worker it forks.

    uWSGI forks its workers in C without Python's at-fork hooks (unless ``--py-call-osafterfork``),
    so the agent's export threads, started in the master, would be missing in every worker and its
    spans would queue for ever. uWSGI calls ``uwsgi.post_fork_hook`` in each new worker: chained
    there (any hook already set still runs first), with a one-line warning, since the workers'
    exit still suffers from the missing hooks. ``None`` outside uWSGI or with the option set.
    """
    import sys

    uwsgi: Any = sys.modules.get("uwsgi")  # uWSGI's embedded module: attributes set at run time
    if uwsgi is None or getattr(uwsgi, "_pulsetrace_post_fork", False):
        return None
    options = getattr(uwsgi, "opt", None) or {}
    if options.get("py-call-osafterfork") or options.get(b"py-call-osafterfork"):
        return None  # Python's own at-fork hooks run in each worker: nothing to add
    _log.warning("pulsetrace: uWSGI runs without --py-call-osafterfork: its workers miss Python's at-fork "
                 "hooks and may take uWSGI's reload mercy to exit; add --py-call-osafterfork")
    from pulsetrace.forking import run_in_child

    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        if callable(previous):
            previous()
        try:
            run_in_child()
        except Exception:
            _log.debug("pulsetrace's fork callbacks failed in a uWSGI worker", exc_info=True)

    uwsgi.post_fork_hook = post_fork
    uwsgi._pulsetrace_post_fork = True

    def undo() -> None:
        if getattr(uwsgi, "post_fork_hook", None) is post_fork:
            uwsgi.post_fork_hook = previous
        uwsgi._pulsetrace_post_fork = False

    return undo
