"""Copies of finished spans with some parts replaced, for the export-side steps.

The scrubber, the annotator, the enricher and keep-errors never change a span the
SDK handed them (other processors and exporters may hold it too): they build a
copy with new attributes, events, links, name or status and everything else the
same (identity, parent, kind, times, resource, scope). :func:`copy_span` is that
copy, in one place, and it keeps what a hand-made ``ReadableSpan(...)`` loses: how
many attributes, events and links the SDK's ``SpanLimits`` dropped, which the OTLP
encoder exports as ``dropped_*_count``. :func:`copy_event` and :func:`copy_link`
do the same for an event or a link whose attributes were replaced.

Pure functions on immutable inputs: safe from any thread, never raise for a
well-formed ``ReadableSpan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

__all__ = ["copy_event", "copy_link", "copy_span"]


class _CopiedSpan(ReadableSpan):
    """A ``ReadableSpan`` that reports the drop counts of the span it was copied from."""

    def __init__(self, span: ReadableSpan, name: str, attributes: Mapping[str, Any] | None,
                 events: Sequence[Event], links: Sequence[Link], status: Status) -> None:
        super().__init__(
            name=name, context=span.context, parent=span.parent, resource=span.resource, attributes=attributes,
            events=events, links=links, kind=span.kind, status=status, start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
        )
        self._dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


class _CopiedEvent(Event):
    def __init__(self, name: str, attributes: Mapping[str, Any] | None, timestamp: int | None,
                 dropped: int) -> None:
        super().__init__(name, attributes, timestamp)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


class _CopiedLink(Link):
    def __init__(self, link: Link, attributes: Mapping[str, Any] | None, dropped: int) -> None:
        super().__init__(link.context, attributes)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


def _dropped(obj: object, attr: str) -> int:
    value = getattr(obj, attr, 0)
    return value if isinstance(value, int) else 0


def copy_span(span: ReadableSpan, *, name: str | None = None, attributes: Mapping[str, Any] | None = None,
              events: Sequence[Event] | None = None, status: Status | None = None,
              links: Sequence[Link] | None = None) -> ReadableSpan:
    """A new ``ReadableSpan``: ``span`` with the parts given replaced (``None`` keeps the original).

    Context, parent, kind, start and end times, resource and instrumentation scope
    are the original's, and so are the counts of attributes, events and links the
    SDK dropped for its limits.
    """
    return _CopiedSpan(
        span,
        span.name if name is None else name,
        span.attributes if attributes is None else attributes,
        span.events if events is None else events,
        span.links if links is None else links,
        span.status if status is None else status,
    )


def copy_event(event: Event, *, name: str | None = None, attributes: Mapping[str, Any] | None = None) -> Event:
    """``event`` with a new name and/or attributes, same timestamp and dropped-attributes count."""
    return _CopiedEvent(event.name if name is None else name,
                        event.attributes if attributes is None else attributes,
                        event.timestamp, _dropped(event, "dropped_attributes"))


def copy_link(link: Link, *, attributes: Mapping[str, Any] | None = None) -> Link:
    """``link`` with new attributes, same context and dropped-attributes count."""
    return _CopiedLink(link, link.attributes if attributes is None else attributes,
                       _dropped(link, "dropped_attributes"))
