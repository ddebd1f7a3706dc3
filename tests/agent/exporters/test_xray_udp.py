"""The xray-udp exporter against a real UDP socket on loopback standing in for the X-Ray daemon."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from pulsetrace.validation import config_from_mapping
from pulsetrace.exporters import build_exporter
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.xray_udp import XRayUdpExporter, parse_daemon_address
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.xray.limits import MAX_DOCUMENT_BYTES
from tests.agent.xray.test_xray_corpus import make_tracer, postgres_attrs, schema_validator, shop_request
from tests.servers import free_port

HEADER = b'{"format":"json","version":1}\n'


class UdpDaemon:
    """A UDP socket on loopback that keeps every datagram it receives (the X-Ray daemon's port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for bursts of 64 KB datagrams (root may exceed rmem_max with SO_RCVBUFFORCE).
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, force if force and os.geteuid() == 0 else socket.SO_RCVBUF,
                                 16 * 1024 * 1024)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-udp-daemon", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams.append(data)

    def documents(self) -> list[dict[str, Any]]:
        out = []
        for data in list(self.datagrams):
            header, _, body = data.partition(b"\n")
            assert header + b"\n" == HEADER
            out.append(json.loads(body))
        return out

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.datagrams) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.documents()

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The documents, once no datagram has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline and seen != len(self.datagrams):
            seen = len(self.datagrams)
            time.sleep(quiet)
        return self.documents()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def daemon() -> Iterator[UdpDaemon]:
    d = UdpDaemon()
    yield d
    d.close()


def _exporter(address: str, metrics: SelfMetrics | None = None, env: dict[str, str] | None = None) -> XRayUdpExporter:
    cfg = config_from_mapping({"tracing": {"exporters": ["xray-udp"], "xray": {"daemon_address": address}}},
                              env or {})
    exporter = build_exporter("xray-udp", ExporterContext(cfg, metrics or SelfMetrics()))
    assert isinstance(exporter, XRayUdpExporter)
    return exporter


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:2000", ("127.0.0.1", 2000)),
    ("xray-daemon:2001", ("xray-daemon", 2001)),
    ("tcp:127.0.0.1:2000 udp:127.0.0.2:2001", ("127.0.0.2", 2001)),
    ("udp:10.0.0.5:2100 tcp:10.0.0.5:2000", ("10.0.0.5", 2100)),
    ("[::1]:2000", ("::1", 2000)),
])
def test_daemon_address_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_daemon_address(text) == expected


@pytest.mark.parametrize("text", ["", "127.0.0.1", "127.0.0.1:0", "tcp:1.2.3.4:2000", "a:1 b:2 c:3", "h:port"])
def test_bad_daemon_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_daemon_address(text)


def test_each_document_goes_in_one_datagram_behind_the_daemon_header(daemon: UdpDaemon) -> None:
    tracer, collect = make_tracer()
    shop_request(tracer)
    shop_request(tracer, status=502, gateway_status=500)
    metrics = SelfMetrics()
    exporter = _exporter(daemon.address, metrics)
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    docs = daemon.wait_for(2)
    assert len(docs) == 2 and len(daemon.datagrams) == 2
    validator = schema_validator()
    for doc in docs:
        validator.validate(doc)
    assert sorted(d.get("fault", False) for d in docs) == [False, True]
    assert metrics.counter("xray_documents_sent", "udp") == 2
    exporter.shutdown(1)


def test_aws_xray_daemon_address_from_the_environment_wins(daemon: UdpDaemon) -> None:
    exporter = _exporter("127.0.0.1:1", env={"AWS_XRAY_DAEMON_ADDRESS": f"tcp:127.0.0.1:9 udp:{daemon.address}"})
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        pass
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    assert len(daemon.wait_for(1)) == 1
    exporter.shutdown(1)


def test_a_trace_over_64kb_arrives_whole_in_several_datagrams(daemon: UdpDaemon) -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        for i in range(500):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                              attributes={**postgres_attrs(), "row": "r" * 300, "i": i}):
                pass
    exporter = _exporter(daemon.address)
    texts = exporter.translator.encode_spans(collect.spans)
    assert sum(len(t.encode()) for t in texts) > 64 * 1024 and len(texts) > 1
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    docs = daemon.wait_for(len(texts))
    assert all(len(d) <= MAX_DOCUMENT_BYTES + len(HEADER) for d in daemon.datagrams)

    def ids(doc: dict[str, Any]) -> set[str]:
        return {doc["id"], *(i for s in doc.get("subsegments", ()) for i in ids(s))}

    received = set().union(*(ids(d) for d in docs))
    assert received == {f"{s.context.span_id:016x}" for s in collect.spans}
    exporter.shutdown(1)


def test_a_closed_port_is_counted_never_raised() -> None:
    port = free_port()  # nothing listens: the kernel answers with ICMP port unreachable
    metrics = SelfMetrics()
    exporter = _exporter(f"127.0.0.1:{port}", metrics)
    tracer, collect = make_tracer()
    for _ in range(3):
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
            pass
    outcomes = []
    for span in collect.spans:
        outcomes.append(exporter.export([span]))
        time.sleep(0.05)
    assert metrics.counter("xray_send_errors", "refused") >= 1
    assert ExportOutcome.FAILURE in outcomes
    exporter.shutdown(1)


def test_an_unresolvable_daemon_host_is_counted_never_raised() -> None:
    metrics = SelfMetrics()
    exporter = _exporter("no-such-host.invalid:2000", metrics)
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        pass
    assert exporter.export(collect.spans) is ExportOutcome.FAILURE
    assert metrics.counter("xray_send_errors", "address") == 1


def test_after_fork_the_child_opens_its_own_socket(daemon: UdpDaemon) -> None:
    exporter = _exporter(daemon.address)
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        pass
    exporter.export(collect.spans)
    parent_socket = exporter._sock
    exporter.after_fork()
    assert exporter._sock is None
    exporter.export(collect.spans)
    assert exporter._sock is not None and exporter._sock is not parent_socket
    assert len(daemon.wait_for(2)) == 2
    assert parent_socket is not None
    parent_socket.close()
    exporter.shutdown(1)
