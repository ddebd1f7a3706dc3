"""The health runtime: probes on their schedules, status, SLA, impact, history, and the HTTP server.

:class:`HealthService` owns everything on one asyncio loop: a :class:`ProbeRunner` per probe,
the flap damper, SLA tracker and impact tracker per probe, the snapshot the endpoints
answer from, and the :class:`~pulsetrace.http_server.HealthServer`. Every probe result updates
the snapshot (a new dict each time, swapped in whole, so readers on other threads see a
consistent one), notifies snapshot listeners, and queues the changed SLA minute buckets and
transitions for the local store, written by one I/O thread every few seconds.

:func:`start_in_thread` runs it on its own loop in a daemon thread (``pulsetrace run``);
``pulsetrace serve`` runs :meth:`HealthService.serve_forever` in the foreground. Never
raises into the host: a probe that cannot be built reports DOWN with the reason.

Probe traffic is not app traffic: nothing the service does is traced. Its entry points
(:meth:`HealthService.start`, :meth:`~HealthService.run_round`, :meth:`~HealthService.stop`)
suppress instrumentation for every task they create (asyncio copies the current context
into a task when it is created), whichever loop runs them; its I/O threads and the thread
of :func:`start_in_thread` suppress it from their first instruction (:mod:`pulsetrace.background`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulsetrace.background import executor, start_worker, suppressed
from pulsetrace.healthchecks import logfilter
from pulsetrace.healthchecks.base import Probe, ProbeContext, ProbeResult, Status, describe_error
from pulsetrace.healthchecks.damping import Damper, Transition
from pulsetrace.healthchecks.heartbeats import HeartbeatBook
from pulsetrace.healthchecks.impact import ImpactTracker, window_revenue
from pulsetrace.healthchecks.redact import Redactor
from pulsetrace.healthchecks.scheduler import ProbeRunner
from pulsetrace.healthchecks.sla import RETENTION_MINUTES, SlaTracker
from pulsetrace.healthchecks.status import ProbeView, http_status, overall

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig
    from pulsetrace.http_server import HealthServer
    from pulsetrace.selfmetrics import SelfMetrics
    from pulsetrace.store import LocalStore
    from pulsetrace.healthchecks.history import HealthHistory

_log = logging.getLogger("pulsetrace.health")
PERSIST_INTERVAL = 5.0
PRUNE_INTERVAL = 3600.0
RECENT_TRANSITIONS = 20

SnapshotListener = Callable[[dict[str, Any]], None]


class _BrokenProbe:
    """Stands in for a probe that could not be built: DOWN with the reason, every round."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def check(self) -> ProbeResult:
        return ProbeResult(Status.DOWN, 0.0, self.reason)


@dataclass
class ProbeState:
    cfg: ProbeConfig
    runner: ProbeRunner
    damper: Damper
    sla: SlaTracker
    impact: ImpactTracker
    last: ProbeResult | None = None
    last_checked: float | None = None
    last_transition: Transition | None = None
    transitions: collections.deque[Transition] = field(default_factory=lambda: collections.deque(maxlen=RECENT_TRANSITIONS))
    section: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return self.damper.status


