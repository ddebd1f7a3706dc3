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

import asyncio
import collections
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.selfmetrics import SelfMetrics


from pulsetrace.http.connection import _Conn, _RateLimitedLog, _reason
from pulsetrace.http.messages import (
    _EVICTION_SCAN,
    FRESH_S,
    SLICE_S,
    Handler,
    Request,
    Response,
    ServerLimits,
)

_log = logging.getLogger("pulsetrace.health")


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
