"""What every lean client hook shares: reversible patches, the per-call decision, span endings.

The decision (:func:`decide`) is the hot path of every instrumented call, so it is a
few dictionary reads:

- instrumentation suppressed in this context (the OpenTelemetry suppression keys:
  the agent's own background I/O, an instrumented library calling another) →
  :data:`SKIP`: call the library as if nothing were installed;
- the current span belongs to a trace that is neither sampled nor recorded →
  :data:`PROPAGATE`: no span object, no attribute work, no clock read; HTTP hooks
  only inject the context so the next service follows the decision;
- otherwise → :data:`TRACE`: a client span through the tracer (the sampler decides
  for a call without a parent, as it would for any span).

Never raises into the host application from its own code: a failure while building
attributes costs the span, never the call. Never imports an instrumented library.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from pulsetrace.instrumentation.clients.light import light_child, sink_for
from pulsetrace.instrumentation.clients.semconv import http_response_attributes

__all__ = ["ClientTracer", "PROPAGATE", "SKIP", "TRACE", "LeanHook", "Patches", "await_in_span", "current", "decide", "end_http_span",
           "fail_span", "inject", "run_in_span",
           "start_client_span"]

_log = logging.getLogger("pulsetrace.instrumentation")

SKIP: Final = 0
PROPAGATE: Final = 1
TRACE: Final = 2

#: The key older instrumentations set as a plain string (opentelemetry-instrumentation still honours it).
_SUPPRESS_PLAIN: Final = "suppress_instrumentation"
_CLIENT = SpanKind.CLIENT
_get_current = otel_context.get_current
_get_current_span = trace.get_current_span


def decide(ctx: otel_context.Context, http: bool = False) -> int:
    """What to do for one call made in ``ctx``: :data:`SKIP`, :data:`PROPAGATE` or :data:`TRACE`."""
    if ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_PLAIN):
        return SKIP
    if http and ctx.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY):
        return SKIP
    parent = _get_current_span(ctx)
    if parent.get_span_context().is_valid and not parent.is_recording():
        return PROPAGATE
    return TRACE


class ClientTracer:
    """Starts the lean hooks' client spans: an SDK span, or a light one in a recorded, unsampled trace.

    See :mod:`pulsetrace.instrumentation.clients.light`.
    """

    def __init__(self, tracer: Tracer, provider: TracerProvider | None, scope_name: str) -> None:
        self.tracer = tracer
        self._sink = sink_for(provider if provider is not None else trace.get_tracer_provider(), scope_name)

    def start(self, name: str, ctx: otel_context.Context, attributes: Mapping[str, Any]) -> Span:
        """A client span child of the current span in ``ctx`` (not made current)."""
        light = light_child(self._sink, name, _get_current_span(ctx), attributes, _CLIENT)
        if light is not None:
            return light
        return self.tracer.start_span(name, ctx, _CLIENT, attributes, record_exception=False,
                                      set_status_on_exception=False)


def start_client_span(tracer: ClientTracer, name: str, ctx: otel_context.Context,
                      attributes: Mapping[str, Any]) -> Span:
    """A client span child of ``ctx`` (not made current: the caller decides whether it must be).

    An SDK span, or a light one in a trace that is recorded but not sampled.
    """
    return tracer.start(name, ctx, attributes)


def inject(carrier: Any, ctx: otel_context.Context | None = None) -> None:
    """Write the trace context headers into ``carrier`` (a mutable mapping). Never raises."""
    try:
        propagate.inject(carrier, ctx)
    except Exception:
        _log.debug("could not inject the trace context", exc_info=True)


def fail_span(span: Span, exc: BaseException) -> None:
    """End ``span`` for a call that raised ``exc``, the way contrib's instrumentations do.

    An ``exception`` event, status ``ERROR`` with ``Type: message``, ``error.type``.
    """
    try:
        if span.is_recording():
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    finally:
        span.end()



class Patches:
    """Attributes replaced on classes or modules, each with its undo.

    Replacing is idempotent per (owner, name); :meth:`undo` restores the original
    object, or removes the attribute when it was inherited rather than the owner's own.
    """

    def __init__(self) -> None:
        self._done: dict[tuple[int, str], tuple[Any, str, Any, bool]] = {}

    def wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``owner.name`` by ``make(original)`` unless this object already did."""
        key = (id(owner), name)
        if key in self._done:
            return
        own = name in vars(owner)
        original = vars(owner)[name] if own else getattr(owner, name)
        replacement = make(getattr(owner, name))
        try:
            replacement.__wrapped__ = getattr(owner, name)
            replacement.__pulsetrace_lean__ = True
        except (AttributeError, TypeError):
            pass
        setattr(owner, name, replacement)
        self._done[key] = (owner, name, original, own)

    def undo(self) -> None:
        for owner, name, original, own in reversed(list(self._done.values())):
            try:
                if own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)
            except Exception:
                _log.debug("could not undo the patch of %r.%s", owner, name, exc_info=True)
        self._done.clear()

    def __len__(self) -> int:
        return len(self._done)


class LeanHook:
    """One library's hook: ``patch(client_tracer, patches)`` installs it, :meth:`uninstrument` undoes it."""

    def __init__(self, scope: str, patch: Callable[[ClientTracer, Patches], None]) -> None:
        self.scope = scope
        self._patch = patch
        self._patches: Patches | None = None
        self._tracer: ClientTracer | None = None
        self._lock = threading.Lock()

    def instrument(self, provider: TracerProvider | None = None) -> None:
        """Patch the library to record spans through ``provider`` (the global one when ``None``).

        A second call while instrumented does nothing. Raises ``ImportError`` when the
        library is not installed (nothing is patched then).
        """
        with self._lock:
            if self._patches is not None:
                return
            tracer = ClientTracer(trace.get_tracer(self.scope, tracer_provider=provider), provider, self.scope)
            patches = Patches()
            try:
                self._patch(tracer, patches)
            except BaseException:
                patches.undo()
                raise
            self._patches = patches
            self._tracer = tracer

    def _tracer_for_tests(self) -> ClientTracer | None:
        """The client tracer the patches use (tests switch its light path off to compare)."""
        return self._tracer

    def uninstrument(self) -> None:
        """Restore every patched function. A no-op when not instrumented."""
        with self._lock:
            patches, self._patches = self._patches, None
        if patches is not None:
            patches.undo()

    def is_instrumented(self) -> bool:
        return self._patches is not None


def current() -> otel_context.Context:
    """The current context (one function call; the hooks bind it locally)."""
    return _get_current()


def end_http_span(span: Span, status_code: int) -> None:
    """End an HTTP client span with its response's status (``ERROR`` for 4xx and 5xx, as contrib does)."""
    try:
        if span.is_recording():
            span.set_attributes(http_response_attributes(status_code))
            if status_code >= 400:
                span.set_status(Status(StatusCode.ERROR))
    finally:
        span.end()


def run_in_span(span: Span, ok: tuple[type[BaseException], ...], call: Callable[..., Any], *args: Any,
                **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` with ``span`` ended after it; an exception of ``ok`` is not a failure."""
    try:
        result = call(*args, **kwargs)
    except ok:
        span.end()
        raise
    except BaseException as exc:
        fail_span(span, exc)
        raise
    span.end()
    return result


async def await_in_span(span: Span, ok: tuple[type[BaseException], ...], call: Any) -> Any:
    """Await the coroutine ``call`` with ``span`` ended after it; an exception of ``ok`` is not a failure."""
    try:
        result = await call
    except ok:
        span.end()
        raise
    except BaseException as exc:
        fail_span(span, exc)
        raise
    span.end()
    return result
