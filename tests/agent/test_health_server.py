"""The health HTTP server on a real socket: routes, auth, keep-alive, limits, and no 500 on any input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsetrace.http import HealthServer, Request, Response, json_response
from pulsetrace.http.connection import _RateLimitedLog
from pulsetrace.healthchecks.handle import HealthHandle, start_in_thread
from tests.healthchecks import probes_for_tests as pft
from tests.healthchecks.support import health_config

MOD = "tests.healthchecks.probes_for_tests"


def switch(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "custom", "target": f"{MOD}:Switch", "options": {"name": name},
            "interval": "0.2s", "timeout": "0.1s", **extra}


def started(token: str = "", **health: Any) -> HealthHandle:
    cfg = health_config([switch("db", critical=True), {"name": "readers", "type": "rfid", "source": {"push": "true"},
                                                       "interval": "0.2s", "timeout": "0.1s", "max_age": "60s"}],
                        token=token, **health)
    handle = start_in_thread(cfg)
    deadline = time.monotonic() + 5
    while handle.snapshot().probes["db"].status.value == "UNKNOWN" and time.monotonic() < deadline:
        time.sleep(0.02)
    return handle


@pytest.fixture(scope="module")
def server() -> Iterator[HealthHandle]:
    pft.reset()
    handle = started()
    yield handle
    handle.stop(1.0)


def raw(port: int, data: bytes, *, read_until_close: bool = True, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def get(port: int, path: str, headers: str = "", method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return raw(port, head.encode() + b"\r\n" + body)


def test_health_answers_from_the_snapshot(server: HealthHandle) -> None:
    resp = get(server.port, "/health")
    # readers: no heartbeat yet is nothing to judge (UNKNOWN), and a non-critical UNKNOWN does not degrade
    assert status_of(resp) == 200 and body_of(resp) == {"status": "UP", "stale": False}
    assert b"Content-Type: application/json" in resp and b"Cache-Control: no-store" in resp
    assert status_of(get(server.port, "/health/ready")) == 200


def test_head_has_headers_and_no_body(server: HealthHandle) -> None:
    resp = get(server.port, "/health", method="HEAD")
    head, _, rest = resp.partition(b"\r\n\r\n")
    assert status_of(resp) == 200 and rest == b"" and b"Content-Length: 33" in head  # {"status": "UP", ...}


def test_unknown_path_404_and_wrong_method_405_with_allow(server: HealthHandle) -> None:
    resp = get(server.port, "/nope")
    assert status_of(resp) == 404 and body_of(resp) == {"error": "not found"}
    resp = get(server.port, "/health", method="POST", body=b"{}")
    assert status_of(resp) == 405 and b"Allow: GET, HEAD" in resp
    assert status_of(get(server.port, "/rfid/heartbeat")) == 405


def test_details_from_loopback_without_a_token(server: HealthHandle) -> None:
    resp = get(server.port, "/health/details")
    doc = body_of(resp)
    assert status_of(resp) == 200 and set(doc["probes"]) == {"db", "readers"}


def test_metrics_are_prometheus_text(server: HealthHandle) -> None:
    resp = get(server.port, "/metrics")
    text = resp.split(b"\r\n\r\n", 1)[1].decode()
    assert status_of(resp) == 200 and b"text/plain; version=0.0.4" in resp
    assert 'pulsetrace_probe_status{probe="db",status="UP"} 1' in text
    assert 'pulsetrace_probe_availability_ratio{probe="db",window="1h"} 1' in text
    assert "# TYPE pulsetrace_probe_checks_total counter" in text


def test_keep_alive_and_pipelining_on_one_connection(server: HealthHandle) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2:
            data += s.recv(65536)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        more = s.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 2 and b'{"status":"alive"}' in data
    assert more.startswith(b"HTTP/1.1 200")


def test_http10_closes_after_the_answer(server: HealthHandle) -> None:
    resp = raw(server.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert status_of(resp) == 200 and b"Connection: close" in resp


@pytest.mark.parametrize(("request_bytes", "expected"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n", 413),
    (b"POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20000\r\n"
     + b"a" * 0x20000 + b"\r\n0\r\n\r\n", 413),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    # Digits only in ASCII (RFC 9110): a superscript two or a full-width digit passes str.isdigit, not HTTP.
    ("POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\nab".encode(), 400),
    ("POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: \uff12\r\n\r\nab".encode(), 400),
    (b"GET /health HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),  # a bare CR in a field value
    (b"G\x00T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
])
def test_bad_requests_get_4xx_and_the_connection_closed(server: HealthHandle, request_bytes: bytes,
                                                        expected: int) -> None:
    resp = raw(server.port, request_bytes)
    assert status_of(resp) == expected
    assert "error" in body_of(resp)
    assert status_of(get(server.port, "/health")) == 200  # the server is fine


def test_heartbeats_feed_the_push_rfid_probe(server: HealthHandle) -> None:
    body = json.dumps([{"reader_id": "gate-1"}, {"reader_id": "gate-2", "ts": time.time()}]).encode()
    resp = get(server.port, "/rfid/heartbeat", method="POST", body=body, headers="Content-Type: application/json\r\n")
    assert status_of(resp) == 200 and body_of(resp)["accepted"] == 2
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        readers = server.snapshot().probes["readers"]
        if readers.status.value == "UP":
            break
        time.sleep(0.05)
    assert readers.status.value == "UP" and readers.measurements["readers_total"] == 2


@pytest.mark.parametrize(("body", "expected"), [(b"not json", 400), (b'{"reader_id": ""}', 422),
                                                (b'[{"reader_id": 5}]', 422), (b"\xff\xfe", 400)])
def test_bad_heartbeats_are_4xx(server: HealthHandle, body: bytes, expected: int) -> None:
    assert status_of(get(server.port, "/rfid/heartbeat", method="POST", body=body)) == expected


def test_token_protects_details_and_heartbeats() -> None:
    handle = started(token="h34lth-T0ken")
    try:
        assert status_of(get(handle.port, "/health/details")) == 401
        resp = get(handle.port, "/health/details", headers="Authorization: Bearer wrong\r\n")
        assert status_of(resp) == 401 and b"WWW-Authenticate: Bearer" in resp
        assert b"h34lth-T0ken" not in resp
        assert status_of(get(handle.port, "/health/details", headers="Authorization: Bearer h34lth-T0ken\r\n")) == 200
        # The auth scheme is case-insensitive (RFC 7235 2.1); the token is not.
        assert status_of(get(handle.port, "/health/details", headers="Authorization: bearer h34lth-T0ken\r\n")) == 200
        assert status_of(get(handle.port, "/health/details", headers="Authorization: BEARER h34lth-T0ken\r\n")) == 200
        assert status_of(get(handle.port, "/health/details", headers="Authorization: Bearer H34LTH-t0KEN\r\n")) == 401
        assert status_of(get(handle.port, "/health/details", headers="Authorization: Basic h34lth-T0ken\r\n")) == 401
        assert status_of(get(handle.port, "/rfid/heartbeat", method="POST", body=b'{"reader_id": "a"}')) == 401
        assert status_of(get(handle.port, "/health")) in (200, 503)  # /health never needs the token
    finally:
        handle.stop(1.0)


def test_slow_request_head_times_out_with_408() -> None:
    loop = asyncio.new_event_loop()
    server = HealthServer(lambda r: json_response(200, {}), "127.0.0.1", 0, header_timeout=0.5)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
            started_at = time.monotonic()
            # A byte every 0.09 s for up to 2.7 s, until the server answers: were each byte to re-arm the
            # timer, 408 would come only after the last one (> 2.7 s).
            for _ in range(30):
                try:
                    s.sendall(b"G")
                except OSError:  # the server answered and closed
                    break
                if select.select([s], [], [], 0.09)[0]:
                    break
            data = s.recv(65536)
            took = time.monotonic() - started_at
            # The upper bound is a bound, not a speed: the sweeper's tick and two busy cores add noise.
            assert 0.45 < took < 0.5 + 1.0, took
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(3)
        loop.close()
    assert status_of(data) == 408


def test_a_new_connection_past_the_limit_takes_the_slot_of_the_least_recently_active() -> None:
    async def main() -> tuple[bytes, bytes, int]:
        server = HealthServer(lambda r: json_response(200, {}), "127.0.0.1", 0, max_connections=2)
        await server.start()
        try:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 3)
            oldest = await asyncio.wait_for(held[0][0].read(), 3)  # closed by the server: b""
            for _, w in held:
                w.close()
            return data, oldest, server.evicted
        finally:
            await server.stop()

    data, oldest, evicted = asyncio.run(main())
    assert status_of(data) == 200 and oldest == b"" and evicted == 1


def test_async_handlers_and_handler_errors_never_give_500() -> None:
    async def handler(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("bug")
        await asyncio.sleep(0.01)
        return json_response(200, {"path": req.path})

    def dispatch(req: Request) -> Any:
        if req.path == "/sync-boom":
            raise ValueError("bug")
        return handler(req)

    async def main() -> list[bytes]:
        server = HealthServer(dispatch, "127.0.0.1", 0)
        await server.start()
        try:
            out = []
            for path in ("/a", "/boom", "/sync-boom"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                out.append(await asyncio.wait_for(reader.read(), 3))
                writer.close()
            return out
        finally:
            await server.stop()

    ok, boom, sync_boom = asyncio.run(main())
    assert status_of(ok) == 200 and body_of(ok) == {"path": "/a"}
    assert status_of(boom) == 503 and status_of(sync_boom) == 503


# -- fuzz ------------------------------------------------------------------------------------------------

_methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW",
                            "get", ""]) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=8)
_paths = st.sampled_from(["/health", "/health/", "/health/details", "/health/live", "/health/ready", "/metrics",
                          "/rfid/heartbeat", "/", "*", "/../etc/passwd", "/health?x=1", "http://h/health"]) | \
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(lambda s: "/" + s)
_header = st.tuples(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                            min_size=1, max_size=20),
                    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
_ALLOWED = {200, 400, 401, 404, 405, 408, 411, 413, 414, 422, 431, 503, 505}


@pytest.fixture(scope="module")
def fuzz_port() -> Iterator[int]:
    pft.reset()
    handle = started()
    assert handle.service.server is not None
    server = handle.service.server  # inputs that leave a request unfinished end quickly
    server.limits = dataclasses.replace(server.limits, header_timeout=0.5)
    yield handle.port
    handle.stop(1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=_methods, path=_paths, headers=st.lists(_header, max_size=6), body=st.binary(max_size=300),
       declare_length=st.booleans())
def test_fuzzed_requests_never_get_a_500(fuzz_port: int, method: str, path: str, headers: list[tuple[str, str]],
                                         body: bytes, declare_length: bool) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "transfer-encoding",
                                                                    "connection", "expect")]
    if declare_length:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + (body if declare_length else b"")
    resp = raw(fuzz_port, data, timeout=5)
    assert resp.startswith(b"HTTP/1.1 "), resp[:100]
    assert status_of(resp) in _ALLOWED


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=2000))
def test_fuzzed_raw_bytes_never_get_a_500(fuzz_port: int, data: bytes) -> None:
    resp = raw(fuzz_port, data + b"\r\n\r\n", timeout=5)
    if resp:  # the server may also just wait for more body bytes and close on its header timeout
        assert status_of(resp) in _ALLOWED


def test_server_thread_is_not_left_behind() -> None:
    names = [t.name for t in threading.enumerate()]
    assert names.count("pulsetrace-health") <= 2  # the module fixtures' handles at most


def test_listen_on_the_ipv6_any_address_is_dual_stack_and_ipv4_clients_count_as_loopback() -> None:
    pft.reset()
    handle = started(listen="[::]:0")
    try:
        assert handle.service.server is not None
        port = handle.port
        v4 = raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("::1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            v6 = b""
            while chunk := s.recv(65536):
                v6 += chunk
        assert status_of(v4) == 200 and status_of(v6) == 200
        # An IPv4 client arrives as ::ffff:127.0.0.1 on the dual-stack socket: still loopback.
        details = raw(port, b"GET /health/details HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(details) == 200
    finally:
        handle.stop(1.0)


def test_a_bad_request_is_one_short_log_line_and_a_flood_of_them_is_rate_limited(
        server: HealthHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pulsetrace.health")
    assert server.service.server is not None
    server.service.server.bad_log = _RateLimitedLog(burst=3, period=60.0)  # a fresh window for this test
    for _ in range(20):
        raw(server.port, "POST /rfid/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n".encode())
    lines = [r.getMessage() for r in caplog.records if "bad request" in r.getMessage()]
    assert len(lines) == 3 and all(len(line) < 200 and "\n" not in line for line in lines)
    assert server.service.server.bad_log.suppressed == 17
    assert not any(r.exc_info for r in caplog.records)
