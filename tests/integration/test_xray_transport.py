"""X-Ray transports against moto server: xray-api's PutTraceSegments, and xray-udp datagrams relayed into it.

moto stores the documents PutTraceSegments accepts and BatchGetTraces returns them,
so what is asserted is what X-Ray would hold. moto never throttles, so the retry
tests put a small HTTP proxy of our own in front of it that answers the way X-Ray
does when it throttles (429 ThrottledException, or UnprocessedTraceSegments) and
forwards everything else to moto unchanged: that part cannot be had from a real
peer here.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from pulsetrace.validation import config_from_mapping
from pulsetrace.exporters import build_exporter
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.xray_api import XRayApiExporter
from pulsetrace.exporters.xray_udp import XRayUdpExporter
from pulsetrace.selfmetrics import SelfMetrics
from tests.agent.xray.test_xray_corpus import make_tracer, postgres_attrs, schema_validator, shop_request
from tests.agent.exporters.test_xray_udp import HEADER, UdpDaemon
from tests.servers import MotoServer, free_port


def xray_client(endpoint: str) -> Any:
    return boto3.client("xray", region_name="us-east-1", endpoint_url=endpoint)


def stored_documents(client: Any, trace_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every document X-Ray (moto) holds for ``trace_ids``, via BatchGetTraces (5 ids per call)."""
    docs: list[dict[str, Any]] = []
    ids = sorted(set(trace_ids))
    for i in range(0, len(ids), 5):
        page = client.batch_get_traces(TraceIds=ids[i:i + 5])
        for trace in page["Traces"]:
            docs.extend(json.loads(seg["Document"]) for seg in trace["Segments"])
    return docs


def relay(datagrams: Sequence[bytes], client: Any) -> int:
    """What the X-Ray daemon does: strip the header, PutTraceSegments in batches of 50."""
    documents = []
    for data in datagrams:
        header, _, body = data.partition(b"\n")
        assert header + b"\n" == HEADER
        documents.append(body.decode("utf-8"))
    for i in range(0, len(documents), 50):
        result = client.put_trace_segments(TraceSegmentDocuments=documents[i:i + 50])
        assert result["UnprocessedTraceSegments"] == []
    return len(documents)


def span_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    return {f"{s.context.span_id:016x}" for s in spans if s.context is not None}


def trace_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    return {f"1-{s.context.trace_id:032x}"[:10] + "-" + f"{s.context.trace_id:032x}"[8:]
            for s in spans if s.context is not None}


def ids_in(docs: Sequence[dict[str, Any]]) -> list[str]:
    out: list[str] = []

    def walk(doc: dict[str, Any]) -> None:
        out.append(doc["id"])
        for sub in doc.get("subsegments", ()):
            walk(sub)

    for doc in docs:
        walk(doc)
    return out


def _api_exporter(endpoint: str, metrics: SelfMetrics, **kwargs: Any) -> XRayApiExporter:
    cfg = config_from_mapping({"tracing": {"exporters": ["xray-api"],
                                           "xray": {"region": "us-east-1", "endpoint_url": endpoint}}}, {})
    return XRayApiExporter(ExporterContext(cfg, metrics), **kwargs)


def _big_trace() -> list[ReadableSpan]:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        for i in range(400):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                              attributes={**postgres_attrs(), "row": "r" * 300, "i": i}):
                pass
    return collect.spans


def test_api_exporter_documents_come_back_from_batch_get_traces(aws_env: dict[str, str],
                                                               moto_server: MotoServer) -> None:
    tracer, collect = make_tracer()
    for i in range(3):
        shop_request(tracer, status=502 if i == 2 else 200, gateway_status=500 if i == 2 else 200)
    metrics = SelfMetrics()
    cfg = config_from_mapping({"tracing": {"exporters": ["xray-api"]}}, dict(aws_env))
    assert cfg.tracing.xray.endpoint_url == moto_server.url  # AWS_ENDPOINT_URL honoured
    exporter = build_exporter("xray-api", ExporterContext(cfg, metrics))
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    docs = stored_documents(xray_client(moto_server.url), trace_ids(collect.spans))
    assert sorted(ids_in(docs)) == sorted(span_ids(collect.spans))
    validator = schema_validator()
    for doc in docs:
        validator.validate(doc)
    assert metrics.counter("xray_documents_sent", "api") == 3
    exporter.shutdown(1)


