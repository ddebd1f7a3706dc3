"""Activate every instrumentation the environment offers, lazily, from one catalogue.

The rows come from :mod:`pulsetrace.instrumentation.catalog` (pulsetrace's own server and
framework rows, its lean client hooks, every installed ``opentelemetry_instrumentor`` entry
point). A row is activated when the application first imports one of its modules (a
post-import hook on ``sys.meta_path``, :mod:`~pulsetrace.instrumentation.importhook`), so a
process that never touches botocore never pays for its instrumentor and start-up stays
short; a module already imported is handled at once. Names listed in
``tracing.instrumentations.disabled`` (or ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``) are
skipped; a name in ``required`` whose library is missing is a configuration error.

Every activation returns its undo; :func:`deactivate` runs them all and removes the hook.
An activation that fails logs one line and leaves the application's import untouched.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from pulsetrace.config.problems import ConfigError, Problem
from pulsetrace.instrumentation.catalog import Instrumentation, catalog, installed, known_names
from pulsetrace.instrumentation.importhook import PostImportFinder, initializing

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from pulsetrace.config.schema import Config

__all__ = ["activate", "active", "deactivate", "enabled_names", "instrumentation_names", "pending_names",
           "required_problems"]

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]

#: Names other distros use for what one of pulsetrace's rows does.
_ALIASES = {"aiohttp": "aiohttp-client", "uvicorn": "asgi", "gunicorn": "wsgi"}


def instrumentation_names() -> tuple[str, ...]:
    """The names ``tracing.instrumentations.disabled`` / ``required`` accept (any known instrumentation)."""
    return (*known_names(), *(row.name for row in _STATEFUL_ROWS), *_ALIASES)


def required_problems(cfg: Config, rows: list[Instrumentation] | None = None) -> list[Problem]:
    """A problem for each instrumentation the config requires that cannot be activated here."""
    by_name = {row.name: row for row in (rows if rows is not None else _rows(lambda _line: None))}
    problems = []
    for i, raw in enumerate(cfg.tracing.instrumentations.required):
        name = _ALIASES.get(raw, raw)
        row = by_name.get(name)
        if row is None or not installed(row.library):
            library = row.library if row is not None else name
            problems.append(Problem(f"tracing.instrumentations.required[{i}]", f"library {library} is not "
                                    "installed (or its instrumentation is not)", raw,
                                    f"pip install {library}, or drop it from required"))
    return problems


_state_lock = threading.Lock()
_finder: PostImportFinder | None = None
_undo: list[tuple[str, Undo]] = []
#: The instrumentations :func:`activate` enabled (activated now or on first import).
_enabled: list[str] = []
#: The library each enabled instrumentation waits for (name → import name).
_libraries: dict[str, str] = {}


def enabled_names() -> list[str]:
    """The instrumentations enabled in this process (whether their library was imported yet or not)."""
    with _state_lock:
        return list(_enabled)


def _xray_sdk(module: ModuleType, provider: TracerProvider) -> Undo:
    """Bridge the AWS X-Ray SDK's recorder into pulsetrace's traces (it then neither samples nor sends)."""
    from pulsetrace.instrumentation.xray_sdk_bridge import activate as bridge

    return bridge(module, provider, enabled_names)


#: Rows that need this module's state (the X-Ray SDK bridge asks which names are enabled).
_STATEFUL_ROWS = (Instrumentation("xray_sdk", ("aws_xray_sdk.core",), "aws_xray_sdk", _xray_sdk),)


def _disabled_names(cfg: Config) -> set[str]:
    return {_ALIASES.get(raw, raw) for raw in cfg.tracing.instrumentations.disabled}


def _warn(line: str) -> None:
    _log.warning("%s", line)


def _rows(warn: Callable[[str], None]) -> list[Instrumentation]:
    return [*catalog(warn), *_STATEFUL_ROWS]


def activate(cfg: Config, provider: TracerProvider) -> list[str]:
    """Arrange for every enabled instrumentation to activate; returns their names.

    Libraries already imported are instrumented now; the others when first imported.
    Raises :class:`ConfigError` when a required library is missing.
    """
    global _finder
    disabled = _disabled_names(cfg)
    rows = _rows(_warn)
    problems = required_problems(cfg, rows)
    if problems:
        raise ConfigError(problems)
    enabled: list[str] = []
    now: list[tuple[Callable[[ModuleType], None], ModuleType]] = []
    with _state_lock:
        if _finder is None:
            _finder = PostImportFinder()
            sys.meta_path.insert(0, _finder)
        for row in rows:
            if row.name in disabled:
                continue
            enabled.append(row.name)
            _libraries[row.name] = row.library
            for module_name in row.modules:
                hook = _make_hook(row, module_name, provider)
                existing = sys.modules.get(module_name)
                if existing is not None and not initializing(module_name):
                    now.append((hook, existing))
                else:
                    _finder.hooks[module_name] = hook
        _enabled[:] = enabled
    # Hooks take the state lock themselves: run the ones for already-imported libraries after it is released.
    for hook, module in now:
        hook(module)
    return enabled


def _make_hook(row: Instrumentation, module_name: str, provider: TracerProvider) -> Callable[[ModuleType], None]:
    done = threading.Event()

    def run(module: ModuleType) -> None:
        try:
            undo = row.activate(module, provider)
        except Exception as exc:  # a broken instrumentor must not break the application's import
            _log.warning("pulsetrace: %s instrumentation not activated: %s", row.name, exc)
            return
        with _state_lock:
            _undo.append((row.name, undo))
        if "uwsgi" in sys.modules:  # the application is being loaded by uWSGI's master: its forks need us
            _hook_uwsgi_forks()

    def hook(module: ModuleType) -> None:
        if done.is_set():
            return
        done.set()
        finder = _finder
        if finder is not None:
            finder.hooks.pop(module_name, None)
        # The instrumentor's own package may be what is importing the library (an entry point loaded
        # by opentelemetry-instrument imports botocore): activating now would see it half-initialised.
        if row.needs and initializing(row.needs) and finder is not None:
            finder.defer(row.needs, lambda: run(module))
            return
        run(module)

    return hook


def _hook_uwsgi_forks() -> None:
    from pulsetrace.instrumentation.servers import hook_uwsgi_forks

    try:
        undo = hook_uwsgi_forks()
    except Exception:
        _log.debug("uWSGI fork hook not installed", exc_info=True)
        return
    if undo is not None:
        with _state_lock:
            _undo.append(("uwsgi", undo))


def active() -> list[str]:
    """Names of the instrumentations activated so far in this process (one entry per name)."""
    with _state_lock:
        return list(dict.fromkeys(name for name, _ in _undo))


def pending_names() -> tuple[list[str], list[str]]:
    """(activated so far, enabled and installed but waiting for their library's first import): the start-up line."""
    done = active()
    with _state_lock:
        enabled = [(name, _libraries.get(name, name)) for name in _enabled]
    waiting = [name for name, library in enabled if name not in done and installed(library)]
    return done, waiting


def deactivate() -> None:
    """Undo every activation and remove the import hook."""
    global _finder
    with _state_lock:
        undos = list(reversed(_undo))
        _undo.clear()
        _enabled.clear()
        _libraries.clear()
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
