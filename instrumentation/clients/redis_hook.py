"""Lean client spans for redis-py, sync and asyncio: one span per command or pipeline.

Wrapped, as contrib's instrumentor does: ``Redis.execute_command``,
``Pipeline.execute``/``immediate_execute_command`` (sync and ``redis.asyncio``), and
``RedisCluster.execute_command``/``ClusterPipeline.execute`` where redis-py has them.
A command's span is named after the command (``GET``), a pipeline's after its commands
(``SET GET``); the statement is the command with every argument replaced by ``?``
(values never enter a span). In a trace that is neither sampled nor recorded nothing
is done at all. A ``WatchError`` (an optimistic transaction that lost its race) is not
a failure of the span, as in contrib.

Never raises into the application from its own code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.trace import Span

from pulsetrace.instrumentation.clients.base import (
    ClientTracer, TRACE, LeanHook, Patches, await_in_span, current, decide, run_in_span, start_client_span,
)

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_MAX_STATEMENT = 1000
_RENAMED = {"FT.SEARCH": "redis.search", "FT.CREATE": "redis.create_index"}


def _statement(args: Sequence[Any]) -> str:
    """``SET ? ?``: the command and one ``?`` per argument, at most 1000 characters."""
    if not args:
        return ""
    text = " ".join([str(args[0])] + ["?"] * (len(args) - 1))
    return text if len(text) <= _MAX_STATEMENT else text[:_MAX_STATEMENT - 3] + "..."


def _connection_attributes(client: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    attrs["db.system"] = attrs["db.system.name"] = "redis"
    if not isinstance(kwargs, dict):
        return attrs
    db = kwargs.get("db")
    attrs["db.redis.database_index"] = 0 if db is None else db
    if "path" in kwargs:
        attrs["net.peer.name"] = attrs["server.address"] = kwargs.get("path", "")
    else:
        attrs["net.peer.name"] = attrs["server.address"] = kwargs.get("host", "localhost")
        attrs["net.peer.port"] = attrs["server.port"] = kwargs.get("port", 6379)
    return attrs


def _command(client: Any, args: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    if args and args[0]:
        name = str(args[0])
        name = _RENAMED.get(name, name)
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
        name = str(kwargs.get("db") or 0)
    statement = _statement(args)
    attrs: dict[str, Any] = {"db.statement": statement, "db.query.text": statement, "db.redis.args_length": len(args)}
    return name, _connection_attributes(client, attrs)


def _pipeline(pipe: Any) -> tuple[str, dict[str, Any]]:
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is not None and hasattr(strategy, "command_queue"):
        stack = strategy.command_queue
    elif strategy is not None and hasattr(strategy, "_command_queue"):
        stack = strategy._command_queue
    elif hasattr(pipe, "command_stack"):
        stack = pipe.command_stack
    else:
        stack = pipe._command_stack
    commands = [c.args if hasattr(c, "args") else c[0] for c in stack]
    statement = "\n".join(_statement(args) for args in commands)
    name = " ".join(str(args[0]) for args in commands) or "redis"
    attrs: dict[str, Any] = {"db.statement": statement, "db.query.text": statement,
                             "db.redis.pipeline_length": len(commands)}
    return name, _connection_attributes(pipe, attrs)


def _start(tracer: ClientTracer, ctx: Any, describe: Callable[..., tuple[str, dict[str, Any]]],
           *what: Any) -> Span | None:
    try:
        name, attrs = describe(*what)
    except Exception:  # an odd command costs its span, never the call
        return None
    return start_client_span(tracer, name, ctx, attrs)


def _sync_command(tracer: ClientTracer, watch_error: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            ctx = current()
            span = _start(tracer, ctx, _command, self, args) if decide(ctx) == TRACE else None
            if span is None:
                return original(self, *args, **kwargs)
            return run_in_span(span, watch_error, original, self, *args, **kwargs)

        return execute_command

    return make


def _sync_pipeline(tracer: ClientTracer, watch_error: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
            ctx = current()
            span = _start(tracer, ctx, _pipeline, self) if decide(ctx) == TRACE else None
            if span is None:
                return original(self, *args, **kwargs)
            return run_in_span(span, watch_error, original, self, *args, **kwargs)

        return execute

    return make


def _async_command(tracer: ClientTracer, watch_error: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        # A plain function returning the library's coroutine: an untraced call costs no extra frame.
        def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = original(self, *args, **kwargs)
            ctx = current()
            span = _start(tracer, ctx, _command, self, args) if decide(ctx) == TRACE else None
            return call if span is None else await_in_span(span, watch_error, call)

        return execute_command

    return make


def _async_pipeline(tracer: ClientTracer, watch_error: tuple[type[BaseException], ...]) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
            ctx = current()
            # The stack is read before the call: executing a pipeline empties it.
            span = _start(tracer, ctx, _pipeline, self) if decide(ctx) == TRACE else None
            call = original(self, *args, **kwargs)
            return call if span is None else await_in_span(span, watch_error, call)

        return execute

    return make


def _patch(tracer: ClientTracer, patches: Patches) -> None:
    import redis
    import redis.client

    watch = (redis.WatchError,)  # an optimistic transaction that lost its race: not a failure (as contrib)
    patches.wrap(redis.client.Redis, "execute_command", _sync_command(tracer, watch))
    patches.wrap(redis.client.Pipeline, "execute", _sync_pipeline(tracer, watch))
    patches.wrap(redis.client.Pipeline, "immediate_execute_command", _sync_command(tracer, watch))
    try:
        import redis.cluster
    except ImportError:
        pass
    else:
        patches.wrap(redis.cluster.RedisCluster, "execute_command", _sync_command(tracer, watch))
        patches.wrap(redis.cluster.ClusterPipeline, "execute", _sync_pipeline(tracer, watch))
    try:
        import redis.asyncio
        import redis.asyncio.client
    except ImportError:
        return
    patches.wrap(redis.asyncio.client.Redis, "execute_command", _async_command(tracer, watch))
    patches.wrap(redis.asyncio.client.Pipeline, "execute", _async_pipeline(tracer, watch))
    patches.wrap(redis.asyncio.client.Pipeline, "immediate_execute_command", _async_command(tracer, watch))
    try:
        import redis.asyncio.cluster
    except ImportError:
        return
    patches.wrap(redis.asyncio.cluster.RedisCluster, "execute_command", _async_command(tracer, watch))
    patches.wrap(redis.asyncio.cluster.ClusterPipeline, "execute", _async_pipeline(tracer, watch))


_HOOK = LeanHook("pulsetrace.instrumentation.clients.redis", _patch)
instrument = _HOOK.instrument
uninstrument = _HOOK.uninstrument
is_instrumented = _HOOK.is_instrumented
