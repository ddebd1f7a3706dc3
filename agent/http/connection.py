"""One client connection of the health server: h11's state machine driven by an asyncio protocol.

Enforces, per connection, the rules :mod:`pulsetrace.http.server` describes (time budgets,
one request in flight, write back-pressure, priority answers, rate-limited one-line logs).
Never raises into the event loop.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import http
import logging
import termios
from typing import TYPE_CHECKING

import h11

if TYPE_CHECKING:
    pass


from pulsetrace.http.messages import MAX_HEADERS, MAX_TARGET, Request, Response, ServerLimits, error

if TYPE_CHECKING:
    from pulsetrace.http.server import HealthServer

_log = logging.getLogger("pulsetrace.health")


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
