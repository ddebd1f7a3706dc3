"""Spans of traces that are recorded but not sampled, without an SDK span (the light keep-errors path).

With keep-errors on, a trace the sampler did not pick is still recorded (``RECORD_ONLY``) so
that its local part can be exported if it fails or is slow; most such traces are then
forgotten. For the lean hooks' client spans and the business spans in such a trace (a child
of a recorded, unsampled local span), :func:`light_child` gives a :class:`LightSpan` instead
of an SDK span: no sampler call, no span lock, no
``BoundedAttributes``, no ``on_start`` round, and at the end one ``ReadableSpan`` given to
the provider's span processors, exactly what the SDK gives them for a ``RECORD_ONLY`` span
(so the keep-errors buffer holds it and exports it only if the trace is kept). Names,
attributes, status, events and times are the ones an SDK span would have had; the limits of
the provider's ``SpanLimits`` on attribute count and length are applied at the end.

A light span can be made current: children see a recording, unsampled parent (the sampler
gives SDK children ``RECORD_ONLY``, the lean hooks light ones). Sampled traces and spans
without a parent go through the SDK tracer as before. A provider that is not the SDK's (no
span processors to hand the span to) gets SDK spans only. Never raises into the caller.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

__all__ = ["LightSink", "LightSpan", "light_child", "sink_for"]

_UNSET = Status(StatusCode.UNSET)
_get_current_span = trace.get_current_span
_time_ns = time.time_ns


class LightSink:
    """Where a light span goes when it ends: the SDK provider's processors, resource and limits."""

    __slots__ = ("processor", "resource", "scope", "ids", "max_attributes", "max_length", "max_events")

    def __init__(self, provider: Any, scope_name: str) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.processor = provider._active_span_processor
        self.resource = provider.resource
        self.ids = provider.id_generator
        self.scope = InstrumentationScope(scope_name)
        limits = provider._span_limits
        self.max_attributes: int | None = limits.max_span_attributes
        self.max_length: int | None = limits.max_span_attribute_length
        self.max_events: int | None = limits.max_events


def sink_for(provider: Any, scope_name: str) -> LightSink | None:
    """Where light spans of ``scope_name`` go for ``provider``, or ``None`` when it is not the SDK's."""
    try:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    except ImportError:
        return None
    if not isinstance(provider, SdkTracerProvider):
        return None
    try:
        return LightSink(provider, scope_name)
    except AttributeError:  # an SDK whose internals moved: use its spans
        return None


class LightSpan(Span):
    """A span of an unsampled, recorded trace: plain fields until it ends."""

    __slots__ = ("_sink", "_name", "_kind", "_context", "_parent", "_attributes", "_start", "_status", "_events",
                 "_ended")

    def __init__(self, sink: LightSink, name: str, context: SpanContext, parent: SpanContext,
                 attributes: Mapping[str, Any], kind: SpanKind) -> None:
        self._sink = sink
        self._kind = kind
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = dict(attributes)
        self._status = _UNSET
        self._events: list[Any] = []
        self._ended = False
        self._start = _time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self._attributes.update(attributes)

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        self._status = status if isinstance(status, Status) else Status(status, description)

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None,
                  timestamp: int | None = None) -> None:
        from opentelemetry.sdk.trace import Event

        if self._sink.max_events is None or len(self._events) < self._sink.max_events:
            self._events.append(Event(name, attributes, timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        pass  # client spans have no links

    def record_exception(self, exception: BaseException, attributes: Mapping[str, AttributeValue] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """The SDK's ``exception`` event, with the same attributes."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, AttributeValue] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._sink.processor.on_end(self._readable(end_time or _time_ns()))
        except Exception:  # telemetry never raises into the application
            pass

    def _readable(self, end_time: int) -> Any:
        from opentelemetry.sdk.trace import ReadableSpan

        sink = self._sink
        attrs = self._attributes
        limit = sink.max_length
        if limit is not None:
            for key, value in attrs.items():
                if type(value) is str and len(value) > limit:
                    attrs[key] = value[:limit]
        if sink.max_attributes is not None and len(attrs) > sink.max_attributes:
            attrs = dict(list(attrs.items())[:sink.max_attributes])
        return ReadableSpan(name=self._name, context=self._context, parent=self._parent, resource=sink.resource,
                            attributes=attrs, events=self._events, kind=self._kind, status=self._status,
                            start_time=self._start, end_time=end_time, instrumentation_scope=sink.scope)


def light_child(sink: LightSink | None, name: str, parent: Span, attributes: Mapping[str, Any],
                kind: SpanKind) -> LightSpan | None:
    """A light span child of ``parent`` when ``parent`` is a recording span of an unsampled trace, else ``None``."""
    if sink is None:
        return None
    pctx = parent.get_span_context()
    if not pctx.is_valid or pctx.trace_flags.sampled or not parent.is_recording():
        return None
    context = SpanContext(pctx.trace_id, sink.ids.generate_span_id(), False, pctx.trace_flags, pctx.trace_state)
    return LightSpan(sink, name, context, pctx, attributes, kind)
