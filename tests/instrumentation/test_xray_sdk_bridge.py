"""The X-Ray SDK bridge in-process: the SDK's recorder API over an OpenTelemetry tracer provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aws_xray_sdk.core as xray_core
from aws_xray_sdk.core import patcher, xray_recorder
from aws_xray_sdk.core.recorder import AWSXRayRecorder
from pulsetrace.instrumentation.xray_sdk_bridge import activate


@pytest.fixture
def bridged() -> Iterator[tuple[InMemorySpanExporter, Any, list[str]]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ours = ["botocore", "httpx"]
    before = {name: AWSXRayRecorder.__dict__[name] for name in ("begin_segment", "begin_subsegment", "configure")}
    undo = activate(xray_core, provider, lambda: ours)
    try:
        yield exporter, provider.get_tracer("test"), ours
    finally:
        undo()
        assert {name: AWSXRayRecorder.__dict__[name] for name in before} == before, "undo restores the SDK"
        assert xray_core.patch is patcher.patch


def test_capture_and_in_subsegment_are_children_of_the_current_span_with_annotations_and_metadata(
        bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    exporter, tracer, _ = bridged

    segment_ids: list[str] = []

    @xray_recorder.capture("work")
    def work() -> None:
        segment_ids.append(xray_recorder.current_segment().id)  # the server span stands for the segment
        xray_recorder.put_annotation("order_id", "42")
        xray_recorder.put_annotation("bad", {"not": "indexable"})
        xray_recorder.put_metadata("payload", [1, 2], "shop")
        xray_recorder.put_metadata("plain", 3)

    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER) as root:
        work()
        with xray_recorder.in_subsegment("remote-call") as sub:
            sub.put_http_meta("url", "https://pay.example.test/charge")
            sub.apply_status_code(503)
        entity = xray_recorder.current_segment()
        assert entity.id == f"{root.get_span_context().span_id:016x}" and entity.sampled
        assert entity.trace_id == "1-" + f"{root.get_span_context().trace_id:032x}"[:8] + "-" + \
            f"{root.get_span_context().trace_id:032x}"[8:]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root_id = spans["request"].context.span_id
    assert segment_ids == [f"{root_id:016x}"]
    assert spans["work"].parent.span_id == root_id and spans["remote-call"].parent.span_id == root_id
    attrs = spans["work"].attributes
    assert attrs["order_id"] == "42" and "bad" not in attrs and list(attrs["aws.xray.annotations"]) == ["order_id"]
    assert attrs["shop.payload"] == "[1, 2]" and attrs["plain"] == 3
    assert spans["remote-call"].attributes["http.response.status_code"] == 503
    assert spans["remote-call"].status.status_code is trace.StatusCode.ERROR


def test_async_capture_nests_in_the_task(bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    exporter, tracer, _ = bridged

    @xray_recorder.capture_async("fetch")
    async def fetch() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> None:
        with tracer.start_as_current_span("request"):
            assert sum(await asyncio.gather(fetch(), fetch())) == 2

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "request")
    assert [s.parent.span_id for s in spans if s.name == "fetch"] == [root.context.span_id] * 2


def test_begin_segment_in_a_thread_starts_a_root_and_inside_a_span_borrows_it(
        bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    exporter, tracer, _ = bridged

    def job() -> None:
        segment = xray_recorder.begin_segment("job")
        with xray_recorder.in_subsegment("step"):
            pass
        assert xray_recorder.current_segment() is segment
        xray_recorder.end_segment()

    t = threading.Thread(target=job)
    t.start()
    t.join()
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
        borrowed = xray_recorder.begin_segment("middleware")
        borrowed.put_annotation("route", "/x")
        xray_recorder.end_segment()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["job"].parent is None and spans["step"].parent.span_id == spans["job"].context.span_id
    assert "middleware" not in spans, "a borrowed segment is the current span, not a new one"
    assert spans["request"].attributes["route"] == "/x"


def test_begin_segment_continues_the_trace_it_is_given(bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    exporter, _, _ = bridged
    xray_recorder.begin_segment("consumer", traceid="1-5759e988-bd862e3fe1be46a994272793",
                                parent_id="53995c3f42cd8ad8", sampling=1)
    xray_recorder.end_segment()
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert f"{span.parent.span_id:016x}" == "53995c3f42cd8ad8"


def test_without_a_span_or_with_instrumentation_suppressed_nothing_is_recorded(
        bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    exporter, tracer, _ = bridged
    with xray_recorder.in_subsegment("orphan") as sub:
        assert sub.sampled is False
        sub.put_annotation("k", "v")   # harmless
    assert xray_recorder.current_segment() is None
    with tracer.start_as_current_span("request"), suppress_instrumentation():
        with xray_recorder.in_subsegment("agent-io"):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


def test_the_sdk_neither_samples_nor_sends_whatever_it_is_configured_with(
        bridged: tuple[InMemorySpanExporter, Any, list[str]]) -> None:
    xray_recorder.configure(sampling=True, daemon_address="127.0.0.1:2999")
    assert xray_recorder.sampling is False
    assert type(xray_recorder.emitter).__name__ == "_NullEmitter"
    other = AWSXRayRecorder()
    other.configure(service="x")
    assert type(other.emitter).__name__ == "_NullEmitter"


def test_patch_skips_what_pulsetrace_instruments_and_patches_the_rest(
        bridged: tuple[InMemorySpanExporter, Any, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(patcher, "_patch_module", lambda module, raise_errors=True: seen.append((module,)))
    xray_core.patch(("botocore", "boto3", "sqlite3", "httpx"))
    assert seen == [("sqlite3",)]
    seen.clear()
    xray_core.patch(("botocore",))
    assert seen == []


def test_a_failure_inside_the_bridge_gives_the_caller_an_entity_and_never_an_exception(
        bridged: tuple[InMemorySpanExporter, Any, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import Tracer

    exporter, tracer, _ = bridged

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer on fire")

    with tracer.start_as_current_span("request"):
        monkeypatch.setattr(Tracer, "start_span", broken)
        with xray_recorder.in_subsegment("work") as sub:
            assert sub.sampled is False
            sub.put_annotation("still", "fine")
        segment = xray_recorder.begin_segment("middleware-like")   # borrows: no span to start
        segment.put_http_meta("method", "GET")
        xray_recorder.end_segment()
    monkeypatch.undo()
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]
