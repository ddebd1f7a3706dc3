"""What can be activated: pulsetrace's own table, its lean client hooks, and every installed instrumentor.

One list of :class:`Instrumentation` rows, each naming the modules whose first import
activates it and how. The sources, in order of preference for a name:

1. pulsetrace's own rows (:data:`OWN`): the server span at the server (uvicorn, gunicorn)
   and at the framework (Django, Flask, Starlette, FastAPI), with route templates and
   exception capture;
2. the lean client hooks of ``pulsetrace.instrumentation.clients`` (its ``LEAN_HOOKS``
   table, library → hook module), preferred to contrib's instrumentor for that library;
3. every other package that registers an ``opentelemetry_instrumentor`` entry point, the
   way ``opentelemetry-instrument`` finds them, activated through ``BaseInstrumentor``.

Contrib's server instrumentations (:data:`SERVER_INSTRUMENTORS`) are never activated: they
would start a second server span; what they add (route, exceptions) is in pulsetrace's rows.
An entry point whose declared library versions (``instruments`` extra) do not match what is
installed yields a one-line warning and no row; one whose library is absent yields nothing.

Discovery reads package metadata only: it imports no instrumentor and no library.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from opentelemetry.trace import TracerProvider

from pulsetrace.instrumentation import framework_django, framework_flask, framework_starlette, servers

_log = logging.getLogger("pulsetrace.instrumentation")
Undo = Callable[[], None]
Activate = Callable[[ModuleType, TracerProvider], Undo]


@dataclass(frozen=True)
class Instrumentation:
    name: str
    #: The modules whose first import activates it (once per module: ``activate`` gets that module).
    modules: tuple[str, ...]
    #: The import name to look for when deciding whether the library is installed.
    library: str
    activate: Activate
    #: ``pulsetrace`` (own rows), ``lean`` (pulsetrace's client hooks) or ``contrib`` (an entry point).
    source: str = "pulsetrace"
    #: A module the activation imports: if it is itself mid-import, activation waits for it.
    needs: str = ""


#: Contrib instrumentors that start a server span: pulsetrace's middleware is the one server span.
SERVER_INSTRUMENTORS = frozenset({"asgi", "wsgi", "django", "flask", "fastapi", "starlette", "falcon", "pyramid"})

#: Arguments for contrib instrumentors whose defaults change the application beyond its spans. logging's
#: would add a handler to the root logger (sending every record to an OpenTelemetry logger provider,
#: and silencing Python's last-resort stderr output); trace ids in log records are pulsetrace's
#: ``logging.correlation``. ``OTEL_PYTHON_LOG_CORRELATION=true`` still gives upstream's format.
CONTRIB_ARGUMENTS: dict[str, dict[str, Any]] = {
    "logging": {"enable_log_auto_instrumentation": False},
}

OWN: tuple[Instrumentation, ...] = (
    Instrumentation("asgi", ("uvicorn.config",), "uvicorn", servers.uvicorn),
    Instrumentation("wsgi", ("gunicorn.app.base",), "gunicorn", servers.gunicorn),
    Instrumentation("django", framework_django.MODULES, "django", framework_django.activate),
    Instrumentation("flask", framework_flask.MODULES, "flask", framework_flask.activate),
    Instrumentation("starlette", framework_starlette.MODULES[:1], "starlette", framework_starlette.activate),
    Instrumentation("fastapi", framework_starlette.MODULES[1:], "fastapi", framework_starlette.activate),
)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def contrib_activation(instrumentor_path: str, **kwargs: Any) -> Activate:
    """Activate an upstream ``BaseInstrumentor`` (``module:Class``) with our tracer provider."""

    def activate(_module: ModuleType, provider: TracerProvider) -> Undo:
        mod_name, cls_name = instrumentor_path.split(":", 1)
        instrumentor = getattr(importlib.import_module(mod_name), cls_name)()
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True, **kwargs)
        return lambda: instrumentor.uninstrument()

    return activate


def lean_activation(module_path: str) -> Activate:
    """Activate one of pulsetrace's lean client hooks (``instrument(provider)``/``uninstrument()``)."""

    def activate(_module: ModuleType, provider: TracerProvider) -> Undo:
        hook = importlib.import_module(module_path)
        hook.instrument(provider)
        undo: Undo = hook.uninstrument
        return undo

    return activate


def lean_hooks() -> dict[str, str]:
    """The clients package's table (library → hook module), or nothing when it is not there."""
    try:
        from pulsetrace.instrumentation import clients
    except ImportError:
        return {}
    enabled = getattr(clients, "enabled_hooks", None)  # honours PULSETRACE_LEAN_CLIENTS=0
    table = enabled() if callable(enabled) else getattr(clients, "LEAN_HOOKS", None)
    return dict(table) if isinstance(table, dict) else {}


