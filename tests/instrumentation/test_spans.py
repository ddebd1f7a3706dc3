"""copy_span: the one way the export-side steps copy a finished span, drop counts included."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from pulsetrace.validation import config_from_mapping
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.instrumentation import pii
from pulsetrace.instrumentation.keep_errors import KEPT_BY_ATTR, with_attributes
from pulsetrace.instrumentation.pii import PiiScrubber, build_scrubber
from pulsetrace.instrumentation.spans import copy_event, copy_link, copy_span

TIGHT = SpanLimits(max_span_attributes=3, max_events=2, max_links=1, max_event_attributes=1, max_link_attributes=1)


def finished(limits: SpanLimits | None = None, *, n_attrs: int = 5, n_events: int = 4, n_links: int = 2) -> ReadableSpan:
    provider = TracerProvider(shutdown_on_exit=False, span_limits=limits or SpanLimits())
    tracer = provider.get_tracer("t", "1.0")
    others = []
    for i in range(n_links):
        other = tracer.start_span(f"other-{i}")
        other.end()
        others.append(Link(other.get_span_context(), {"l1": "mail bob@example.com", "l2": 2}))
    span = tracer.start_span("op", kind=SpanKind.SERVER, links=others,
                             attributes={f"a{i}": f"v{i} bob@example.com" for i in range(n_attrs)})
    for i in range(n_events):
        span.add_event(f"e{i}", {"detail": "mail bob@example.com", "n": i})
    span.set_status(Status(StatusCode.ERROR, "failed for bob@example.com"))
    span.end()
    return span  # type: ignore[return-value]


def identity(span: ReadableSpan) -> tuple[object, ...]:
    return (span.context, span.parent, span.kind, span.start_time, span.end_time, span.resource,
            span.instrumentation_scope)


def test_a_copy_with_nothing_replaced_is_the_same_span() -> None:
    span = finished()
    copy = copy_span(span)
    assert copy is not span
    assert identity(copy) == identity(span)
    assert (copy.name, dict(copy.attributes or {}), copy.events, copy.links, copy.status) == \
        (span.name, dict(span.attributes or {}), span.events, span.links, span.status)


def test_each_part_given_replaces_only_that_part() -> None:
    span = finished()
    event = Event("new", {"k": "v"}, 1)
    status = Status(StatusCode.OK)
    copy = copy_span(span, name="renamed", attributes={"only": 1}, events=[event], status=status, links=[])
    assert identity(copy) == identity(span)
    assert copy.name == "renamed" and dict(copy.attributes or {}) == {"only": 1}
    assert copy.events == (event,) and copy.status is status and copy.links == ()


def test_the_sdk_drop_counts_survive_the_copy_and_reach_the_otlp_encoding() -> None:
    span = finished(TIGHT)
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (2, 2, 1)
    copy = copy_span(span, attributes={"a0": "x"})
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (2, 2, 1)
    event = copy_event(span.events[0], attributes={"detail": "x"})
    link = copy_link(span.links[0], attributes={"l1": "x"})
    assert event.dropped_attributes == span.events[0].dropped_attributes == 1
    assert link.dropped_attributes == span.links[0].dropped_attributes == 1
    assert event.timestamp == span.events[0].timestamp and link.context == span.links[0].context
    proto = encode_spans([copy_span(copy, events=[event], links=[link])])
    encoded = proto.resource_spans[0].scope_spans[0].spans[0]
    assert (encoded.dropped_attributes_count, encoded.dropped_events_count, encoded.dropped_links_count) == (2, 2, 1)
    assert encoded.events[0].dropped_attributes_count == 1 and encoded.links[0].dropped_attributes_count == 1


@pytest.mark.parametrize("limits", [None, TIGHT], ids=["no limits", "tight limits"])
def test_the_scrubber_keeps_drop_counts_and_scrubs_every_part(limits: SpanLimits | None) -> None:
    span = finished(limits)
    out = PiiScrubber(metrics=SelfMetrics()).scrub(span)
    assert out is not span and identity(out) == identity(span)
    assert (out.dropped_attributes, out.dropped_events, out.dropped_links) == \
        (span.dropped_attributes, span.dropped_events, span.dropped_links)
    assert [e.dropped_attributes for e in out.events] == [e.dropped_attributes for e in span.events]
    text = repr((out.name, dict(out.attributes or {}), [dict(e.attributes or {}) for e in out.events],
                 [dict(lk.attributes or {}) for lk in out.links], out.status.description))
    assert "bob@" not in text


@pytest.mark.parametrize("limits", [None, TIGHT], ids=["no limits", "tight limits"])
def test_keep_errors_marking_keeps_drop_counts(limits: SpanLimits | None) -> None:
    span = finished(limits)
    out = with_attributes(span, {KEPT_BY_ATTR: "error"})
    assert (out.attributes or {})[KEPT_BY_ATTR] == "error"  # added even when the span is at its attribute cap
    assert (out.dropped_attributes, out.dropped_events, out.dropped_links) == \
        (span.dropped_attributes, span.dropped_events, span.dropped_links)
    assert identity(out) == identity(span) and out.events == span.events


@pytest.mark.parametrize("module", ["pulsetrace.instrumentation.annotations", "pulsetrace.instrumentation.enrich",
                                    "pulsetrace.instrumentation.keep_errors", "pulsetrace.instrumentation.pii"])
def test_export_steps_copy_spans_only_through_copy_span(module: str) -> None:
    source = inspect.getsource(importlib.import_module(module))
    assert "ReadableSpan(" not in source and "Event(" not in source and "Link(" not in source


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ReadableSpan]]:
    made: list[ReadableSpan] = []

    def counting(span: ReadableSpan, **kwargs: object) -> ReadableSpan:
        out = copy_span(span, **kwargs)  # type: ignore[arg-type]
        made.append(out)
        return out

    monkeypatch.setattr(pii, "copy_span", counting)
    yield made


def test_the_export_transform_makes_one_copy_of_a_span_it_changes_and_none_of_a_clean_one(
        copies: list[ReadableSpan]) -> None:
    cfg = config_from_mapping({"tracing": {"business": {"annotations": ["school.id"]}}}, env={})
    transform = build_scrubber(cfg, SelfMetrics())
    assert transform is not None
    transform(finished())
    assert len(copies) == 1
    provider = TracerProvider(shutdown_on_exit=False)
    clean = provider.get_tracer("t").start_span("GET /health", attributes={"http.route": "/health"})
    clean.end()
    assert transform(clean) is clean  # type: ignore[arg-type,comparison-overlap]
    assert len(copies) == 1
