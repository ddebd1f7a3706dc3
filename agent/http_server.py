"""The health HTTP/1.1 server: h11's state machine inside our own asyncio protocol, with hard limits.

It sits in front of an ALB and must keep answering ``/health`` whatever else is thrown at it.
Parsing and framing are h11's (the HTTP/1.1 state machine under httpcore and uvicorn: RFC 9112
request lines, ASCII-digit ``Content-Length``, chunked bodies, keep-alive, ``Expect``); what
h11 leaves to its user is ours, and it is the part that matters under attack:

- **Connections**: at most ``max_connections`` open, ``max_per_client`` per client address.
  A new connection past either cap takes the slot of the least recently active connection
  that is doing nothing (of that client first): never one being answered, nor one whose
  request already waits in its socket (the kernel's FIONREAD count), and a connection younger
  than half a second only when no older one can go. So an attacker holding idle or half-sent
  connections can never lock out the ALB, whose check arrives with its request; only when
  nothing can give way and ``reserve`` more are open too is a connection answered 503.
- **Time**: a request head and body must arrive within ``header_timeout`` of their first byte
  (not reset by each byte: no slowloris), a keep-alive connection idle for ``idle_timeout``
  is closed, and so is one whose client stops reading our answers for ``idle_timeout``.
- **One request in flight per connection**: the next pipelined request is not even read
  until the previous answer has been taken by the kernel (the transport's write buffer limit
  is 0, so ``pause_writing`` comes as soon as anything is left unsent): a client that does
  not read costs one answer in memory, and no more work.
- **Priority**: requests for the ``priority`` paths (``/health``, ``/health/live``) are
  answered the moment they are parsed; every other request goes through a queue drained a
  few milliseconds per loop turn, so a flood of ``/metrics`` or heartbeats delays the ALB's
  check by at most one slice.
- **Bad input**: a 4xx with a small JSON body and the connection closed, and one short log
  line, rate-limited, per bad request. Never a traceback, never a 500 (a handler that
  raises gives a 503).
- ``[::]`` listens dual-stack (IPv4 clients arrive as ``::ffff:a.b.c.d``).

Handlers get a :class:`Request` and return a :class:`Response`, or an awaitable of one (the
connection waits for it; used by the benchmark's per-request-checking peer). Nothing here
knows about probes.
"""

from __future__ import annotations

import array
import asyncio
import collections
import dataclasses
import fcntl
import http
import ipaddress
import json
import logging
import socket
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from pulsetrace.config.schema import HealthConfig
    from pulsetrace.selfmetrics import SelfMetrics

_log = logging.getLogger("pulsetrace.health")

MAX_HEAD = 16 * 1024
MAX_TARGET = 8 * 1024
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
#: Time spent draining the non-priority queue per loop turn before I/O (and /health) gets a turn.
SLICE_S = 0.001
#: A connection this young is evicted only when no older idle one can go: it has barely had time to speak.
FRESH_S = 0.5
#: Connections looked at, least recently active first, to find one to evict.
_EVICTION_SCAN = 512


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 512
    max_per_client: int = 64
    #: Connections admitted past ``max_connections`` when none can give way (then 503).
    reserve: int = 64
    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_head: int = MAX_HEAD
    max_body: int = MAX_BODY

    @classmethod
    def from_config(cls, hc: HealthConfig) -> ServerLimits:
        return cls(max_connections=hc.max_connections, max_per_client=hc.max_connections_per_client,
                   header_timeout=hc.header_timeout, idle_timeout=hc.idle_timeout, max_body=hc.max_body)


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
        return is_loopback(self.peer)


def is_loopback(peer: str) -> bool:
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # a dual-stack socket's IPv4 client
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


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


class _RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds, then one line saying how many were left out."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._window = 0.0
        self._count = 0
        self.suppressed = 0

    def line(self, now: float, fmt: str, *args: object) -> None:
        if now - self._window >= self.period:
            if self.suppressed:
                _log.warning("health: %d more bad requests not logged in the last %gs", self.suppressed, self.period)
            self._window, self._count, self.suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            _log.warning(fmt, *args)
        else:
            self.suppressed += 1