def test_a_trace_over_64kb_sent_through_the_api_reassembles_whole(aws_env: dict[str, str],
                                                                 moto_server: MotoServer) -> None:
    spans = _big_trace()
    exporter = _api_exporter(moto_server.url, SelfMetrics())
    assert exporter.export(spans) is ExportOutcome.SUCCESS
    docs = stored_documents(xray_client(moto_server.url), trace_ids(spans))
    assert len(docs) > 1
    assert sorted(ids_in(docs)) == sorted(span_ids(spans))
    exporter.shutdown(1)


def test_udp_datagrams_relayed_into_put_trace_segments_come_back_whole(aws_env: dict[str, str],
                                                                       moto_server: MotoServer) -> None:
    tracer, collect = make_tracer()
    shop_request(tracer)
    spans = [*collect.spans, *_big_trace()]
    daemon = UdpDaemon()
    try:
        cfg = config_from_mapping({"tracing": {"exporters": ["xray-udp"],
                                               "xray": {"daemon_address": daemon.address}}}, {})
        exporter = XRayUdpExporter(ExporterContext(cfg, SelfMetrics()))
        expected = len(exporter.translator.encode_spans(spans))
        assert exporter.export(spans) is ExportOutcome.SUCCESS
        daemon.wait_for(expected)
        assert len(daemon.datagrams) == expected
        client = xray_client(moto_server.url)
        relay(daemon.datagrams, client)
        docs = stored_documents(client, trace_ids(spans))
        assert sorted(ids_in(docs)) == sorted(span_ids(spans))
        exporter.shutdown(1)
    finally:
        daemon.close()


