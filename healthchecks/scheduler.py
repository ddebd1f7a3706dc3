"""Runs each probe on its own cadence, with a hard timeout, and never lets one probe stall another.

One asyncio task per probe. Each round starts at ``interval × (1 ± jitter)`` after the
previous round started (the first round at once), runs ``check()`` as a separate task and
waits at most ``timeout`` for it. On timeout the check is cancelled and the round reports
DOWN *without waiting for the cancellation to finish* (``asyncio.wait_for`` would wait,
and a driver stuck in cleanup would then stretch the timeout); if a cancelled check is
still winding down when the next round is due, that round is DOWN too and no second check
starts, so a probe never overlaps itself. The drivers' own timeouts are set to the probe
timeout as well, so an abandoned check ends by itself soon after.

The check runs with OpenTelemetry instrumentation suppressed (probe traffic is not app
traffic): the health service's entry points suppress it for every task they start, these
included (:mod:`pulsetrace.healthchecks.service`). Results are redacted again here,
whatever the probe did.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pulsetrace.healthchecks.base import Measurement, Probe, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig
    from pulsetrace.healthchecks.redact import Redactor

_log = logging.getLogger("pulsetrace.health")
MAX_DETAIL = 300

#: Called after every round: (runner, result, wall-clock time of the result).
ResultSink = Callable[["ProbeRunner", ProbeResult], None]


class ProbeRunner:
    """The schedule and hard timeout of one probe."""

    def __init__(self, cfg: ProbeConfig, probe: Probe, redactor: Redactor, *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.probe = probe
        self.redactor = redactor
        self.rng = rng or random.Random()
        self.checks = 0
        self.timeouts = 0
        self._inflight: asyncio.Future[ProbeResult] | None = None

    def next_delay(self) -> float:
        jitter = self.cfg.jitter
        return self.cfg.interval * (1.0 + self.rng.uniform(-jitter, jitter))

    async def run_once(self) -> ProbeResult:
        """One check within the hard timeout; never raises (but propagates its own cancellation)."""
        self.checks += 1
        started = time.perf_counter()
        if self._inflight is not None and not self._inflight.done():
            return ProbeResult(Status.DOWN, 0.0, "previous check still running past its timeout; not started again")
        task = asyncio.ensure_future(self.probe.check())
        self._inflight = task
        try:
            done, _ = await asyncio.wait({task}, timeout=self.cfg.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task not in done:
            self.timeouts += 1
            task.cancel()
            task.add_done_callback(_consume)
            return ProbeResult(Status.DOWN, self.cfg.timeout, f"timed out after {self.cfg.timeout:g}s")
        self._inflight = None
        if task.cancelled():
            return ProbeResult(Status.DOWN, time.perf_counter() - started, "check was cancelled")
        exc = task.exception()
        if exc is not None:
            return ProbeResult(Status.DOWN, time.perf_counter() - started,
                               self._clean(f"check failed: {describe_error(exc)}"))
        result = task.result()
        if not isinstance(result, ProbeResult):
            return ProbeResult(Status.UNKNOWN, time.perf_counter() - started,
                               f"check returned {type(result).__name__}, not a ProbeResult")
        return ProbeResult(result.status if isinstance(result.status, Status) else Status.UNKNOWN,
                           max(0.0, float(result.latency_s)), self._clean(result.detail),
                           self._clean_measurements(result))

    def _clean(self, text: str) -> str:
        out = self.redactor.scrub(text)
        return out if len(out) <= MAX_DETAIL else out[: MAX_DETAIL - 3] + "..."

    def _clean_measurements(self, result: ProbeResult) -> dict[str, Measurement]:
        out: dict[str, Measurement] = {}
        for key, value in list(result.measurements.items())[:50]:
            if isinstance(value, str):
                out[str(key)] = self._clean(value)
            elif isinstance(value, list):
                out[str(key)] = [self._clean(str(v)) for v in value[:100]]
            elif isinstance(value, (int, float, bool)):
                out[str(key)] = value
        return out

    async def loop(self, sink: ResultSink, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                result = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # defensive: run_once does not raise
                result = ProbeResult(Status.DOWN, 0.0, self._clean(f"scheduler error: {describe_error(exc)}"))
            try:
                sink(self, result)
            except Exception:
                _log.exception("health: recording a result of %s failed", self.name)
            delay = self.next_delay() - (loop.time() - started)
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
        close = getattr(self.probe, "aclose", None)
        if close is not None:
            try:
                await asyncio.wait_for(close(), timeout=1.0)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                _log.debug("health: closing probe %s failed", self.name, exc_info=True)


def _consume(task: asyncio.Future[ProbeResult]) -> None:
    """Retrieve an abandoned check's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
