"""Activate the instrumentations for the libraries an application uses, from one table.

Each row names the library module to watch and how to instrument it; a library is
instrumented when the application first imports it (a post-import hook on
``sys.meta_path``), so a process that never touches botocore never pays for its
instrumentor, and start-up stays short. A library that is not installed is
skipped quietly, unless the configuration lists it in
``tracing.instrumentations.required`` (then it is a configuration error). Every
activation returns its undo; :func:`deactivate` runs them all and removes the hook.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pulsetrace.config.problems import ConfigError, Problem

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from opentelemetry.trace import TracerProvider

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]


@dataclass(frozen=True)
class Instrumentation:
    name: str
    #: The module whose import triggers the activation.
    module: str
    #: The distribution to look for when deciding whether the library is installed.
    library: str
    activate: Callable[[ModuleType, TracerProvider], Undo]


def _contrib(instrumentor_path: str, **kwargs: Any) -> Callable[[ModuleType, TracerProvider], Undo]:
    """Activate an upstream contrib ``BaseInstrumentor`` with our tracer provider."""

    def activate(_module: ModuleType, provider: TracerProvider) -> Undo:
        mod_name, cls_name = instrumentor_path.rsplit(":", 1)
        instrumentor = getattr(importlib.import_module(mod_name), cls_name)()
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True, **kwargs)
        return lambda: instrumentor.uninstrument()

    return activate


def prefer_lean(library: str, fallback: Callable[[ModuleType, TracerProvider], Undo]) \
        -> Callable[[ModuleType, TracerProvider], Undo]:
    """Activate pulsetrace's lean hook for ``library`` where the clients table has one, else ``fallback``.

    The table is :data:`pulsetrace.instrumentation.clients.LEAN_HOOKS`; it is read at
    activation time, so nothing is imported before the library is.
    """

    def activate(module: ModuleType, provider: TracerProvider) -> Undo:
        from pulsetrace.instrumentation.clients import lean_hook_module

        module_path = lean_hook_module(library)
        if module_path is None:
            return fallback(module, provider)
        hook = importlib.import_module(module_path)
        hook.instrument(provider)
        return hook.uninstrument  # type: ignore[no-any-return]

    return activate


def _uvicorn(module: ModuleType, provider: TracerProvider) -> Undo:
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


def _gunicorn(module: ModuleType, provider: TracerProvider) -> Undo:
    """Wrap WSGI apps that gunicorn's sync/gthread workers load (ASGI apps are left to uvicorn)."""
    import inspect

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


def _xray_sdk(module: ModuleType, provider: TracerProvider) -> Undo:
    """Bridge the AWS X-Ray SDK's recorder into pulsetrace's traces (it then neither samples nor sends)."""
    from pulsetrace.instrumentation.xray_sdk_bridge import activate as bridge

    return bridge(module, provider, enabled_names)


#: Every instrumentation pulsetrace knows, by the name used in ``tracing.instrumentations``.
INSTRUMENTATIONS: tuple[Instrumentation, ...] = (
    Instrumentation("asgi", "uvicorn.config", "uvicorn", _uvicorn),
    Instrumentation("wsgi", "gunicorn.app.base", "gunicorn", _gunicorn),
    Instrumentation("httpx", "httpx", "httpx",
                    prefer_lean("httpx", _contrib("opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor"))),
    Instrumentation("asyncpg", "asyncpg", "asyncpg",
                    prefer_lean("asyncpg", _contrib("opentelemetry.instrumentation.asyncpg:AsyncPGInstrumentor"))),
    Instrumentation("redis", "redis", "redis",
                    prefer_lean("redis", _contrib("opentelemetry.instrumentation.redis:RedisInstrumentor"))),
    Instrumentation("botocore", "botocore", "botocore",
                    _contrib("opentelemetry.instrumentation.botocore:BotocoreInstrumentor")),
    Instrumentation("requests", "requests", "requests",
                    prefer_lean("requests", _contrib("opentelemetry.instrumentation.requests:RequestsInstrumentor"))),
    Instrumentation("psycopg", "psycopg", "psycopg",
                    prefer_lean("psycopg", _contrib("opentelemetry.instrumentation.psycopg:PsycopgInstrumentor"))),
    Instrumentation("xray_sdk", "aws_xray_sdk.core", "aws_xray_sdk", _xray_sdk),
)

#: Upstream names accepted in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` for ours.
_ALIASES = {"aiohttp": "", "fastapi": "asgi", "starlette": "asgi", "flask": "wsgi", "django": "wsgi"}