def _headers(req: h11.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in req.headers:  # h11 lower-cases names and has validated both
        key = name.decode("ascii")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _target(raw: bytes) -> tuple[str, str]:
    text = raw.decode("latin-1")
    if text.startswith(("http://", "https://")):  # absolute-form: keep the path
        after = text.split("://", 1)[1]
        text = "/" + after.split("/", 1)[1] if "/" in after else "/"
    path, _, query = text.partition("?")
    return path, query


class _Conn(asyncio.Protocol):
    """One client connection. Its states: waiting (idle or receiving a request) or busy (answering)."""

    def __init__(self, server: HealthServer) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_head)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.busy = False
        self.write_paused = False
        self.reading_paused = False
        self.reserved = False
        #: (loop time) when the connection times out; its meaning depends on the state
        self.deadline = float("inf")
        self.deadline_kind = "idle"
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.next_scheduled = False
        self.connected_at = server.now()

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.server._admit(self):
            return
        # Paused as soon as anything is left unsent: the next request is read only once the kernel
        # took the whole previous answer, so a client that does not read costs one answer, no more.
        transport.set_write_buffer_limits(high=0, low=0)
        self._arm("idle", self.server.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._forget(self)
        self.transport = None
        self.deadline = float("inf")

    def pause_writing(self) -> None:
        self.write_paused = True
        self._arm("write", self.server.limits.idle_timeout)
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._arm("idle", self.server.limits.idle_timeout)
            self._schedule_next()

    def _arm(self, kind: str, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self.server.now() + seconds

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def timed_out(self) -> None:
        self.deadline = float("inf")
        if self.transport is None:
            return
        if self.deadline_kind == "request" and not self.busy:
            self.server.timeouts += 1
            self._fail(408, "request not received in time")
        else:
            self.transport.abort() if self.deadline_kind == "write" else self.transport.close()

    def pending_input(self) -> bool:
        """Whether bytes sent by the client wait in the kernel, not yet read (FIONREAD: nothing consumed)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            buf = array.array("i", [0])
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
            return buf[0] > 0
        except (OSError, ValueError):
            return False

    def evict(self) -> None:
        self.server.evicted += 1
        if self.transport is not None:
            self.transport.abort()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            if self.transport is None or self.transport.is_closing():
                return
            if self.deadline_kind == "idle" and not self.busy:
                self._arm("request", self.server.limits.header_timeout)  # the first byte of a request
            self.h11.receive_data(data)
            if self.busy or self.write_paused:
                self._pause_reading()  # one request in flight: the next is read after this answer
            else:
                self._advance()
        except Exception as exc:  # never a traceback into the loop's log: one line, the connection dropped
            self.server.bad_log.line(self.server.now(), "health: connection from %s dropped: %s", self.peer,
                                     type(exc).__name__)
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it sent, then close (keep the transport open until then)."""
        try:
            self.h11.receive_data(b"")
            if not self.busy:
                self._advance()
        except Exception:
            return None
        return True if self.busy else None

    def _schedule_next(self) -> None:
        # The next pipelined request is read within the server's time slices, behind the requests
        # already waiting: one connection never holds the loop, and /health never waits for it.
        if not self.next_scheduled and self.transport is not None:
            self.next_scheduled = True
            self.server._enqueue(self, None)

    def _next_turn(self) -> None:
        self.next_scheduled = False
        try:
            if not self.busy and not self.write_paused:
                self._advance()
        except Exception as exc:
            self.server.bad_log.line(self.server.now(), "health: connection from %s dropped: %s", self.peer,
                                     type(exc).__name__)
            if self.transport is not None:
                self.transport.abort()

    def _advance(self) -> None:
        """Parse until a whole request (then answer it), more data is needed, or the connection ends."""
        limits = self.server.limits
        while self.transport is not None and not self.transport.is_closing():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400,
                           _short(str(exc)) or "malformed request")
                return
            if event is h11.NEED_DATA:
                self._resume_reading()
                if self.h11.their_state is h11.SEND_BODY and self.request is not None \
                        and self.h11.they_are_waiting_for_100_continue:
                    self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if self.deadline_kind != "request":
                    self._arm("request", limits.header_timeout)
                self.request = event
                self.body.clear()
                problem = _check_request(event, limits)
                if problem is not None:
                    self._fail(*problem)
                    return
            elif isinstance(event, h11.Data):
                if len(self.body) + len(event.data) > limits.max_body:
                    self._fail(413, f"body larger than {limits.max_body} bytes")
                    return
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    # -- answering ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        req = self.request
        assert req is not None and self.transport is not None
        path, query = _target(req.target)
        request = Request(req.method.decode("ascii"), path, query, _headers(req), bytes(self.body), self.peer,
                          "HTTP/" + req.http_version.decode("ascii"))
        self.busy = True
        self.deadline = float("inf")
        server = self.server
        server._touch(self)  # a whole request: the connection is in use (half-sent bytes do not count)
        if server.priority(path):
            self._answer(request)
        elif self.reserved:
            self._respond(error(503, "too many connections"), close=True)
        else:
            server._enqueue(self, request)

    def _answer(self, request: Request) -> None:
        server = self.server
        try:
            out = server.handler(request)
        except Exception:
            server.handler_errors += 1
            _log.debug("health handler failed", exc_info=True)
            out = error(503, "temporarily unavailable")
        if isinstance(out, Response):
            self._respond(out)
            return
        task = asyncio.ensure_future(out)
        server.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Response]) -> None:
        self.server.tasks.discard(task)
        if task.cancelled():
            resp = error(503, "shutting down")
        elif task.exception() is not None:
            self.server.handler_errors += 1
            resp = error(503, "temporarily unavailable")
        else:
            resp = task.result()
        self._respond(resp)

    def _respond(self, resp: Response, *, close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.server.requests += 1
        req = self.request
        head = req is not None and req.method == b"HEAD"
        keep_alive = not (close or resp.close) and req is not None and _keep_alive(req)
        self._write(self.server.wire(resp, head=head, keep_alive=keep_alive))
        self.request = None
        self.body.clear()
        if not keep_alive:
            self.transport.close()
            return
        # h11 parsed this request; the answer is ours (a few fixed headers, cached bytes). The next
        # request is parsed by a fresh state machine, fed what this one had read past the request.
        trailing, closed = self.h11.trailing_data
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.server.limits.max_head)
        if trailing:
            self.h11.receive_data(trailing)
        if closed:
            self.h11.receive_data(b"")
        self.busy = False
        if not self.write_paused:
            self._arm("idle", self.server.limits.idle_timeout)
            if self.reading_paused or trailing or closed:
                self._schedule_next()  # a pipelined request is waiting (in h11 or in the socket)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _fail(self, status: int, message: str) -> None:
        """A bad request: one short log line (rate-limited), a 4xx, and the connection closed."""
        server = self.server
        server.bad_requests += 1
        server.bad_log.line(server.now(), "health: bad request from %s: %d %s", self.peer, status, message)
        if self.transport is None:
            return
        self._write(self.server.wire(error(status, message), head=False, keep_alive=False, status=status))
        self.transport.close()


