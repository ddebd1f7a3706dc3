"""The health runtime: probes on their schedules, status, SLA, impact, history, and the HTTP server.

:class:`HealthService` owns a :class:`ProbeRunner` per probe, the flap damper, SLA tracker
and impact tracker per probe, and the :class:`~pulsetrace.healthchecks.snapshot.SnapshotBoard`
the endpoints answer from. The probes, their results, the SLA accounting, the snapshot and
the history writes all run on a loop of their own (:class:`~pulsetrace.healthchecks.loop_thread.LoopThread`,
``pulsetrace-probes``); the :class:`~pulsetrace.http.HealthServer` runs on the loop
that called :meth:`HealthService.start`. The two meet only at the board (one reference swapped
per result) and the heartbeat book (a lock held for O(log n) per beat), so HTTP load can delay
an answer but never a probe, and staleness is judged by the probe loop's own watchdog.

Every result builds a new typed :class:`~pulsetrace.healthchecks.snapshot.HealthSnapshot`,
publishes it, notifies snapshot listeners (on the probe loop: they must not block), and queues
the changed SLA minute buckets and transitions for the local store, written by one I/O thread
every few seconds.

No data is not downtime: an UNKNOWN result (nothing to judge yet, such as a reader fleet before
its first heartbeat) counts in no SLA window and accrues no revenue at risk, and neither does a
DEGRADED result during ``health.startup_grace`` after the start (warming up; it is shown, not
counted). DOWN always counts.

:func:`pulsetrace.healthchecks.handle.start_in_thread` runs the server on a loop in a daemon thread (``pulsetrace run``);
``pulsetrace serve`` runs :meth:`HealthService.serve_forever` in the foreground. Never
raises into the host: a probe that cannot be built reports DOWN with the reason.

Probe traffic is not app traffic: nothing the service does is traced. Its entry points
suppress instrumentation for every task they create, and its threads suppress it from their
first instruction (:mod:`pulsetrace.background`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulsetrace.background import executor, suppressed
from pulsetrace.healthchecks import logfilter
from pulsetrace.healthchecks.base import Probe, ProbeContext, ProbeResult, Status, describe_error
from pulsetrace.healthchecks.damping import Damper, Transition
from pulsetrace.healthchecks.heartbeats import HeartbeatBook
from pulsetrace.healthchecks.impact import ImpactTracker
from pulsetrace.healthchecks.loop_thread import LoopThread
from pulsetrace.healthchecks.redact import Redactor
from pulsetrace.healthchecks.scheduler import ProbeRunner
from pulsetrace.healthchecks.sla import RETENTION_MINUTES, SlaTracker
from pulsetrace.healthchecks.snapshot import HealthSnapshot, ProbeSnapshot, SnapshotBoard, SnapshotListener
from pulsetrace.healthchecks.status import ProbeView, overall

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig
    from pulsetrace.http import HealthServer
    from pulsetrace.healthchecks.routes import Routes
    from pulsetrace.selfmetrics import SelfMetrics
    from pulsetrace.store import LocalStore
    from pulsetrace.healthchecks.history import HealthHistory

_log = logging.getLogger("pulsetrace.health")
PERSIST_INTERVAL = 5.0
PRUNE_INTERVAL = 3600.0
RECENT_TRANSITIONS = 20
#: How often the probe loop's watchdog says it is alive (and whether a result is overdue).
WATCHDOG_INTERVAL = 0.5
#: The interpreter's thread switch interval while the health server runs in this process.
SWITCH_INTERVAL_S = 0.001

__all__ = ["HealthService", "SnapshotListener", "open_store"]


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
    section: ProbeSnapshot | None = None

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
        self._redacting_logs = False  # the drivers' log records are redacted from start/run_round to stop
        hc = cfg.health
        self.started_at = clock()
        self.startup_grace = hc.startup_grace
        self.heartbeats = HeartbeatBook(max_readers=hc.max_readers, clock=clock)
        self._io = executor(max_workers=1, thread_name_prefix="pulsetrace-health-io")
        self.history: HealthHistory | None = None
        if store is not None and persist:
            from pulsetrace.healthchecks.history import HealthHistory

            self.history = HealthHistory(store)
        ctx = ProbeContext(redactor=self.redactor, heartbeats=self.heartbeats, store=store, clock=clock, io=self._io,
                           started_at=self.started_at, startup_grace=self.startup_grace)
        self.probes: dict[str, ProbeState] = {}
        for pc in hc.probes:
            runner = ProbeRunner(pc, self._build(pc, ctx), self.redactor)
            self.probes[pc.name] = ProbeState(
                cfg=pc, runner=runner,
                damper=Damper(pc.failure_threshold or hc.failure_threshold, pc.success_threshold or hc.success_threshold),
                sla=SlaTracker(pc.sla, degraded_is_available=hc.degraded_is_available,
                               min_samples=hc.burn_min_samples, min_failures=hc.burn_min_failures),
                impact=ImpactTracker(pc.impact))
        longest = max((p.interval + p.timeout for p in hc.probes), default=15.0)
        self.stale_after = hc.stale_factor * max((p.interval for p in hc.probes), default=15.0)
        self.stale_after = max(self.stale_after, longest)
        self._listeners: tuple[SnapshotListener, ...] = ()
        self._listeners_lock = threading.Lock()
        self._pending_rows: dict[str, list[Any]] = {}
        self._pending_transitions: list[Transition] = []
        self._last_result_mono = monotonic()
        self._probe_loop: LoopThread | None = None
        self._stop: asyncio.Event | None = None  # created on the probe loop
        self._tasks: list[asyncio.Task[None]] = []
        self.server: HealthServer | None = None
        self._routes: Routes | None = None
        self.listener_errors = 0
        self._last_prune = 0.0
        self.board = SnapshotBoard(self._build_snapshot(), self.stale_after, has_probes=bool(self.probes),
                                   monotonic=monotonic)

    def _build(self, pc: ProbeConfig, ctx: ProbeContext) -> Probe:
        from pulsetrace.healthchecks.registry import build_probe

        try:
            return build_probe(pc, ctx)
        except Exception as exc:
            reason = self.redactor.scrub(f"probe cannot be built: {describe_error(exc)}")
            _log.warning("health: %s: %s", pc.name, reason)
            return _BrokenProbe(reason)

    # -- results (the probe loop) ----------------------------------------------------------------

    def in_grace(self, now: float) -> bool:
        return now - self.started_at < self.startup_grace

    def _counted(self, status: Status, at: float) -> Status:
        """The status SLA and impact count for time at ``at``: DEGRADED while warming up counts as no data."""
        return Status.UNKNOWN if status is Status.DEGRADED and self.in_grace(at) else status

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
        state.impact.advance(self._counted(before if previous_at is not None else Status.UNKNOWN, now - covered),
                             now, covered)
        if changed is not None:
            t = Transition(state.cfg.name, now, before, changed, result.detail or result.status.value)
            state.last_transition = t
            state.transitions.append(t)
            self._pending_transitions.append(t)
            level = logging.WARNING if changed is Status.DOWN else logging.INFO
            _log.log(level, "health: %s %s -> %s: %s", t.probe, t.from_status.value, t.to_status.value, t.reason)
            state.impact.advance(self._counted(changed, now), now, 0.0)
        state.last = result
        state.last_checked = now
        # No data is not downtime: nothing is counted for a verdict-less (UNKNOWN) result, and a slow
        # answer while the service warms up (cold connections, caches) is not held against it. DOWN
        # always counts: a dependency that is down at start is down.
        state.sla.record(now, self._counted(result.status, now), result.latency_s, covered)
        rows = state.sla.take_dirty()
        if rows:
            self._pending_rows.setdefault(state.cfg.name, []).extend(rows)
        state.section = self._section(state, now)
        self._last_result_mono = self.monotonic()
        self._publish()

    def _section(self, state: ProbeState, now: float) -> ProbeSnapshot:
        last = state.last
        impact = state.cfg.impact
        return ProbeSnapshot(
            status=state.status, critical=state.cfg.critical,
            type=state.cfg.type if not state.cfg.preset else f"{state.cfg.type}:{state.cfg.preset}",
            latency_ms=None if last is None else round(last.latency_s * 1000, 3),
            last_checked=state.last_checked,
            last_transition=None if state.last_transition is None else state.last_transition.at,
            last_result=None if last is None else last.status,
            detail="not checked yet" if last is None else last.detail,
            measurements={} if last is None else dict(last.measurements),
            consecutive_failures=state.damper.consecutive_failures,
            transitions=tuple(state.transitions),
            sla=state.sla.report(now, revenue_per_minute=impact.revenue_per_minute,
                                 degraded_weight=impact.degraded_weight),
            impact=state.impact.report())

    def _build_snapshot(self) -> HealthSnapshot:
        views = [ProbeView(s.status, s.cfg.critical, s.last is not None) for s in self.probes.values()]
        now = self.clock()
        probes = {}
        for name, s in self.probes.items():
            if s.section is None:
                s.section = self._section(s, now)
            probes[name] = s.section
        return HealthSnapshot(status=overall(views), stale=False, generated_at=now, probes=probes)

    def _publish(self) -> None:
        snap = self._build_snapshot()
        self.board.publish(snap)
        for fn in self._listeners:
            try:
                fn(snap)
            except Exception:
                self.listener_errors += 1
                if self.metrics is not None:
                    self.metrics.inc("health_listener_errors")
                _log.debug("health: snapshot listener failed", exc_info=True)

    def add_snapshot_listener(self, fn: SnapshotListener) -> None:
        """Call ``fn(snapshot)`` on the probe loop after every update (from any thread).

        ``fn`` must be quick and must not block (store the snapshot, set an event); its errors are
        counted (``health_listener_errors``), never raised.
        """
        with self._listeners_lock:
            self._listeners = (*self._listeners, fn)

    def add_exposition(self, fn: Callable[[], str]) -> None:
        """More ``/metrics`` text (the container's request and business metrics), appended on every scrape."""
        self.expositions.append(fn)

    # -- reading the snapshot (any thread) ---------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        """The current snapshot, stale or not: what every reader reads."""
        return self.board.read()

    def is_stale(self) -> bool:
        return self.board.is_stale()

    def details(self) -> dict[str, Any]:
        """The details JSON of the current snapshot, as plain data."""
        return self.snapshot().to_dict()

    def details_json(self) -> bytes:
        return self.board.details_json()

    def health(self) -> tuple[int, bytes]:
        """(HTTP status, body) for ``/health``: from the snapshot, prebuilt until the next update."""
        return self.board.health()

    def counters(self) -> dict[str, dict[str, float]]:
        return {name: {"checks": s.runner.checks, "timeouts": s.runner.timeouts, "transitions": len(s.transitions)}
                for name, s in self.probes.items()}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, serve: bool = True, own_process: bool = True) -> None:
        """Start the probes on their own loop and (``serve``) the HTTP server on this one.

        ``own_process``: this process exists for the agent (``pulsetrace run``'s supervisor,
        ``serve``), so its interpreter settings may favour the health server; ``False`` when it is
        the application's own process (``opentelemetry-instrument`` with ``PULSETRACE_HEALTH=1``),
        whose settings are left as they are. Raises OSError if the port is taken (nothing is left
        running then).
        """
        self._redact_logs()
        with suppressed():  # the server's tasks inherit it; the probe loop's thread has its own
            if serve and own_process:
                # This process answers health checks: a thread holding the GIL (a probe round, a
                # heartbeat batch) hands it to the server within 1 ms, not Python's default 5 ms.
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            if serve:
                from pulsetrace.http import HealthServer, ServerLimits, split_listen
                from pulsetrace.healthchecks.routes import Routes

                hc = self.cfg.health
                host, port = split_listen(hc.listen)
                routes = self._routes = Routes(self)
                self.server = HealthServer(routes.handle, host, port, limits=ServerLimits.from_config(hc),
                                           priority=routes.priority, metrics=self.metrics)
                await self.server.start()
            self._probe_loop = LoopThread("pulsetrace-probes")
            await self._probe_loop.run(self._start_probes())

    async def _start_probes(self) -> None:
        self._stop = asyncio.Event()
        if self.history is not None:
            await self._load_history()
        for state in self.probes.values():
            self._tasks.append(asyncio.create_task(state.runner.loop(self.record, self._stop),
                                                   name=f"pulsetrace-probe-{state.cfg.name}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="pulsetrace-health-watchdog"))
        if self.history is not None:
            self._tasks.append(asyncio.create_task(self._persist_loop(), name="pulsetrace-health-persist"))

    async def _watchdog(self) -> None:
        """Tell the board the probe loop is alive, and whether a result is overdue by this loop's clock."""
        assert self._stop is not None
        while not self._stop.is_set():
            overdue = bool(self.probes) and self.monotonic() - self._last_result_mono > self.stale_after
            self.board.tick(overdue)
            try:
                await asyncio.wait_for(self._stop.wait(), WATCHDOG_INTERVAL)
            except asyncio.TimeoutError:
                pass

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
            state.section = None
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

    async def run_round(self) -> HealthSnapshot:
        """Run every probe once, concurrently, on this loop (``pulsetrace check``); returns the snapshot."""
        async def one(state: ProbeState) -> None:
            self.record(state.runner, await state.runner.run_once())

        self._redact_logs()
        with suppressed():
            await asyncio.gather(*(one(s) for s in self.probes.values()))
        return self.snapshot()

    def _redact_logs(self) -> None:
        """From the first probe on, a driver's log record that echoes a secret is redacted (until :meth:`stop`).

        Not at construction: the record factory is process-wide, and a service built and never
        started or stopped must not leave it installed.
        """
        if not self._redacting_logs:
            self._redacting_logs = True
            logfilter.install(self.redactor)

    async def stop(self, timeout: float = 2.0) -> None:
        with suppressed():  # closing the probes' connections is probe traffic too
            if self.server is not None:
                await self.server.stop(timeout=min(timeout, 1.0))
            if self._routes is not None:
                self._routes.close()
            probe_loop, self._probe_loop = self._probe_loop, None
            if probe_loop is not None:
                try:
                    await asyncio.wait_for(probe_loop.run(self._stop_probes(timeout)), timeout + 1.0)
                except Exception:
                    _log.debug("health: stopping the probes", exc_info=True)
                await asyncio.to_thread(probe_loop.stop, 1.0)
            else:
                await self._stop_probes(timeout)
            self._io.shutdown(wait=False)
            if self._redacting_logs:
                self._redacting_logs = False
                logfilter.uninstall(self.redactor)

    async def _stop_probes(self, timeout: float) -> None:
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks = []
        await asyncio.gather(*(s.runner.aclose() for s in self.probes.values()), return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception:
            pass

    async def serve_forever(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


def open_store(cfg: Config) -> LocalStore | None:
    try:
        from pulsetrace.store import LocalStore

        return LocalStore(cfg.store.path, retention_s=cfg.store.retention, max_mb=cfg.store.max_mb)
    except Exception as exc:
        _log.warning("health: local store unavailable, SLA history not kept: %s", describe_error(exc))
        return None