def instrumentation_names() -> tuple[str, ...]:
    """The names ``tracing.instrumentations.disabled`` / ``required`` accept."""
    return tuple(i.name for i in INSTRUMENTATIONS)


def _installed(library: str) -> bool:
    try:
        return importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):
        return False


def required_problems(cfg: Config) -> list[Problem]:
    """A problem for each instrumentation the config requires whose library is missing."""
    by_name = {i.name: i for i in INSTRUMENTATIONS}
    problems = []
    for i, name in enumerate(cfg.tracing.instrumentations.required):
        inst = by_name.get(name)
        if inst is not None and not _installed(inst.library):
            problems.append(Problem(f"tracing.instrumentations.required[{i}]", f"library {inst.library} is not "
                                    "installed", name, f"pip install {inst.library}, or drop it from required"))
    return problems


class _HookLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, hook: Callable[[ModuleType], None]) -> None:
        self._wrapped = wrapped
        self._hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        # The module's own loader stays the real one (resources, reload, pkgutil).
        module.__loader__ = self._wrapped
        if module.__spec__ is not None:
            module.__spec__.loader = self._wrapped
        self._hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a hook right after a watched module is first imported."""

    def __init__(self) -> None:
        self.hooks: dict[str, Callable[[ModuleType], None]] = {}
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        busy: set[str] = getattr(self._busy, "names", None) or set()
        if fullname in busy:
            return None
        busy.add(fullname)
        self._busy.names = busy
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookLoader(spec.loader, hook)
        return spec


_state_lock = threading.Lock()
_finder: _PostImportFinder | None = None
_undo: list[tuple[str, Undo]] = []
#: The instrumentations :func:`activate` enabled (activated now or on first import).
_enabled: list[str] = []


def enabled_names() -> list[str]:
    """The instrumentations enabled in this process (whether their library was imported yet or not)."""
    with _state_lock:
        return list(_enabled)


def _disabled_names(cfg: Config) -> set[str]:
    names = set()
    for raw in cfg.tracing.instrumentations.disabled:
        names.add(_ALIASES.get(raw, raw))
    return names


def activate(cfg: Config, provider: TracerProvider) -> list[str]:
    """Arrange for every enabled instrumentation to activate; returns their names.

    Libraries already imported are instrumented now; the others when first imported.
    Raises :class:`ConfigError` when a required library is missing.
    """
    global _finder
    problems = required_problems(cfg)
    if problems:
        raise ConfigError(problems)
    disabled = _disabled_names(cfg)
    enabled: list[str] = []
    now: list[tuple[Callable[[ModuleType], None], ModuleType]] = []
    with _state_lock:
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)
        for inst in INSTRUMENTATIONS:
            if inst.name in disabled or not _installed(inst.library):
                continue
            enabled.append(inst.name)
            hook = _make_hook(inst, provider)
            existing = sys.modules.get(inst.module)
            if existing is not None:
                now.append((hook, existing))
            else:
                _finder.hooks[inst.module] = hook
        _enabled[:] = enabled
    # Hooks take the state lock themselves: run the ones for already-imported libraries after it is released.
    for hook, module in now:
        hook(module)
    return enabled


def _make_hook(inst: Instrumentation, provider: TracerProvider) -> Callable[[ModuleType], None]:
    done = threading.Event()

    def hook(module: ModuleType) -> None:
        if done.is_set():
            return
        done.set()
        if _finder is not None:
            _finder.hooks.pop(inst.module, None)
        try:
            undo = inst.activate(module, provider)
        except Exception as exc:  # a broken instrumentor must not break the application's import
            _log.warning("pulsetrace: %s instrumentation not activated: %s", inst.name, exc)
            return
        with _state_lock:
            _undo.append((inst.name, undo))

    return hook


def active() -> list[str]:
    """Names of the instrumentations activated so far in this process."""
    with _state_lock:
        return [name for name, _ in _undo]


def deactivate() -> None:
    """Undo every activation and remove the import hook."""
    global _finder
    with _state_lock:
        undos = list(reversed(_undo))
        _undo.clear()
        _enabled.clear()
        if _finder is not None:
            try:
                sys.meta_path.remove(_finder)
            except ValueError:
                pass
            _finder = None
    for name, undo in undos:
        try:
            undo()
        except Exception:
            _log.debug("undo of %s failed", name, exc_info=True)