# -- entry points -----------------------------------------------------------------------------------------------


def _requirements(dist: Any) -> list[tuple[str, str]]:
    """(extra, requirement) for the ``instruments``/``instruments-any`` extras of an instrumentor's dist."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        marker = str(req.marker or "")
        for extra in ("instruments-any", "instruments"):
            if f'"{extra}"' in marker or f"'{extra}'" in marker:
                found.append((extra, req.name))
                break
    return found


def _top_level_modules(dist_name: str) -> tuple[str, ...]:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        return ()
    text = dist.read_text("top_level.txt")
    if text:
        return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("_"))
    names: dict[str, None] = {}
    for path in dist.files or ():
        first = path.parts[0] if path.parts else ""
        if not first or first.endswith((".dist-info", ".data")) or first.startswith(("_", "..")):
            continue
        if len(path.parts) == 1 and not first.endswith(".py"):
            continue
        names[first.removesuffix(".py")] = None
    return tuple(names)


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _watched_modules(ep_name: str, dist: Any) -> tuple[str, ...]:
    # Most entry points are named for the library's module (redis, psycopg2 from psycopg2-binary, sqlite3).
    if installed(_normal(ep_name)):
        return (_normal(ep_name),)
    reqs = _requirements(dist)
    named = [name for _, name in reqs if _normal(name) == _normal(ep_name)]
    if named:  # named for a library that is not installed (aiobotocore, httpx2): nothing to watch
        return ()
    candidates = [name for _, name in reqs]  # aiohttp-client → aiohttp, boto3sqs → boto3
    modules: dict[str, None] = {}
    for dist_name in candidates:
        for module in _top_level_modules(dist_name):
            modules[module] = None
    return tuple(modules)


def _version_conflict(dist: Any) -> str | None:
    """A one-line description when an installed library's version is outside what the instrumentor declares."""
    try:
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        conflict = get_dist_dependency_conflicts(dist)
    except Exception:
        return None
    if conflict is None or not (conflict.found or conflict.found_any):
        return None
    required = conflict.required or " or ".join(conflict.required_any or ())
    found = conflict.found or ", ".join(conflict.found_any or ())
    return f"requires {required}, found {found}"


def entry_point_rows(skip: Iterable[str], warn: Callable[[str], None]) -> list[Instrumentation]:
    """A row for every installed instrumentor entry point whose library is installed at a matching version."""
    from importlib.metadata import entry_points

    skipped = set(skip)
    rows = []
    for ep in entry_points(group="opentelemetry_instrumentor"):
        if ep.name in skipped or ep.name in SERVER_INSTRUMENTORS:
            continue
        try:
            dist = ep.dist
            modules = _watched_modules(ep.name, dist) if dist is not None else ()
            modules = tuple(m for m in modules if installed(m))
            if not modules:
                continue
            conflict = _version_conflict(dist)
            if conflict is not None:
                warn(f"pulsetrace: {ep.name} instrumentation not activated: {conflict}")
                continue
            rows.append(Instrumentation(ep.name, modules, modules[0],
                                        contrib_activation(ep.value, **CONTRIB_ARGUMENTS.get(ep.name, {})),
                                        source="contrib", needs=ep.value.split(":", 1)[0]))
        except Exception:  # one broken distribution must not stop the others
            _log.debug("entry point %s skipped", ep.name, exc_info=True)
    return rows


def catalog(warn: Callable[[str], None]) -> list[Instrumentation]:
    """Every row that may be activated in this environment, one per name."""
    rows = list(OWN)
    taken = {row.name for row in rows}
    for library, module_path in lean_hooks().items():
        if library not in taken:
            rows.append(Instrumentation(library, (library,), library, lean_activation(module_path), source="lean",
                                        needs=module_path))
            taken.add(library)
    rows.extend(entry_point_rows(taken, warn))
    return rows


def known_names() -> tuple[str, ...]:
    """Every instrumentation name configuration may list: ours, installed entry points, upstream's catalogue."""
    names: dict[str, None] = {row.name: None for row in OWN}
    names.update((lib, None) for lib in lean_hooks())
    try:
        from importlib.metadata import entry_points

        names.update((ep.name, None) for ep in entry_points(group="opentelemetry_instrumentor"))
    except Exception:
        pass
    try:
        from opentelemetry.instrumentation.bootstrap_gen import default_instrumentations, libraries

        for entry in [*libraries, *({"instrumentation": d} for d in default_instrumentations)]:
            package = str(entry["instrumentation"]).split("=")[0].split(">")[0].split("<")[0].strip()
            if package.startswith("opentelemetry-instrumentation-"):
                names[package.removeprefix("opentelemetry-instrumentation-")] = None
    except Exception:
        pass
    return tuple(names)