class ThrottlingXRay:
    """X-Ray's throttling behaviour in front of moto: the first ``throttle`` calls get 429
    ThrottledException; the next call has its first document reported unprocessed (and not
    stored); every other call is forwarded to moto as it is."""

    def __init__(self, upstream: str, throttle: int = 2, unprocessed_code: str = "ThrottledException") -> None:
        self.upstream = upstream
        self.throttle = throttle
        self.unprocessed_code = unprocessed_code
        self.calls: list[int] = []  # documents per call
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, payload = proxy.handle(self.path, body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 429:
                    self.send_header("x-amzn-ErrorType", "ThrottledException")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-xray-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        req = urllib.request.Request(self.upstream + path, data=body, method="POST",
                                     headers={k: v for k, v in headers.items()
                                              if k.lower() not in ("host", "content-length")})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())

    def handle(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = json.loads(body)
        docs = request.get("TraceSegmentDocuments", [])
        with self.lock:
            self.calls.append(len(docs))
            n = len(self.calls)
        if n <= self.throttle:
            return 429, json.dumps({"__type": "ThrottledException", "message": "Rate exceeded"}).encode()
        if n == self.throttle + 1 and len(docs) > 1:
            first, rest = docs[0], docs[1:]
            answer = json.loads(self.forward(path, json.dumps({"TraceSegmentDocuments": rest}).encode(), headers))
            answer.setdefault("UnprocessedTraceSegments", []).append(
                {"Id": json.loads(first)["id"], "ErrorCode": self.unprocessed_code, "Message": "try again"})
            return 200, json.dumps(answer).encode()
        return 200, self.forward(path, body, headers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def throttling(moto_server: MotoServer) -> Iterator[ThrottlingXRay]:
    proxy = ThrottlingXRay(moto_server.url)
    yield proxy
    proxy.close()


def test_throttling_and_unprocessed_segments_are_retried_until_every_document_lands_once(
        aws_env: dict[str, str], moto_server: MotoServer, throttling: ThrottlingXRay) -> None:
    tracer, collect = make_tracer()
    for _ in range(4):
        shop_request(tracer)
    metrics = SelfMetrics()
    exporter = _api_exporter(throttling.url, metrics, base_backoff_s=0.01)
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    # two throttled calls, the call with one unprocessed document, the retry of that document
    assert throttling.calls == [4, 4, 4, 1]
    docs = stored_documents(xray_client(moto_server.url), trace_ids(collect.spans))
    assert sorted(ids_in(docs)) == sorted(span_ids(collect.spans))  # each exactly once
    assert metrics.counter("xray_api_retries", "throttled") == 2
    assert metrics.counter("xray_api_retries", "unprocessed") == 1
    assert metrics.counter("xray_documents_sent", "api") == 4
    exporter.shutdown(1)


def test_documents_refused_for_good_are_counted_not_retried(aws_env: dict[str, str], moto_server: MotoServer) -> None:
    proxy = ThrottlingXRay(moto_server.url, throttle=0, unprocessed_code="InvalidTraceId")
    try:
        tracer, collect = make_tracer()
        for _ in range(3):
            shop_request(tracer)
        metrics = SelfMetrics()
        exporter = _api_exporter(proxy.url, metrics, base_backoff_s=0.01)
        assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
        assert proxy.calls == [3]
        assert metrics.counter("xray_send_errors", "unprocessed:InvalidTraceId") == 1
        assert metrics.counter("xray_documents_sent", "api") == 2
        exporter.shutdown(1)
    finally:
        proxy.close()


def test_more_than_50_documents_go_in_several_calls(aws_env: dict[str, str], moto_server: MotoServer) -> None:
    proxy = ThrottlingXRay(moto_server.url, throttle=0)
    proxy.calls.append(0)  # skip the "unprocessed" step: forward every call as it is
    try:
        tracer, collect = make_tracer()
        for _ in range(120):
            with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER):
                pass
        exporter = _api_exporter(proxy.url, SelfMetrics())
        assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
        assert proxy.calls[1:] == [50, 50, 20]
        exporter.shutdown(1)
    finally:
        proxy.close()


def test_an_unreachable_api_gives_up_within_its_deadline_without_raising(aws_env: dict[str, str]) -> None:
    metrics = SelfMetrics()
    exporter = _api_exporter(f"http://127.0.0.1:{free_port()}", metrics, base_backoff_s=0.05, deadline_s=2.0)
    tracer, collect = make_tracer()
    shop_request(tracer)
    started = time.monotonic()
    assert exporter.export(collect.spans) is ExportOutcome.FAILURE
    assert time.monotonic() - started < 10.0
    assert metrics.counter("xray_api_retries", "connection") >= 1
    assert metrics.counter("xray_send_errors") >= 1
    exporter.shutdown(1)


def test_shutdown_cuts_a_backoff_short(aws_env: dict[str, str], moto_server: MotoServer) -> None:
    proxy = ThrottlingXRay(moto_server.url, throttle=100)
    try:
        metrics = SelfMetrics()
        exporter = _api_exporter(proxy.url, metrics, base_backoff_s=5.0, max_backoff_s=5.0, max_attempts=10,
                                 deadline_s=60.0)
        tracer, collect = make_tracer()
        shop_request(tracer)
        outcome: list[ExportOutcome] = []
        worker = threading.Thread(target=lambda: outcome.append(exporter.export(collect.spans)))
        started = time.monotonic()
        worker.start()
        time.sleep(0.3)
        exporter.shutdown(1)
        worker.join(10)
        assert not worker.is_alive() and outcome == [ExportOutcome.FAILURE]
        assert time.monotonic() - started < 5.0
    finally:
        proxy.close()
