"""Lean client spans for psycopg 3, sync and async: one span per ``execute``/``executemany``.

``psycopg.Cursor`` and ``psycopg.AsyncCursor`` (and so ``Connection.execute``, client-side
and raw cursors, which go through them) are wrapped; a span is named after the statement's
first word (``SELECT``), as contrib's instrumentor names it. The connection's attributes
(database, user, host, port) are read once per connection and cached beside it (weakly),
not asked of libpq on every statement. Server-side (named) cursors are not wrapped. In a
trace that is neither sampled nor recorded nothing is done at all.

Never raises into the application from its own code.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


from pulsetrace.instrumentation.clients.base import (
    ClientTracer, TRACE, LeanHook, Patches, await_in_span, current, decide, run_in_span, start_client_span,
)
from pulsetrace.instrumentation.clients.semconv import db_attributes, sql_operation

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_by_connection: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _connection_attributes(conn: Any) -> dict[str, Any]:
    cached = _by_connection.get(conn)
    if cached is not None:
        return cached
    info = conn.info
    port: int | None
    try:
        port = int(info.port)
    except (TypeError, ValueError):
        port = None
    attrs = db_attributes("postgresql", info.dbname or None, info.user or None, info.host or None, port)
    try:
        _by_connection[conn] = attrs
    except TypeError:  # a connection class without weak references: read it each time
        pass
    return attrs


def _text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray | memoryview):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)  # psycopg.sql.Composable
    if as_string is not None:
        return str(as_string(cursor))
    return str(query)


def _describe(cursor: Any, query: Any) -> tuple[str, dict[str, Any]]:
    statement = _text(query, cursor)
    attrs = dict(_connection_attributes(cursor.connection))
    attrs["db.statement"] = attrs["db.query.text"] = statement
    return sql_operation(statement) or attrs.get("db.name", "postgresql"), attrs


def _wrap_sync(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            ctx = current()
            if decide(ctx) != TRACE:
                return original(self, query, *args, **kwargs)
            try:
                name, attrs = _describe(self, query)
            except Exception:  # an odd statement costs its span, never the call
                return original(self, query, *args, **kwargs)
            return run_in_span(start_client_span(tracer, name, ctx, attrs), (), original, self, query, *args, **kwargs)

        return execute

    return make


def _wrap_async(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            ctx = current()
            if decide(ctx) != TRACE:
                return await original(self, query, *args, **kwargs)
            try:
                name, attrs = _describe(self, query)
            except Exception:  # an odd statement costs its span, never the call
                return await original(self, query, *args, **kwargs)
            return await await_in_span(start_client_span(tracer, name, ctx, attrs), (),
                                       original(self, query, *args, **kwargs))

        return execute

    return make


def _patch(tracer: ClientTracer, patches: Patches) -> None:
    import psycopg

    for name in ("execute", "executemany"):
        patches.wrap(psycopg.Cursor, name, _wrap_sync(tracer))
        patches.wrap(psycopg.AsyncCursor, name, _wrap_async(tracer))


_HOOK = LeanHook("pulsetrace.instrumentation.clients.psycopg", _patch)
instrument = _HOOK.instrument
uninstrument = _HOOK.uninstrument
is_instrumented = _HOOK.is_instrumented