class HealthService:
    """Probes + status + SLA + impact + the health HTTP server for one configuration."""

    def __init__(self, cfg: Config, *, store: LocalStore | None = None, child_alive: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 metrics: SelfMetrics | None = None, persist: bool = True) -> None:
        self.cfg = cfg
        self.store = store
        self.child_alive = child_alive
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = metrics
        #: Extra ``/metrics`` text sources (:meth:`add_exposition`).
        self.expositions: list[Callable[[], str]] = []
        self.redactor = Redactor.from_config(cfg)
        logfilter.install(self.redactor)
        self.heartbeats = HeartbeatBook(clock=clock)
        self._io = executor(max_workers=1, thread_name_prefix="pulsetrace-health-io")
        self.history: HealthHistory | None = None
        if store is not None and persist:
            from pulsetrace.healthchecks.history import HealthHistory

            self.history = HealthHistory(store)
        ctx = ProbeContext(redactor=self.redactor, heartbeats=self.heartbeats, store=store, clock=clock, io=self._io)
        self.probes: dict[str, ProbeState] = {}
        hc = cfg.health
        for pc in hc.probes:
            runner = ProbeRunner(pc, self._build(pc, ctx), self.redactor)
            self.probes[pc.name] = ProbeState(
                cfg=pc, runner=runner,
                damper=Damper(pc.failure_threshold or hc.failure_threshold, pc.success_threshold or hc.success_threshold),
                sla=SlaTracker(pc.sla, degraded_is_available=hc.degraded_is_available,
                               min_samples=hc.burn_min_samples, min_failures=hc.burn_min_failures),
                impact=ImpactTracker(pc.impact))
        longest = max((p.interval for p in hc.probes), default=15.0)
        self.stale_after = hc.stale_factor * longest
        self._listeners: list[SnapshotListener] = []
        self._pending_rows: dict[str, list[Any]] = {}
        self._pending_transitions: list[Transition] = []
        self._snapshot: dict[str, Any] = {}
        self._updated_mono = monotonic()
        self._health_cache: dict[bool, tuple[int, bytes]] = {}
        self._details_cache: bytes | None = None
        self._stop: asyncio.Event | None = None  # created on the loop, in start()
        self._tasks: list[asyncio.Task[None]] = []
        self.server: HealthServer | None = None
        self.listener_errors = 0
        self._last_prune = 0.0
        self._publish()

    def _build(self, pc: ProbeConfig, ctx: ProbeContext) -> Probe:
        from pulsetrace.healthchecks.registry import build_probe

        try:
            return build_probe(pc, ctx)
        except Exception as exc:
            reason = self.redactor.scrub(f"probe cannot be built: {describe_error(exc)}")
            _log.warning("health: %s: %s", pc.name, reason)
            return _BrokenProbe(reason)

    # -- results -------------------------------------------------------------------------------

    def record(self, runner: ProbeRunner, result: ProbeResult) -> None:
        """Take one result (the scheduler's sink): damping, transitions, SLA, impact, snapshot."""
        state = self.probes[runner.name]
        now = self.clock()
        previous_at = state.last_checked
        limit = state.cfg.interval * (1.0 + state.cfg.jitter) + state.cfg.timeout
        covered = state.cfg.interval if previous_at is None else min(max(0.0, now - previous_at), limit)
        before = state.damper.status
        changed = state.damper.feed(result.status)
        # Impact accrues for the time just ended at the status reported during it.
        state.impact.advance(before if previous_at is not None else Status.UNKNOWN, now, covered)
        if changed is not None:
            t = Transition(state.cfg.name, now, before, changed, result.detail or result.status.value)
            state.last_transition = t
            state.transitions.append(t)
            self._pending_transitions.append(t)
            level = logging.WARNING if changed is Status.DOWN else logging.INFO
            _log.log(level, "health: %s %s -> %s: %s", t.probe, t.from_status.value, t.to_status.value, t.reason)
            state.impact.advance(changed, now, 0.0)
        state.last = result
        state.last_checked = now
        state.sla.record(now, result.status, result.latency_s, covered)
        rows = state.sla.take_dirty()
        if rows:
            self._pending_rows.setdefault(state.cfg.name, []).extend(rows)
        state.section = self._section(state, now)
        self._publish()

    def _section(self, state: ProbeState, now: float) -> dict[str, Any]:
        last = state.last
        sla = state.sla.report(now)
        for name, seconds in (("24h", 86400), ("30d", 30 * 86400)):
            sla["windows"][name]["revenue_at_risk"] = round(window_revenue(state.cfg.impact,
                                                                           state.sla.sums(now, seconds)), 2)
        return {
            "status": state.status.value,
            "critical": state.cfg.critical,
            "type": state.cfg.type if not state.cfg.preset else f"{state.cfg.type}:{state.cfg.preset}",
            "latency_ms": None if last is None else round(last.latency_s * 1000, 3),
            "last_checked": state.last_checked,
            "last_transition": None if state.last_transition is None else state.last_transition.at,
            "last_result": None if last is None else last.status.value,
            "detail": "not checked yet" if last is None else last.detail,
            "measurements": {} if last is None else dict(last.measurements),
            "consecutive_failures": state.damper.consecutive_failures,
            "transitions": [t.as_dict() for t in state.transitions],
            "sla": sla,
            "impact": state.impact.as_dict(),
        }

    def _publish(self) -> None:
        views = [ProbeView(s.status, s.cfg.critical, s.last is not None) for s in self.probes.values()]
        status = overall(views)
        probes = {name: (s.section or self._section(s, self.clock())) for name, s in self.probes.items()}
        self._snapshot = {"status": status.value, "stale": False, "generated_at": self.clock(), "probes": probes}
        self._updated_mono = self.monotonic()
        self._health_cache = {}
        self._details_cache = None
        for fn in list(self._listeners):
            try:
                fn(self._snapshot)
            except Exception:
                self.listener_errors += 1
                if self.metrics is not None:
                    self.metrics.inc("health_listener_errors")
                _log.debug("health: snapshot listener failed", exc_info=True)

    def add_snapshot_listener(self, fn: SnapshotListener) -> None:
        """Call ``fn(details)`` on the health loop after every update. It must not block; errors are counted."""
        self._listeners.append(fn)

    def add_exposition(self, fn: Callable[[], str]) -> None:
        """More ``/metrics`` text (the container's request and business metrics), appended on every scrape."""
        self.expositions.append(fn)

    # -- reading the snapshot ---------------------------------------------------------------------

    def is_stale(self) -> bool:
        return bool(self.probes) and self.monotonic() - self._updated_mono > self.stale_after

    def details(self) -> dict[str, Any]:
        """The details dict (the current snapshot; do not mutate)."""
        snap = self._snapshot
        if self.is_stale():
            snap = {**snap, "stale": True}
        return snap

    def details_json(self) -> bytes:
        if self.is_stale():
            return json.dumps(self.details(), separators=(",", ":")).encode() + b"\n"
        if self._details_cache is None:
            self._details_cache = json.dumps(self._snapshot, separators=(",", ":")).encode() + b"\n"
        return self._details_cache

    def health(self) -> tuple[int, bytes]:
        """(HTTP status, body) for ``/health``: from the snapshot, cached until the next update."""
        stale = self.is_stale()
        cached = self._health_cache.get(stale)
        if cached is None:
            status = Status(self._snapshot["status"])
            body = json.dumps({"status": status.value, "stale": stale}).encode() + b"\n"
            cached = (http_status(status, stale), body)
            self._health_cache[stale] = cached
        return cached

    def counters(self) -> dict[str, dict[str, float]]:
        return {name: {"checks": s.runner.checks, "timeouts": s.runner.timeouts, "transitions": len(s.transitions)}
                for name, s in self.probes.items()}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, serve: bool = True) -> None:
        """Load history, start the probes and (``serve``) the HTTP server. Raises OSError if the port is taken."""
        with suppressed():  # the probe loops, the server and the persist loop inherit it
            await self._start(serve)

    async def _start(self, serve: bool) -> None:
        self._stop = asyncio.Event()
        if self.history is not None:
            await self._load_history()
        if serve:
            from pulsetrace.http_server import HealthServer, split_listen
            from pulsetrace.healthchecks.routes import Routes

            host, port = split_listen(self.cfg.health.listen)
            self.server = HealthServer(Routes(self).handle, host, port, max_connections=self.cfg.health.max_connections)
            await self.server.start()
        for state in self.probes.values():
            self._tasks.append(asyncio.create_task(state.runner.loop(self.record, self._stop),
                                                   name=f"pulsetrace-probe-{state.cfg.name}"))
        if self.history is not None:
            self._tasks.append(asyncio.create_task(self._persist_loop(), name="pulsetrace-health-persist"))

    async def _load_history(self) -> None:
        history = self.history
        assert history is not None
        now = self.clock()
        since = int(now // 60) - RETENTION_MINUTES
        loop = asyncio.get_running_loop()
        for name, state in self.probes.items():
            try:
                rows = await loop.run_in_executor(self._io, history.load_minutes, name, since)
                recent = await loop.run_in_executor(self._io, history.transitions, name, RECENT_TRANSITIONS)
            except Exception as exc:
                _log.warning("health: history of %s not loaded: %s", name, describe_error(exc))
                continue
            state.sla.load(rows, now)
            state.transitions.extend(recent)
            if recent:
                state.last_transition = recent[-1]
        for state in self.probes.values():
            state.section = {}
        self._publish()

    async def _persist_loop(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), PERSIST_INTERVAL)
            except asyncio.TimeoutError:
                pass
            await self.flush()

    async def flush(self) -> None:
        """Write pending SLA buckets and transitions to the store (on the I/O thread)."""
        if self.history is None:
            return
        rows, self._pending_rows = self._pending_rows, {}
        transitions, self._pending_transitions = self._pending_transitions, []
        now = self.clock()
        prune = now - self._last_prune > PRUNE_INTERVAL
        if prune:
            self._last_prune = now
        if not rows and not transitions and not prune:
            return
        history = self.history

        def write() -> None:
            for name, minute_rows in rows.items():
                latest = {r.minute: r for r in minute_rows}  # the last copy of a bucket wins
                history.save_minutes(name, list(latest.values()))
            history.add_transitions(transitions)
            if prune:
                history.prune(now)

        try:
            await asyncio.get_running_loop().run_in_executor(self._io, write)
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.inc("health_persist_errors")
            _log.warning("health: history not written: %s", describe_error(exc))

    async def run_round(self) -> dict[str, Any]:
        """Run every probe once, concurrently (``pulsetrace check``); returns the details dict."""
        async def one(state: ProbeState) -> None:
            self.record(state.runner, await state.runner.run_once())

        with suppressed():
            await asyncio.gather(*(one(s) for s in self.probes.values()))
        return self.details()

    async def stop(self, timeout: float = 2.0) -> None:
        with suppressed():  # closing the probes' connections is probe traffic too
            await self._stop_all(timeout)

    async def _stop_all(self, timeout: float) -> None:
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks = []
        if self.server is not None:
            await self.server.stop(timeout=min(timeout, 1.0))
        await asyncio.gather(*(s.runner.aclose() for s in self.probes.values()), return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception:
            pass
        self._io.shutdown(wait=False)
        logfilter.uninstall(self.redactor)

    async def serve_forever(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


class HealthHandle:
    """A :class:`HealthService` running on its own loop in a daemon thread."""

    def __init__(self, service: HealthService, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.service = service
        self.loop = loop
        self.thread = thread

    @property
    def port(self) -> int:
        return self.service.server.port if self.service.server is not None else 0

    def snapshot(self) -> dict[str, Any]:
        """A copy of the details dict."""
        fut = asyncio.run_coroutine_threadsafe(_copy_details(self.service), self.loop)
        try:
            return fut.result(timeout=2.0)
        except Exception:
            return copy.deepcopy(self.service.details())

    def add_snapshot_listener(self, fn: SnapshotListener) -> None:
        self.loop.call_soon_threadsafe(self.service.add_snapshot_listener, fn)

    def add_exposition(self, fn: Callable[[], str]) -> None:
        self.loop.call_soon_threadsafe(self.service.add_exposition, fn)

    def stop(self, timeout: float = 2.0) -> None:
        if not self.loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self.service.stop(timeout), self.loop)
        try:
            fut.result(timeout=timeout + 0.5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=max(0.1, timeout))


async def _copy_details(service: HealthService) -> dict[str, Any]:
    return copy.deepcopy(service.details())


def open_store(cfg: Config) -> LocalStore | None:
    try:
        from pulsetrace.store import LocalStore

        return LocalStore(cfg.store.path, retention_s=cfg.store.retention, max_mb=cfg.store.max_mb)
    except Exception as exc:
        _log.warning("health: local store unavailable, SLA history not kept: %s", describe_error(exc))
        return None


def start_in_thread(cfg: Config, child_alive: Callable[[], bool] | None = None, *,
                    store: LocalStore | None = None, metrics: SelfMetrics | None = None,
                    clock: Callable[[], float] = time.time) -> HealthHandle:
    """Run the health service in a daemon thread ``pulsetrace-health``; returns once it listens.

    Raises ``OSError`` when the health port cannot be bound (nothing is left running then).
    """
    if store is None:
        store = open_store(cfg)
    service = HealthService(cfg, store=store, child_alive=child_alive, clock=clock, metrics=metrics)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def main() -> None:  # runs with instrumentation suppressed, and so does every task created here
        asyncio.set_event_loop(loop)
        # Custom probes' blocking calls run in the default executor, which does not copy the context.
        loop.set_default_executor(executor(thread_name_prefix="asyncio"))

        async def boot() -> None:
            try:
                await service.start()
            except BaseException as exc:
                started.set_exception(exc)
                await service.stop(0.5)
                return
            started.set_result(None)

        loop.create_task(boot())
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()

    thread = start_worker("pulsetrace-health", main)
    try:
        started.result(timeout=30.0)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2.0)
        raise
    return HealthHandle(service, loop, thread)
