"""pulsetrace's own client hooks for the hot libraries, and the one table that names them.

Each hook module instruments one library on the OpenTelemetry API with only the
attributes the semantic conventions and the X-Ray translation need, and an
unsampled path that does nothing but propagate the trace context. Where a library
has a lean hook here, :mod:`pulsetrace.instrumentation.auto` activates it instead
of contrib's instrumentor for that library (contrib's remains for every other
library). See docs/performance.md for what each hook records and how it differs
from contrib's.

Every hook module offers ``instrument(provider=None)``, ``uninstrument()`` and
``is_instrumented()``; both calls are idempotent and every patch is undone.

``PULSETRACE_LEAN_CLIENTS=0`` in the environment turns the table off: contrib's
instrumentors are used for these libraries too (to compare, or if a lean hook misses
something contrib records for you).

This package's ``__init__`` never imports a hook or a library: the table is strings.
"""

from __future__ import annotations

import os

__all__ = ["LEAN_HOOKS", "enabled_hooks", "lean_hook_module"]

#: Library (the name ``tracing.instrumentations`` and auto.py use) → the module of its lean hook.
LEAN_HOOKS: dict[str, str] = {
    "httpx": "pulsetrace.instrumentation.clients.httpx_hook",
    "requests": "pulsetrace.instrumentation.clients.requests_hook",
    "psycopg": "pulsetrace.instrumentation.clients.psycopg_hook",
    "asyncpg": "pulsetrace.instrumentation.clients.asyncpg_hook",
    "redis": "pulsetrace.instrumentation.clients.redis_hook",
}


def enabled_hooks() -> dict[str, str]:
    """:data:`LEAN_HOOKS`, or nothing when ``PULSETRACE_LEAN_CLIENTS=0`` asks for contrib's instrumentors."""
    if os.environ.get("PULSETRACE_LEAN_CLIENTS", "").strip().lower() in ("0", "false", "no", "off"):
        return {}
    return dict(LEAN_HOOKS)


def lean_hook_module(library: str) -> str | None:
    """The module path of the lean hook for ``library``, or ``None`` when contrib's is used."""
    return enabled_hooks().get(library)
