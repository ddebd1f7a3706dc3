"""A real OTLP receiver on loopback for the tests: OTLP/HTTP (protobuf) and OTLP/gRPC.

Both decode what they receive with ``opentelemetry-proto``'s ``ExportTraceServiceRequest``
into plain :class:`ReceivedSpan` records, so a test asserts on what actually crossed the
wire (ids, names, attributes, resource), not on what our exporter meant to send.

Use the ``otlp_receiver`` / ``otlp_grpc_receiver`` fixtures from :mod:`tests.otlp_fixtures`::

    from tests.otlp_fixtures import otlp_receiver  # noqa: F401  (a pytest fixture)

    def test_x(otlp_receiver):
        ... point the agent at otlp_receiver.endpoint ...
        spans = otlp_receiver.wait_for_spans(3)

A receiver can be told to answer with an error status (``respond_with(503)``) to
exercise retry/failure paths.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.servers import free_port, wait_port

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from an OTLP request."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    scope: str
    links: list[dict[str, str]] = field(default_factory=list)

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", ""))


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return kv_dict(value.kvlist_value.values)
    if which == "bytes_value":
        return bytes(value.bytes_value)
    return getattr(value, which)


def kv_dict(values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in values if isinstance(kv, KeyValue)}


def decode_request(body: bytes) -> list[ReceivedSpan]:
    """Every span of one serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return decode_message(request)


def decode_message(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = kv_dict(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex() or None,
                    name=s.name,
                    kind=_KINDS.get(s.kind, str(s.kind)),
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    status=_STATUS.get(s.status.code, str(s.status.code)),
                    status_message=s.status.message,
                    attributes=kv_dict(s.attributes),
                    events=[{"name": e.name, "time_ns": e.time_unix_nano, "attributes": kv_dict(e.attributes)}
                            for e in s.events],
                    resource=resource,
                    scope=ss.scope.name,
                    links=[{"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex()} for ln in s.links],
                ))
    return out


class _Collected:
    """What a receiver has seen; shared by the HTTP and gRPC flavours."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._bodies: list[bytes] = []
        self._headers: list[dict[str, str]] = []
        self._status = 200

    def record(self, body: bytes, headers: Mapping[str, str], spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._bodies.append(body)
            self._headers.append({k.lower(): v for k, v in headers.items()})
            self._spans.extend(spans)
            self._lock.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def raw_bodies(self) -> list[bytes]:
        """The request bodies as received (after content decoding), one per export request."""
        with self._lock:
            return list(self._bodies)

    def request_headers(self) -> list[dict[str, str]]:
        """The headers of each export request (names lower-cased)."""
        with self._lock:
            return list(self._headers)

    def requests(self) -> int:
        with self._lock:
            return len(self._bodies)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``n`` spans arrived (returns what arrived, even if fewer, at the deadline)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._spans) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self._spans)

    def respond_with(self, status: int) -> None:
        """Answer subsequent requests with this HTTP status (gRPC: 200 → OK, else UNAVAILABLE)."""
        with self._lock:
            self._status = status

    def status(self) -> int:
        with self._lock:
            return self._status

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._bodies.clear()
            self._headers.clear()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        return None

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        collected = self.server.collected
        if self.path.rstrip("/") != "/v1/traces":
            self._answer(404, b"not found", "text/plain")
            return
        try:
            spans = decode_request(body)
        except Exception:
            self._answer(400, b"bad protobuf", "text/plain")
            return
        status = collected.status()
        if status == 200:
            collected.record(body, dict(self.headers.items()), spans)
            self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
        else:
            self._answer(status, b"", "application/x-protobuf")

    def _answer(self, status: int, payload: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    collected: _Collected


class OtlpReceiver(_Collected):
    """An OTLP/HTTP (protobuf) receiver on ``127.0.0.1``; ``endpoint`` is its base URL."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL, as in ``tracing.otlp.endpoint`` (the exporter appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        server = _HttpServer(("127.0.0.1", self.port), _Handler)
        server.collected = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class OtlpGrpcReceiver(_Collected):
    """An OTLP/gRPC receiver on ``127.0.0.1`` built from the proto's generated service stubs."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpGrpcReceiver:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        collected = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:  # noqa: N802
                if collected.status() != 200:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "told to fail")
                metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
                collected.record(request.SerializeToString(), metadata, decode_message(request))
                return ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc-receiver"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5).wait(5)
            self._server = None
