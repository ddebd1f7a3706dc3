"""Loopback peers of the end-to-end benchmark, each in its own process, on one asyncio loop.

``--role downstream``: the "inventory" HTTP service the benchmarked route calls (any
request → ``200`` with a small JSON body, keep-alive). ``--role sink``: where the
instrumented configurations send their telemetry: an OTLP/HTTP endpoint that accepts
any ``POST`` (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``) with ``200`` and an empty
protobuf answer without decoding it, and a UDP socket standing in for the X-Ray
daemon. ``GET /stats`` on the sink's HTTP port answers what it received, so the
benchmark can show that every configuration really exported.

Both are deliberately minimal HTTP/1.1 servers (no framework): the peers cost the
same for every configuration and as little CPU as possible on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

SAMPLED_POSTS = 40
_STOCK = json.dumps({"item": "book", "in_stock": 12, "warehouse": "blr-1"}).encode()


class Counters:
    def __init__(self) -> None:
        self.http_requests = 0
        self.http_bytes = 0
        self.otlp_paths: dict[str, int] = {}
        self.udp_datagrams = 0
        self.udp_bytes = 0
        #: Spans and distinct traces in the first OTLP trace exports (spans per trace, for the per-span rows).
        self.sampled_spans = 0
        self.sampled_traces: set[bytes] = set()
        self.sampled_posts = 0

    def count_spans(self, body: bytes) -> None:
        """Decode the first few ``/v1/traces`` bodies only: decoding every one would take CPU from the server."""
        if self.sampled_posts >= SAMPLED_POSTS:
            return
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:
            return
        self.sampled_posts += 1
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.sampled_spans += 1
                    self.sampled_traces.add(span.trace_id)

    def as_json(self) -> bytes:
        return json.dumps({"http_requests": self.http_requests, "http_bytes": self.http_bytes,
                           "otlp_paths": self.otlp_paths, "udp_datagrams": self.udp_datagrams,
                           "udp_bytes": self.udp_bytes, "sampled_spans": self.sampled_spans,
                           "sampled_traces": len(self.sampled_traces)}).encode()


def _response(status: str, body: bytes, ctype: str) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode() + body


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies by Content-Length only (what our clients send)."""

    def __init__(self, role: str, counters: Counters) -> None:
        self.role = role
        self.counters = counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            request_line = head.split("\r\n", 1)[0].split(" ")
            method, path = (request_line + ["", ""])[:2]
            if self.role == "sink" and path.startswith("/v1/traces"):
                self.counters.count_spans(body)
            assert self.transport is not None
            self.transport.write(self._answer(method, path, length))

    def _answer(self, method: str, path: str, length: int) -> bytes:
        c = self.counters
        if self.role == "downstream":
            c.http_requests += 1
            return _response("200 OK", _STOCK, "application/json")
        if method == "GET" and path == "/stats":
            return _response("200 OK", c.as_json(), "application/json")
        c.http_requests += 1
        c.http_bytes += length
        key = path.split("?", 1)[0]
        c.otlp_paths[key] = c.otlp_paths.get(key, 0) + 1
        return _response("200 OK", b"", "application/x-protobuf")


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.counters.udp_datagrams += 1
        self.counters.udp_bytes += len(data)


async def serve(role: str, port: int, udp_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(lambda: _HttpProtocol(role, counters), "127.0.0.1", port, backlog=1024)
    udp = None
    if udp_port:
        udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(counters),
                                                     local_addr=("127.0.0.1", udp_port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    if udp is not None:
        udp.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_peers")
    parser.add_argument("--role", choices=("downstream", "sink"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--udp-port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.role, args.port, args.udp_port or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
