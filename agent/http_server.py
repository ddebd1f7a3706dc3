"""A small asyncio HTTP/1.1 server for the health endpoints. No framework, no thread per request.

It must answer ``/health`` from a snapshot in microseconds under an ALB's polling and a
load test, and never fall over on hostile input. So it is an ``asyncio.Protocol`` with
strict limits: request line :data:`MAX_REQUEST_LINE` bytes (414), header block
:data:`MAX_HEADER_BYTES` and :data:`MAX_HEADERS` lines (431), body :data:`MAX_BODY` bytes
with a ``Content-Length`` (413; chunked bodies get 411), :data:`HEADER_TIMEOUT` to send a
request's head (408) and :data:`IDLE_TIMEOUT` between keep-alive requests, at most
``max_connections`` open connections (503). Keep-alive (HTTP/1.1 default, HTTP/1.0 on
request), pipelining, ``HEAD``, ``Expect: 100-continue``.

The handler gets a parsed :class:`Request` and returns a :class:`Response` (or an awaitable
of one: the connection stops reading until it is done). Bad input is a 4xx with a small
JSON body and the connection closed when framing is lost; a handler that raises gives a
503, never a 500. Nothing here knows about probes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger("pulsetrace.health")

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
_MAX_BUFFER = MAX_REQUEST_LINE + MAX_HEADER_BYTES + MAX_BODY
#: Parsed heads of body-less requests, by their exact bytes: health checkers repeat one request.
_MAX_CACHED_HEADS = 128

_REASONS = {100: "Continue", 200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
            415: "Unsupported Media Type", 422: "Unprocessable Content", 431: "Request Header Fields Too Large",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: str
    version: str = "HTTP/1.1"

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.peer.split("%", 1)[0]).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())
    close: bool = False


def json_response(status: int, doc: Any, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode() + b"\n", headers=headers, close=close)


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": message, **extra})


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_wire_cache: dict[tuple[Response, bool, bool], bytes] = {}


def render(resp: Response, *, head: bool, keep_alive: bool) -> bytes:
    """The response on the wire; cached, since most answers are the same few snapshot bodies."""
    key = (resp, head, keep_alive)
    wire = _wire_cache.get(key)
    if wire is None:
        wire = _render(resp, head=head, keep_alive=keep_alive)
        if len(_wire_cache) >= 256:
            _wire_cache.clear()
        _wire_cache[key] = wire
    return wire


def _render(resp: Response, *, head: bool, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}",
             f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}", "Cache-Control: no-store"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + resp.body


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, server: HealthServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.peer = ""
        self.busy = False
        self.closing = False
        #: monotonic (loop) time after which the connection is timed out; inf while a handler runs
        self.deadline = float("inf")
        self.continue_sent = False
        #: a request has started arriving and its head timer runs (not reset by each byte: no slowloris)
        self.in_head = False
        self.paused = False

    # -- connection lifecycle ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.server.connections.add(self)
        if len(self.server.connections) > self.server.max_connections:
            self.server.rejected += 1
            self._send(error(503, "too many connections"), head=False, keep_alive=False)
            return
        self.in_head = True
        self._arm(self.server.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._disarm()
        self.transport = None

    # One sweeper per server checks the deadlines (see HealthServer._sweep): no timer per request.
    def _arm(self, seconds: float) -> None:
        self.deadline = self.server.now() + seconds

    def _disarm(self) -> None:
        self.deadline = float("inf")

    def _timeout(self) -> None:
        self.deadline = float("inf")
        if self.transport is None or self.busy:
            return
        if self.buf:
            self._send(error(408, "request not received in time"), head=False, keep_alive=False)
        else:
            self.transport.close()

    # -- parsing -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > _MAX_BUFFER and self.transport is not None and not self.paused:
            self.paused = True  # a pipelining client while a slow handler runs: stop reading
            self.transport.pause_reading()

    def _process(self) -> None:
        while self.buf and not self.busy and not self.closing and self.transport is not None:
            try:
                parsed = self._parse()
            except _BadRequest as exc:
                self._send(error(exc.status, exc.message), head=False, keep_alive=False)
                return
            if parsed is None:
                if not self.in_head:
                    self.in_head = True
                    self._arm(self.server.header_timeout)
                return
            self.in_head = False
            request, keep_alive = parsed
            self._dispatch(request, keep_alive)
        if not self.buf and not self.busy and not self.closing and self.transport is not None:
            self._arm(self.server.idle_timeout)

    def _parse(self) -> tuple[Request, bool] | None:
        buf = self.buf
        while buf.startswith(b"\r\n"):  # stray CRLF between pipelined requests is allowed (RFC 9112 2.2)
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            line_end = buf.find(b"\r\n")
            if (line_end < 0 and len(buf) > MAX_REQUEST_LINE) or line_end > MAX_REQUEST_LINE:
                raise _BadRequest(414, "request line too long")
            if len(buf) > MAX_REQUEST_LINE + MAX_HEADER_BYTES:
                raise _BadRequest(431, "request headers too large")
            return None
        head = bytes(buf[:end])
        cached = self.server.heads.get(head)
        if cached is not None:  # the same head as an earlier body-less request (an ALB's or wrk's)
            method, path, query, headers, version, keep_alive = cached
            del buf[:end + 4]
            return Request(method, path, query, headers, b"", self.peer, version), keep_alive
        lines = head.split(b"\r\n")
        if len(lines[0]) > MAX_REQUEST_LINE:
            raise _BadRequest(414, "request line too long")
        if len(head) - len(lines[0]) > MAX_HEADER_BYTES or len(lines) - 1 > MAX_HEADERS:
            raise _BadRequest(431, "request headers too large")
        method, target, version = _request_line(lines[0])
        headers = _headers(lines[1:])
        keep_alive = _keep_alive(version, headers.get("connection", ""))
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "chunked bodies are not accepted; send Content-Length")
        length_text = headers.get("content-length", "0").strip()
        if not length_text.isdigit() or len(length_text) > 12:
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_text)
        if length > MAX_BODY:
            raise _BadRequest(413, f"body larger than {MAX_BODY} bytes")
        total = end + 4 + length
        if len(buf) < total:
            if length and not self.continue_sent and headers.get("expect", "").lower() == "100-continue":
                self.continue_sent = True
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[end + 4:total])
        del buf[:total]
        self.continue_sent = False
        path, _, query = target.partition("?")
        if length == 0 and "expect" not in headers:
            heads = self.server.heads
            if len(heads) >= _MAX_CACHED_HEADS:
                heads.clear()
            heads[head] = (method, path, query, headers, version, keep_alive)
        return Request(method, path, query, headers, body, self.peer, version), keep_alive

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        head = request.method == "HEAD"
        try:
            out = self.server.handler(request)
        except Exception:
            self.server.handler_errors += 1
            _log.debug("health handler failed", exc_info=True)
            out = error(503, "temporarily unavailable")
        if isinstance(out, Response):
            self._send(out, head=head, keep_alive=keep_alive and not out.close)
            return
        self.busy = True
        self._disarm()
        task = asyncio.ensure_future(out)
        self.server.tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, head, keep_alive))

    def _finished(self, task: asyncio.Future[Response], head: bool, keep_alive: bool) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        if task.cancelled():
            resp = error(503, "shutting down")
        elif task.exception() is not None:
            self.server.handler_errors += 1
            resp = error(503, "temporarily unavailable")
        else:
            resp = task.result()
        self._send(resp, head=head, keep_alive=keep_alive and not resp.close)
        if self.paused and self.transport is not None and not self.closing:
            self.paused = False
            self.transport.resume_reading()
        if not self.closing:
            self._process()

    def _send(self, resp: Response, *, head: bool, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.server.requests += 1
        self.transport.write(render(resp, head=head, keep_alive=keep_alive))
        if not keep_alive:
            self.closing = True
            self._disarm()
            self.transport.close()


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not set(method) <= _TOKEN_CHARS or len(method) > 16:
        raise _BadRequest(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise _BadRequest(505, "only HTTP/1.0 and HTTP/1.1")
        raise _BadRequest(400, "malformed request line")
    if _BAD_TARGET.search(target):
        raise _BadRequest(400, "malformed request target")
    text = target.decode("latin-1")
    if text.startswith(("http://", "https://")):  # absolute-form: keep the path
        after = text.split("://", 1)[1]
        text = "/" + after.split("/", 1)[1] if "/" in after else "/"
    if not text.startswith("/"):
        raise _BadRequest(400, "request target must be a path")
    return method.decode("ascii"), text, version.decode("ascii")


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in lines:
        if not raw or raw[:1] in (b" ", b"\t"):
            raise _BadRequest(400, "malformed header (folded or empty line)")
        name, sep, value = raw.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN_CHARS:
            raise _BadRequest(400, "malformed header")
        if b"\x00" in value or b"\r" in value or b"\n" in value:
            raise _BadRequest(400, "malformed header value")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("content-length", "host", "authorization"):
                if headers[key] != text:
                    raise _BadRequest(400, f"conflicting {key} headers")
                continue
            headers[key] = headers[key] + ", " + text
        else:
            headers[key] = text
    return headers


def _keep_alive(version: str, connection: str) -> bool:
    tokens = {t.strip().lower() for t in connection.split(",")} if connection else set()
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


class HealthServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port; see :attr:`port`)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 8081, *,
                 max_connections: int = 512, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.connections: set[_HttpProtocol] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.requests = 0
        self.rejected = 0
        self.handler_errors = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.now = time.monotonic
        #: request head bytes → parsed (method, path, query, headers, version, keep_alive); handlers
        #: must treat ``Request.headers`` as read-only.
        self.heads: dict[bytes, tuple[str, str, str, dict[str, str], str, bool]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time
        host: str | None = None if self.host in ("", "*") else self.host.strip("[]")
        self._server = await loop.create_server(lambda: _HttpProtocol(self), host, self.requested_port,
                                                reuse_address=True, backlog=1024)
        self._sweeper = loop.create_task(self._sweep(), name="pulsetrace-health-sweeper")

    async def _sweep(self) -> None:
        """Time out connections past their deadline (a request head too slow, or idle keep-alive)."""
        while True:
            await asyncio.sleep(min(max(min(self.header_timeout, self.idle_timeout) / 4, 0.02), 1.0))
            now = self.now()
            for conn in [c for c in self.connections if c.deadline <= now]:
                try:
                    conn._timeout()
                except Exception:  # a broken connection must not stop the sweeper
                    _log.debug("health: timing out a connection failed", exc_info=True)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, timeout: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        try:
            await asyncio.wait_for(server.wait_closed(), timeout)
        except (asyncio.TimeoutError, Exception):
            pass


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8081"`` / ``"[::1]:8081"`` / ``"0.0.0.0:0"`` → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
