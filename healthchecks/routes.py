"""The health endpoints: which path answers what, from the :class:`HealthService` snapshot.

| path | methods | answer |
|---|---|---|
| ``/health``, ``/health/ready`` | GET, HEAD | 200/503 ``{"status", "stale"}`` (see :mod:`pulsetrace.healthchecks.status`) |
| ``/health/live`` | GET, HEAD | 200 while this loop runs and, under ``run``, the child lives |
| ``/health/details`` | GET, HEAD | the details JSON; Bearer token when set, else loopback only (401) |
| ``/metrics`` | GET, HEAD | Prometheus text |
| ``/rfid/heartbeat`` | POST | JSON ``{reader_id, ts?}`` or a list; token/loopback as details |

Anything else is 404, a known path with another method 405 with ``Allow``. No probe ever
runs on a request; every answer is built from data already in memory. ``/health``,
``/health/ready`` and ``/health/live`` are the server's priority paths (:meth:`Routes.priority`):
answered the moment they are read, ahead of everything queued. The ``Authorization`` scheme
is matched case-insensitively (RFC 7235: ``bearer`` is ``Bearer``), the token in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pulsetrace.background import executor
from pulsetrace.http import Request, Response, error, json_response
from pulsetrace.healthchecks.exposition import CONTENT_TYPE, render

if TYPE_CHECKING:
    from pulsetrace.healthchecks.service import HealthService
    from pulsetrace.healthchecks.snapshot import HealthSnapshot

_READ = ("GET", "HEAD")
_log = logging.getLogger("pulsetrace.health")
_PRIORITY = frozenset({"/health", "/health/ready", "/health/live"})
#: How long one /metrics rendering answers scrapes (while the snapshot is the same one).
METRICS_TTL_S = 1.0
#: Heartbeat batches being recorded or waiting for the worker at most; more get 503.
HEARTBEAT_BACKLOG = 8


class Routes:
    def __init__(self, service: HealthService) -> None:
        self.service = service
        token = service.cfg.health.token
        self._expected = token.encode() if token else None
        self._metrics_cache: tuple[HealthSnapshot, float, Response] | None = None
        self._heartbeat_pool = executor(max_workers=1, thread_name_prefix="pulsetrace-heartbeats")
        self._heartbeats_in_flight = 0
        self._table: dict[str, tuple[tuple[str, ...], Callable[[Request], Response | Awaitable[Response]]]] = {
            "/health": (_READ, self.health),
            "/health/ready": (_READ, self.health),
            "/health/live": (_READ, self.live),
            "/health/details": (_READ, self.details),
            "/metrics": (_READ, self.metrics),
            "/rfid/heartbeat": (("POST",), self.heartbeat),
        }

    @staticmethod
    def _path(path: str) -> str:
        return path if len(path) <= 1 else path.rstrip("/")

    def priority(self, path: str) -> bool:
        """Whether ``path`` is one an ALB or a container HEALTHCHECK polls: answered ahead of everything."""
        return self._path(path) in _PRIORITY

    def handle(self, req: Request) -> Response | Awaitable[Response]:
        path = self._path(req.path)
        route = self._table.get(path)
        if route is None:
            return error(404, "not found")
        methods, fn = route
        if req.method not in methods:
            return json_response(405, {"error": "method not allowed", "allow": list(methods)},
                                 headers=(("Allow", ", ".join(methods)),))
        return fn(req)

    def authorized(self, req: Request) -> bool:
        if self._expected is None:
            return req.loopback
        scheme, _, token = req.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip(" \t").encode("latin-1", "replace"), self._expected)

    def _unauthorized(self) -> Response:
        hint = "send Authorization: Bearer TOKEN" if self._expected else "allowed from loopback clients only"
        return json_response(401, {"error": "unauthorized", "hint": hint}, headers=(("WWW-Authenticate", "Bearer"),))

    def health(self, req: Request) -> Response:
        code, body = self.service.health()
        return Response(code, body)

    def live(self, req: Request) -> Response:
        alive = self.service.child_alive
        try:
            ok = True if alive is None else bool(alive())
        except Exception:
            ok = False
        if ok:
            return Response(200, b'{"status":"alive"}\n')
        return Response(503, b'{"status":"child process exited"}\n')

    def details(self, req: Request) -> Response:
        if not self.authorized(req):
            return self._unauthorized()
        return Response(200, self.service.details_json())

    def metrics(self, req: Request) -> Response:
        # One rendering serves every scrape within METRICS_TTL_S of the same snapshot: a scraper
        # polls every 15 s or so, and a flood of /metrics must not turn into a flood of renderings.
        snapshot = self.service.snapshot()
        now = time.monotonic()
        cached = self._metrics_cache
        if cached is not None and cached[0] is snapshot and now < cached[1]:
            return cached[2]
        text = render(snapshot, self.service.metrics, self.service.counters())
        for more in list(self.service.expositions):
            try:
                text += more()
            except Exception:  # a broken source costs its own lines, never the scrape
                _log.debug("/metrics source failed", exc_info=True)
        resp = Response(200, text.encode(), content_type=CONTENT_TYPE)
        self._metrics_cache = (snapshot, now + METRICS_TTL_S, resp)
        return resp

    def heartbeat(self, req: Request) -> Response | Awaitable[Response]:
        """Heartbeats are parsed and recorded on a worker thread, at most a few batches at a time.

        A 64 KB batch is ~1,500 beats, tens of milliseconds of Python: on the HTTP loop it would
        hold every other answer that long. On the worker it holds the GIL only in the
        interpreter's switch interval (5 ms), and a flood past :data:`HEARTBEAT_BACKLOG` batches
        gets 503 with ``Retry-After`` rather than a growing queue.
        """
        if not self.authorized(req):
            return self._unauthorized()
        if self._heartbeats_in_flight >= HEARTBEAT_BACKLOG:
            return json_response(503, {"error": "busy: too many heartbeat batches at once"},
                                 headers=(("Retry-After", "1"),))
        self._heartbeats_in_flight += 1
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._heartbeat_pool, self._record_heartbeats, req.body)
        work.add_done_callback(self._heartbeat_done)
        return work

    def _heartbeat_done(self, _fut: object) -> None:
        self._heartbeats_in_flight -= 1

    def _record_heartbeats(self, body: bytes) -> Response:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return error(400, "body must be JSON: {\"reader_id\": \"...\", \"ts\": 1700000000} or a list of them")
        accepted, problems = self.service.heartbeats.accept(payload)
        if problems and not accepted:
            return error(422, "no heartbeat accepted", problems=problems[:20])
        return json_response(200, {"accepted": accepted, "rejected": len(problems), "problems": problems[:20]})

    def close(self) -> None:
        self._heartbeat_pool.shutdown(wait=False)
