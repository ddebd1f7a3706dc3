"""The ``otlp`` exporter against real OTLP receivers on loopback (http/protobuf and gRPC) and against dead ports."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

from pulsetrace.config.schema import Config, OtlpConfig, TracingConfig
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.otlp import OtlpExporter, RateLimitFilter, grpc_target, traces_url
from pulsetrace.tracing.pipeline import SpanPipeline
from pulsetrace.selfmetrics import SelfMetrics
from tests.agent.span_factory import make_spans, make_trace, provider
from tests.otlp_fixtures import otlp_grpc_receiver, otlp_receiver  # noqa: F401 - pytest fixtures
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpReceiver
from tests.servers import free_port


def otlp(endpoint: str, protocol: str = "http/protobuf", timeout: float = 2.0,
         headers: dict[str, str] | None = None, metrics: SelfMetrics | None = None) -> OtlpExporter:
    cfg = Config(tracing=TracingConfig(exporters=["otlp"], otlp=OtlpConfig(
        endpoint=endpoint, protocol=protocol, timeout=timeout, headers=headers or {})))  # type: ignore[arg-type]
    return OtlpExporter(ExporterContext(cfg, metrics or SelfMetrics()))


@pytest.fixture
def exporters() -> Iterator[list[OtlpExporter]]:
    made: list[OtlpExporter] = []
    yield made
    for e in made:
        e.shutdown(0.5)


def test_http_protobuf_spans_arrive_decoded_with_ids_parents_attributes_and_resource(
        otlp_receiver: OtlpReceiver, exporters: list[OtlpExporter]) -> None:
    spans = make_trace(children=2, error=True, root_attrs={"payment.method": "card", "amount": 12.5})
    exporter = otlp(otlp_receiver.endpoint, headers={"x-tenant": "t-1"})
    exporters.append(exporter)
    assert exporter.export(spans) is ExportOutcome.SUCCESS
    got = {s.name: s for s in otlp_receiver.wait_for_spans(3)}
    root = got["POST /orders"]
    assert root.trace_id == f"{spans[0].context.trace_id:032x}"
    assert root.parent_span_id is None and root.kind == "server" and root.status == "error"
    assert root.attributes["payment.method"] == "card" and root.attributes["amount"] == 12.5
    assert root.service == "shop-api"
    assert {got["child-0"].parent_span_id, got["child-1"].parent_span_id} == {root.span_id}
    assert got["child-0"].kind == "client" and got["child-0"].attributes["db.system"] == "postgresql"
    assert otlp_receiver.request_headers()[0]["x-tenant"] == "t-1"
    assert otlp_receiver.request_headers()[0]["content-type"] == "application/x-protobuf"


def test_endpoint_with_the_traces_path_is_not_doubled(otlp_receiver: OtlpReceiver,
                                                      exporters: list[OtlpExporter]) -> None:
    exporter = otlp(otlp_receiver.endpoint + "/v1/traces/")
    exporters.append(exporter)
    assert exporter.export(make_spans(2)) is ExportOutcome.SUCCESS
    assert len(otlp_receiver.wait_for_spans(2)) == 2


def test_through_the_pipeline_exported_spans_are_counted(otlp_receiver: OtlpReceiver) -> None:
    metrics = SelfMetrics()
    pipeline = SpanPipeline([otlp(otlp_receiver.endpoint, metrics=metrics)], metrics, batch_size=10, interval=0.02)
    prov, _ = provider()
    prov.add_span_processor(pipeline)
    tracer = prov.get_tracer("t")
    for i in range(25):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    assert pipeline.force_flush(10_000)
    assert len(otlp_receiver.spans()) == 25
    assert metrics.counter("spans_exported", "otlp") == 25
    assert otlp_receiver.requests() >= 3  # batches of 10
    pipeline.shutdown(1.0)


def test_closed_port_fails_within_the_timeout_and_is_counted(exporters: list[OtlpExporter]) -> None:
    metrics = SelfMetrics()
    exporter = otlp(f"http://127.0.0.1:{free_port()}", timeout=0.5, metrics=metrics)
    pipeline = SpanPipeline([exporter], metrics, batch_size=5, interval=0.02)
    prov, _ = provider()
    prov.add_span_processor(pipeline)
    tracer = prov.get_tracer("t")
    started = time.monotonic()
    for i in range(5):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    assert time.monotonic() - started < 0.5  # the application never waits for the dead collector
    assert pipeline.force_flush(5000)  # every batch went through the exporter (and failed, counted)
    elapsed = time.monotonic() - started
    assert metrics.counter("spans_dropped", "export_failed:otlp") == 5
    assert elapsed < 0.5 + 1.5, elapsed
    pipeline.shutdown(0.5)


def test_closed_port_direct_export_returns_failure_in_bounded_time(exporters: list[OtlpExporter]) -> None:
    exporter = otlp(f"http://127.0.0.1:{free_port()}", timeout=0.3)
    exporters.append(exporter)
    started = time.monotonic()
    assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
    assert time.monotonic() - started < 0.3 + 1.0


@pytest.mark.parametrize(("status", "bound"), [(503, 0.6 + 1.0), (400, 1.0)])
def test_error_status_from_the_collector_is_a_failure(otlp_receiver: OtlpReceiver, exporters: list[OtlpExporter],
                                                      status: int, bound: float) -> None:
    otlp_receiver.respond_with(status)
    exporter = otlp(otlp_receiver.endpoint, timeout=0.6)
    exporters.append(exporter)
    started = time.monotonic()
    assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
    assert time.monotonic() - started < bound
    otlp_receiver.respond_with(200)
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS


def test_grpc_spans_arrive_with_lowercased_metadata(otlp_grpc_receiver: OtlpGrpcReceiver,
                                                    exporters: list[OtlpExporter]) -> None:
    spans = make_trace(children=1)
    exporter = otlp(otlp_grpc_receiver.endpoint, protocol="grpc", headers={"X-Tenant": "t-2"})
    exporters.append(exporter)
    assert exporter.export(spans) is ExportOutcome.SUCCESS
    got = otlp_grpc_receiver.wait_for_spans(2)
    assert {s.name for s in got} == {"POST /orders", "child-0"}
    assert {s.trace_id for s in got} == {f"{spans[0].context.trace_id:032x}"}
    assert otlp_grpc_receiver.request_headers()[0]["x-tenant"] == "t-2"


def test_grpc_unavailable_and_closed_port_fail_in_bounded_time(otlp_grpc_receiver: OtlpGrpcReceiver,
                                                              exporters: list[OtlpExporter]) -> None:
    otlp_grpc_receiver.respond_with(503)
    exporter = otlp(otlp_grpc_receiver.endpoint, protocol="grpc", timeout=0.5)
    exporters.append(exporter)
    started = time.monotonic()
    assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
    assert time.monotonic() - started < 0.5 + 1.0
    dead = otlp(f"http://127.0.0.1:{free_port()}", protocol="grpc", timeout=0.5)
    exporters.append(dead)
    started = time.monotonic()
    assert dead.export(make_spans(1)) is ExportOutcome.FAILURE
    assert time.monotonic() - started < 0.5 + 1.0


def test_forked_child_exports_on_its_own_connection(otlp_receiver: OtlpReceiver,
                                                    exporters: list[OtlpExporter]) -> None:
    exporter = otlp(otlp_receiver.endpoint)
    exporters.append(exporter)
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS  # the parent's session is now connected
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            exporter.after_fork()
            code = 0 if exporter.export(make_spans(2, service="child")) is ExportOutcome.SUCCESS else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exporter.export(make_spans(1)) is ExportOutcome.SUCCESS
    services = [s.service for s in otlp_receiver.wait_for_spans(4)]
    assert services.count("child") == 2 and services.count("shop-api") == 2


def test_upstream_failure_logs_are_rate_limited(exporters: list[OtlpExporter],
                                                caplog: pytest.LogCaptureFixture) -> None:
    exporter = otlp(f"http://127.0.0.1:{free_port()}", timeout=0.05)
    exporters.append(exporter)
    for f in logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").filters:
        if isinstance(f, RateLimitFilter):
            f._last = -float("inf")  # a fresh minute for this test
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            assert exporter.export(make_spans(1)) is ExportOutcome.FAILURE
    upstream = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert len(upstream) == 1, [r.getMessage() for r in upstream]


@pytest.mark.parametrize(("endpoint", "target"), [
    ("http://127.0.0.1:4318", ("127.0.0.1:4317", True)),  # the default HTTP endpoint: gRPC's port meant
    ("http://collector:4317", ("collector:4317", True)),
    ("https://collector.example:443/", ("collector.example:443", False)),
    ("http://collector", ("collector:4317", True)),
    ("http://[::1]:5555/x", ("[::1]:5555", True)),
])
def test_grpc_target(endpoint: str, target: tuple[str, bool]) -> None:
    assert grpc_target(endpoint) == target


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/prefix/") == "http://c:4318/prefix/v1/traces"
