"""Lean client spans for asyncpg: one span per statement, none for the pool's housekeeping.

Wrapped: ``Connection.execute/executemany/fetch/fetchval/fetchrow``, the same methods of
``PreparedStatement`` (plus ``fetchmany``), and ``Cursor.fetch/forward/fetchrow`` and
``CursorIterator.__anext__`` (span ``CURSOR: <op>``), as contrib's instrumentor does. Not
recorded (issue 15): the reset query a pool runs on every connection it takes back
(``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;``) and the
``LISTEN``/``UNLISTEN`` that ``add_listener``/``remove_listener`` issue: they are the
pool's or the driver's work, not the request's.

Spans are not made current (nothing below them is traced), so a statement costs one
span start and end. In a trace that is neither sampled nor recorded nothing is done
at all. Never raises into the application from its own code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


from pulsetrace.instrumentation.clients.base import (
    ClientTracer, TRACE, LeanHook, Patches, await_in_span, current, decide, start_client_span,
)
from pulsetrace.instrumentation.clients.semconv import db_attributes, sql_operation

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_CONNECTION_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow")
_PREPARED_METHODS = ("fetch", "fetchval", "fetchrow", "executemany", "fetchmany")
_CURSOR_METHODS = ("fetch", "forward", "fetchrow")
_HOUSEKEEPING = ("LISTEN ", "UNLISTEN ")


def _connection_attributes(conn: Any, statement: str) -> dict[str, Any]:
    params = getattr(conn, "_params", None)
    addr = getattr(conn, "_addr", None)
    host: str | None = None
    port: int | None = None
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
    elif isinstance(addr, str):
        host = addr
    attrs = db_attributes("postgresql", getattr(params, "database", None), getattr(params, "user", None), host, port)
    if statement:
        attrs["db.statement"] = statement
        attrs["db.query.text"] = statement
    return attrs


def _span_name(conn: Any, statement: str) -> str:
    if not statement:
        return str(getattr(getattr(conn, "_params", None), "database", None) or "postgresql")
    return sql_operation(statement)


def _is_housekeeping(conn: Any, statement: str) -> bool:
    """The pool's reset query (the very string the connection cached) or a listener's (UN)LISTEN."""
    return statement is getattr(conn, "_reset_query", None) or statement.startswith(_HOUSEKEEPING)


async def _run(tracer: ClientTracer, ctx: Any, conn: Any, statement: str, prefix: str, call: Any) -> Any:
    """Await ``call`` (the library's coroutine) inside a client span for ``statement`` on ``conn``."""
    try:
        span = start_client_span(tracer, prefix + _span_name(conn, statement), ctx,
                                 _connection_attributes(conn, statement))
    except Exception:  # an odd statement costs its span, never the call
        return await call
    # StopAsyncIteration is the end of a cursor, not a failure.
    return await await_in_span(span, (StopAsyncIteration,), call)


def _connection_method(tracer: ClientTracer) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        # A plain function returning the library's own coroutine: an untraced call costs no extra frame.
        def method(self: Any, query: Any = "", *args: Any, **kwargs: Any) -> Any:
            call = original(self, query, *args, **kwargs)
            ctx = current()
            if decide(ctx) != TRACE or not isinstance(query, str) or _is_housekeeping(self, query):
                return call
            return _run(tracer, ctx, self, query, "", call)

        return method

    return make


def _statement_method(tracer: ClientTracer, prefix: str) -> Callable[[Any], Any]:
    """For prepared statements and cursors: the statement and connection are on ``self``."""

    def make(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = original(self, *args, **kwargs)
            ctx = current()
            if decide(ctx) != TRACE:
                return call
            return _run(tracer, ctx, self._connection, self._query or "", prefix, call)

        return method

    return make


def _patch(tracer: ClientTracer, patches: Patches) -> None:
    import asyncpg.connection
    import asyncpg.cursor
    import asyncpg.prepared_stmt

    for name in _CONNECTION_METHODS:
        patches.wrap(asyncpg.connection.Connection, name, _connection_method(tracer))
    for name in _PREPARED_METHODS:
        if hasattr(asyncpg.prepared_stmt.PreparedStatement, name):
            patches.wrap(asyncpg.prepared_stmt.PreparedStatement, name, _statement_method(tracer, ""))
    for name in _CURSOR_METHODS:
        patches.wrap(asyncpg.cursor.Cursor, name, _statement_method(tracer, "CURSOR: "))
    patches.wrap(asyncpg.cursor.CursorIterator, "__anext__", _statement_method(tracer, "CURSOR: "))


_HOOK = LeanHook("pulsetrace.instrumentation.clients.asyncpg", _patch)
instrument = _HOOK.instrument
uninstrument = _HOOK.uninstrument
is_instrumented = _HOOK.is_instrumented
