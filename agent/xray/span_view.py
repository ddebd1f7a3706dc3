"""The fields of a span that the X-Ray translation reads, from an SDK span or a stored one.

:class:`SpanView` is a plain record (slots, no behaviour) so that the translation in
:mod:`pulsetrace.xray.segments` is the same code for spans leaving the process (export thread)
and spans read back from the local store (``pulsetrace servicemap``). Never does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from pulsetrace.store import StoredSpan

__all__ = ["SpanView", "view_from_readable", "view_from_stored", "xray_trace_id"]

_KINDS = ("internal", "server", "client", "producer", "consumer")
_SERVER, _CLIENT, _INTERNAL, _PRODUCER = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.PRODUCER
_ERROR = StatusCode.ERROR
#: (trace id, its hex): one tuple, replaced whole, so threads sharing it never see a mixed pair.
_LAST_TRACE: tuple[int, str] = (0, "0" * 32)


class SpanView:
    """The span fields translation reads, from whichever source. Ids are lowercase hex."""

    __slots__ = ("trace_id", "span_id", "parent_id", "parent_remote", "name", "kind", "start", "end", "error",
                 "status_message", "attributes", "events", "resource", "resource_key")

    def __init__(self, trace_id: str, span_id: str, parent_id: str | None, parent_remote: bool, name: str,
                 kind: str, start: float, end: float, error: bool, status_message: str | None,
                 attributes: Mapping[str, Any], events: Sequence[tuple[str, Mapping[str, Any]]],
                 resource: Mapping[str, Any], resource_key: object) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.name = name
        #: ``server``, ``client``, ``producer``, ``consumer`` or ``internal``.
        self.kind = kind
        self.start = start
        self.end = end
        self.error = error
        self.status_message = status_message
        self.attributes = attributes
        #: ``(name, attributes)`` per event.
        self.events = events
        self.resource = resource
        #: Identifies the resource for the per-resource cache (equal keys, equal resources).
        self.resource_key = resource_key


def view_from_readable(span: ReadableSpan) -> SpanView:
    try:
        # The SDK's own fields, read directly: the public properties wrap each one in a
        # Python-level call (and attributes in a fresh MappingProxy), which the X-Ray
        # encoding benchmark pays for on every span.
        ctx, parent, resource, status = span._context, span._parent, span._resource, span._status
        kind, name, attrs, events = span._kind, span._name, span._attributes, span._events
        start, end = span._start_time, span._end_time
    except AttributeError:  # a ReadableSpan look-alike
        ctx, parent, resource, status = span.context, span.parent, span.resource, span.status
        kind, name, attrs, events = span.kind, span.name, span.attributes, span.events
        start, end = span.start_time, span.end_time
    if ctx is None:
        raise ValueError("span without a context")
    global _LAST_TRACE
    trace_id = ctx.trace_id
    last = _LAST_TRACE  # spans of one trace arrive together: format its id once
    if last[0] != trace_id:
        last = _LAST_TRACE = (trace_id, f"{trace_id:032x}")
    plain = getattr(attrs, "_dict", attrs)
    # BoundedList's truthiness is a Python-level __len__; its deque's is not.
    has_events = bool(getattr(events, "_dq", events))
    start = start or 0
    return SpanView(
        last[1], f"{ctx.span_id:016x}", f"{parent.span_id:016x}" if parent is not None else None,
        parent is not None and parent.is_remote, name,
        "server" if kind is _SERVER else "client" if kind is _CLIENT else "internal" if kind is _INTERNAL else
        "producer" if kind is _PRODUCER else "consumer",
        start / 1e9, (end or start) / 1e9, status.status_code is _ERROR, status.description,
        plain if plain is not None else {}, [(e.name, e.attributes or {}) for e in events] if has_events else (),
        getattr(resource, "_attributes", None) or resource.attributes, id(resource),
    )


def view_from_stored(span: StoredSpan) -> SpanView:
    events = [(str(e.get("name", "")), e.get("attributes") or {}) for e in span.events]
    # Stored spans with the same resource share one dict (pulsetrace.store.rows): its id() is the key,
    # and the translator checks it is the same object, so a reused id cannot match another resource.
    key = id(span.resource)
    return SpanView(span.trace_id, span.span_id, span.parent_span_id, span.remote_parent, span.name,
                    span.kind if span.kind in _KINDS else "internal", span.start, span.end,
                    span.status == "error", span.status_message, span.attributes, events, span.resource, key)


def xray_trace_id(trace_id_hex: str) -> str:
    """``5f84c7a1…`` (32 hex) → ``1-5f84c7a1-…`` (the first 8 hex digits are the epoch)."""
    return f"1-{trace_id_hex[:8]}-{trace_id_hex[8:]}"