def _check_request(req: h11.Request, limits: ServerLimits) -> tuple[int, str] | None:
    """What h11 accepts but this server does not: (status, message), or None when the request is fine."""
    if req.http_version not in (b"1.0", b"1.1"):
        return 505, "only HTTP/1.0 and HTTP/1.1"
    if len(req.target) > MAX_TARGET:
        return 414, "request target too long"
    if not req.target.startswith(b"/") and not req.target.startswith((b"http://", b"https://")) \
            and req.target != b"*":
        return 400, "request target must be a path"
    if len(req.headers) > MAX_HEADERS:
        return 431, "too many header fields"
    if sum(len(name) + len(value) + 4 for name, value in req.headers) > limits.max_head:
        return 431, "request header fields too large"
    for name, value in req.headers:
        if name == b"content-length" and int(value) > limits.max_body:  # h11 has checked: ASCII digits only
            return 413, f"body larger than {limits.max_body} bytes"
    return None


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _keep_alive(req: h11.Request) -> bool:
    """HTTP/1.1 keeps the connection unless ``Connection: close``; HTTP/1.0 only with ``keep-alive``."""
    tokens: set[bytes] = set()
    for name, value in req.headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if req.http_version == b"1.0":
        return b"keep-alive" in tokens
    return b"close" not in tokens


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HealthServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port; see :attr:`port`).

    ``priority(path)`` says which paths are answered at once, ahead of the queue.
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 8081, *,
                 limits: ServerLimits | None = None, priority: Callable[[str], bool] | None = None,
                 metrics: SelfMetrics | None = None, max_connections: int | None = None,
                 header_timeout: float | None = None, idle_timeout: float | None = None) -> None:
        limits = limits or ServerLimits()
        overrides: dict[str, Any] = {k: v for k, v in (("max_connections", max_connections),
                                                       ("header_timeout", header_timeout),
                                                       ("idle_timeout", idle_timeout)) if v is not None}
        if overrides:
            limits = dataclasses.replace(limits, **overrides)
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.limits = limits
        self.priority = priority or (lambda path: False)
        self.metrics = metrics
        #: every open connection, least recently active first
        self.connections: collections.OrderedDict[_Conn, None] = collections.OrderedDict()
        self.by_peer: dict[str, collections.OrderedDict[_Conn, None]] = {}
        self.tasks: set[asyncio.Future[Any]] = set()
        self._queue: collections.deque[tuple[_Conn, Request | None]] = collections.deque()
        self._draining = False
        self.requests = 0
        self.rejected = 0
        self.evicted = 0
        self.timeouts = 0
        self.bad_requests = 0
        self.handler_errors = 0
        self.bad_log = _RateLimitedLog()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.now = time.monotonic
        self._wire_cache: dict[tuple[Response, bool, bool], bytes] = {}

    # -- connections -------------------------------------------------------------------------

    def _admit(self, conn: _Conn) -> bool:
        """Take ``conn`` in, making room by evicting an idle connection; False if it was refused."""
        limits = self.limits
        mine = self.by_peer.setdefault(conn.peer, collections.OrderedDict())
        if len(mine) >= limits.max_per_client:
            self._make_room(mine)
        if len(self.connections) >= limits.max_connections:
            self._make_room(self.connections)
        if len(self.connections) >= limits.max_connections + limits.reserve:
            self.rejected += 1
            conn.reserved = True
            if conn.transport is not None:
                conn.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 32\r\nConnection: close\r\n\r\n"
                                     b'{"error":"too many connections"}')
                conn.transport.close()
            return False
        self.connections[conn] = None
        mine[conn] = None
        return True

    def _make_room(self, pool: collections.OrderedDict[_Conn, None]) -> None:
        """Evict one connection of ``pool`` that is doing nothing, if there is one.

        Least recently active first, but never one with a request waiting in its socket (a
        health check that has just arrived) nor one being answered; a connection younger than
        :data:`FRESH_S` only when no older one can go. Past the cap with nothing to evict, the
        new connection is taken into the reserve (see :meth:`_admit`).
        """
        now = self.now()
        fallback: _Conn | None = None
        for i, conn in enumerate(pool):
            if i >= _EVICTION_SCAN:
                break
            if conn.busy and not conn.write_paused:
                continue
            if not conn.write_paused and conn.pending_input():
                continue
            if now - conn.connected_at >= FRESH_S or conn.write_paused:
                self._evict(conn)
                return
            if fallback is None:
                fallback = conn
        if fallback is not None:
            self._evict(fallback)

    def _evict(self, victim: _Conn) -> None:
        victim.evict()
        self._forget(victim)

    def _touch(self, conn: _Conn) -> None:
        if conn in self.connections:
            self.connections.move_to_end(conn)
            mine = self.by_peer.get(conn.peer)
            if mine is not None and conn in mine:
                mine.move_to_end(conn)

    def _forget(self, conn: _Conn) -> None:
        self.connections.pop(conn, None)
        mine = self.by_peer.get(conn.peer)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_peer[conn.peer]

    # -- the non-priority queue --------------------------------------------------------------

    def _enqueue(self, conn: _Conn, request: Request | None) -> None:
        """Queue ``request`` to be answered, or (``None``) the connection to be read again."""
        self._queue.append((conn, request))
        if not self._draining and self._loop is not None:
            self._draining = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Answer queued requests for one slice of time, then let the loop poll I/O again."""
        started = time.perf_counter()
        queue = self._queue
        while queue and time.perf_counter() - started < SLICE_S:
            conn, request = queue.popleft()
            if conn.transport is None or conn.transport.is_closing():
                continue
            if request is None:
                conn._next_turn()
            else:
                conn._answer(request)
        if queue and self._loop is not None:
            self._loop.call_soon(self._drain)
        else:
            self._draining = False

    # -- responses ---------------------------------------------------------------------------

    def wire(self, resp: Response, *, head: bool, keep_alive: bool, status: int | None = None) -> bytes:
        """The response's bytes (cached: most answers are the same few snapshot bodies)."""
        key = (resp, head, keep_alive)
        out = self._wire_cache.get(key)
        if out is None:
            code = resp.status if status is None else status
            lines = [f"HTTP/1.1 {code} {_reason(code)}", f"Content-Type: {resp.content_type}",
                     f"Content-Length: {len(resp.body)}", "Cache-Control: no-store"]
            lines += [f"{k}: {v}" for k, v in resp.headers]
            if not keep_alive:
                lines.append("Connection: close")
            out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else resp.body)
            if len(self._wire_cache) >= 256:
                self._wire_cache.clear()
            self._wire_cache[key] = out
        return out

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.now = loop.time
        host = self.host.strip("[]")
        if host == "::":  # dual-stack: IPv6 and IPv4-mapped clients on one socket
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", self.requested_port))
            except BaseException:
                sock.close()
                raise
            self._server = await loop.create_server(lambda: _Conn(self), sock=sock, backlog=1024)
        else:
            self._server = await loop.create_server(lambda: _Conn(self), None if host in ("", "*") else host,
                                                    self.requested_port, reuse_address=True, backlog=1024)
        self._sweeper = loop.create_task(self._sweep(), name="pulsetrace-health-sweeper")

    async def _sweep(self) -> None:
        """Time out connections past their deadline: one sweeper, no timer per request."""
        period = min(max(min(self.limits.header_timeout, self.limits.idle_timeout) / 4, 0.02), 0.5)
        while True:
            await asyncio.sleep(period)
            now = self.now()
            for conn in [c for c in self.connections if c.deadline <= now]:
                try:
                    conn.timed_out()
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
    """``"127.0.0.1:8081"`` / ``"[::1]:8081"`` / ``"[::]:8081"`` / ``"0.0.0.0:0"`` → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
