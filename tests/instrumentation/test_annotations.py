"""X-Ray annotations: keys listed the way the collector's awsxray exporter reads them, within X-Ray's limits."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from pulsetrace.validation import config_from_mapping
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.instrumentation.annotations import (
    ANNOTATIONS_ATTR,
    MAX_VALUE_CHARS,
    Annotator,
    annotation_key,
    annotation_value,
    build_annotator,
    merge_index_keys,
)
from pulsetrace.instrumentation.pii import build_scrubber


def annotated(s: ReadableSpan) -> tuple[str, ...]:
    keys = (s.attributes or {}).get(ANNOTATIONS_ATTR, ())
    assert isinstance(keys, tuple)
    return keys


def span(attributes: dict[str, object], name: str = "op", trace_parent: object = None) -> ReadableSpan:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    s = tracer.start_span(name, attributes=attributes, context=trace_parent)  # type: ignore[arg-type]
    s.end()
    return s  # type: ignore[return-value]


@pytest.mark.parametrize(("key", "expected"), [
    ("payment.method", "payment_method"),
    ("school.id", "school_id"),
    ("http.response.status_code", "http_response_status_code"),
    ("tenant-name/€", "tenant_name__"),
    ("already_ok_42", "already_ok_42"),
    ("", "_"),
    ("k" * 600, "k" * 500),
])
def test_annotation_keys_are_reduced_to_alphanumerics_and_underscore(key: str, expected: str) -> None:
    assert annotation_key(key) == expected


def test_annotation_values_are_strings_numbers_or_booleans_within_1000_characters() -> None:
    assert annotation_value("upi") == "upi"
    assert annotation_value("x" * 1500) == "x" * MAX_VALUE_CHARS
    assert annotation_value(42) == 42 and annotation_value(1.5) == 1.5 and annotation_value(True) is True
    for bad in (float("nan"), float("inf"), ("a", "b"), b"bytes", None, {"a": 1}):
        assert annotation_value(bad) is None


def test_configured_keys_present_on_a_span_are_listed_for_the_collector() -> None:
    metrics = SelfMetrics()
    annotator = Annotator(["payment.method", "school.id", "absent"], metrics)
    out = annotator(span({"payment.method": "upi", "school.id": 42, "other": "x"}))
    assert out.attributes is not None
    assert out.attributes[ANNOTATIONS_ATTR] == ("payment.method", "school.id")
    assert out.attributes["payment.method"] == "upi"  # values untouched, keys as attribute names


def test_a_span_without_annotation_keys_is_returned_as_is() -> None:
    s = span({"other": 1})
    assert Annotator(["payment.method"], SelfMetrics())(s) is s


def test_index_keys_already_on_the_span_are_kept_first_and_merged() -> None:
    annotator = Annotator(["school.id"], SelfMetrics())
    out = annotator(span({"school.id": 1, "order.id": "o-1", ANNOTATIONS_ATTR: ("order.id",)}))
    assert out.attributes is not None and out.attributes[ANNOTATIONS_ATTR] == ("order.id", "school.id")
    assert merge_index_keys(("a", 1, "b"), ["b", "c"]) == ("a", "b", "c")


def test_invalid_values_are_not_listed_and_long_strings_are_cut() -> None:
    metrics = SelfMetrics()
    annotator = Annotator(["tags", "note"], metrics)
    out = annotator(span({"tags": ("a", "b"), "note": "n" * 1200}))
    assert out.attributes is not None
    assert out.attributes[ANNOTATIONS_ATTR] == ("note",)
    assert out.attributes["note"] == "n" * 1000
    assert metrics.counter("annotations_dropped", "invalid_value") == 1


def test_two_attributes_that_reduce_to_the_same_key_keep_the_first() -> None:
    out = Annotator(["a.b", "a_b"], SelfMetrics())(span({"a.b": 1, "a_b": 2}))
    assert out.attributes is not None and out.attributes[ANNOTATIONS_ATTR] == ("a.b",)


def test_at_most_50_annotation_keys_per_trace_first_come_and_overflow_counted() -> None:
    from opentelemetry import trace

    keys = [f"k{i}" for i in range(70)]
    metrics = SelfMetrics()
    annotator = Annotator(keys, metrics)
    first = span({k: i for i, k in enumerate(keys[:40])})
    assert first.context is not None
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(first.context))
    second = span({k: i for i, k in enumerate(keys[20:])}, trace_parent=ctx)  # same trace, keys 20..69
    other_trace = span({k: 1 for k in keys[60:]})
    a1, a2, a3 = annotator(first), annotator(second), annotator(other_trace)
    listed1 = list(annotated(a1))
    listed2 = list(annotated(a2))
    assert listed1 == keys[:40]
    assert listed2 == keys[20:50]  # 20..39 already used by the trace, 40..49 fill it to 50, 50..69 refused
    assert len(set(listed1) | set(listed2)) == 50
    assert metrics.counter("annotations_dropped", "limit") == 20
    assert list(annotated(a3)) == keys[60:]  # a new trace starts afresh


def test_the_export_transform_annotates_after_scrubbing() -> None:
    cfg = config_from_mapping({"tracing": {"business": {"annotations": ["user.email", "user.id"]},
                                           "pii": {"hash_keys": ["user.id"], "hash_secret": "k"}}}, env={})
    transform = build_scrubber(cfg, SelfMetrics())
    assert transform is not None
    out = transform(span({"user.email": "bob@example.com", "user.id": "u-1"}))
    assert out.attributes is not None
    assert out.attributes[ANNOTATIONS_ATTR] == ("user.email", "user.id")
    assert out.attributes["user.email"] == "[REDACTED]"
    assert str(out.attributes["user.id"]).startswith("h:")


def test_build_annotator_reads_the_configured_keys() -> None:
    cfg = config_from_mapping({"tracing": {"business": {"annotations": ["payment.method"]}}}, env={})
    assert build_annotator(cfg, SelfMetrics()).keys == ("payment.method",)


def test_a_forked_child_can_annotate_while_a_parent_thread_held_the_annotator_lock() -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    from tests.instrumentation.test_sampling_limits import hold_lock_in_a_thread, run_in_forked_child

    annotator = Annotator(["school.id"], SelfMetrics())
    parent = set_span_in_context(NonRecordingSpan(SpanContext(7, 9, False, TraceFlags(1))))
    assert ANNOTATIONS_ATTR in (annotator(span({"school.id": 1}, trace_parent=parent)).attributes or {})
    release = hold_lock_in_a_thread(annotator._lock)

    def child() -> None:
        out = annotator(span({"school.id": 42}, trace_parent=parent))
        assert (out.attributes or {})[ANNOTATIONS_ATTR] == ("school.id",)
        assert annotator._per_trace == {7: {"school_id"}}  # the parent's counts were not inherited

    try:
        assert run_in_forked_child(child) == 0
    finally:
        release()
