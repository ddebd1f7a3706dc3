"""The agent's own background work is never traced: one place that says so.

Every thread the agent starts (span export, the metrics flusher and its PutMetricData
calls, the health loop and its I/O pool, resource detection, shutdown helpers) is started
with :func:`start_worker`, whose target runs entirely with OpenTelemetry instrumentation
suppressed, the way the SDK's ``BatchSpanProcessor`` suppresses it around every export.
Instrumented libraries the agent uses for its own I/O (botocore for PutMetricData and
PutTraceSegments, requests/urllib3 for OTLP, asyncpg/redis/httpx for the probes) then
record nothing: the agent's I/O never shows up as spans, on the service map or in the
request metrics.

Two context keys are set (both honoured by the contrib instrumentations):
``opentelemetry.context._SUPPRESS_INSTRUMENTATION_KEY`` (plus its plain-string
predecessor ``"suppress_instrumentation"`` that older instrumentations read) and
``_SUPPRESS_HTTP_INSTRUMENTATION_KEY``, which HTTP client instrumentations check
(``is_http_instrumentation_enabled``).

Suppression lives in the thread's ``contextvars`` context, so it reaches:

- everything the worker's target calls, directly;
- asyncio tasks and callbacks created on that thread (a task copies the current context
  when it is created), so a loop run by a worker suppresses its whole tree of tasks;

and it does not reach, by itself:

- another thread (a new ``threading.Thread`` starts with an empty context): start it with
  :func:`start_worker` too;
- ``loop.run_in_executor`` (the executor does not copy the context): give the loop an
  :func:`executor` made here, whose threads suppress from their first instruction;
- a callback handed to a loop from a foreign thread (``run_coroutine_threadsafe``):
  it carries that thread's context; wrap its body in :func:`suppressed`.

This is a bottom-layer module: it imports only the standard library and OpenTelemetry's API.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.context.context import Context

#: The pre-1.x plain-string key, still read by some instrumentations (upstream sets it too).
_SUPPRESS_INSTRUMENTATION_KEY_PLAIN = "suppress_instrumentation"
_KEYS = (_SUPPRESS_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY_PLAIN, _SUPPRESS_HTTP_INSTRUMENTATION_KEY)


def suppressed_context(parent: Context | None = None) -> Context:
    """``parent`` (default: the current context) with every suppression key set."""
    ctx = otel_context.get_current() if parent is None else parent
    for key in _KEYS:
        ctx = otel_context.set_value(key, True, ctx)
    return ctx


def is_suppressed() -> bool:
    """Whether instrumentation is suppressed in the current context."""
    return bool(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
                or otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN))


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Suppress instrumentation in this block (and in the asyncio tasks created inside it)."""
    token = otel_context.attach(suppressed_context())
    try:
        yield
    finally:
        otel_context.detach(token)


def suppress_current_thread() -> None:
    """Suppress instrumentation on the calling thread from now on, for good.

    Only for a thread the agent owns from its first instruction (an executor's initializer).
    """
    otel_context.attach(suppressed_context())


def run_suppressed(target: Callable[..., Any], *args: Any) -> Any:
    """``target(*args)`` with instrumentation suppressed."""
    with suppressed():
        return target(*args)


def start_worker(name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Start a daemon thread ``name`` running ``target(*args)`` with instrumentation suppressed; returns it."""
    thread = threading.Thread(target=run_suppressed, args=(target, *args), name=name, daemon=True)
    thread.start()
    return thread


def executor(max_workers: int | None = None, thread_name_prefix: str = "") -> concurrent.futures.ThreadPoolExecutor:
    """A thread pool whose threads run with instrumentation suppressed (for ``run_in_executor``)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix,
                                                 initializer=suppress_current_thread)
