"""Delivery: one lane per channel, each a bounded queue and an untraced thread; retries, rate limits, deadlines.

A lane sends its deliveries one at a time, no faster than the channel's ``rate_per_minute``,
and waits as long as a 429's ``Retry-After`` asks (the channel is paused, nothing is lost).
A failure that may pass (429, 5xx, no answer, a timeout) is retried with exponential back-off
and jitter (1 s, 2 s, 4 s ... at most 60 s) until the delivery's deadline; then it is dropped.
One lane per channel so that a channel that hangs or fails costs only its own messages: the
others, the probes and ``/health`` never wait for it.

Every lost message is counted in ``alerts_dropped{reason}`` (reasons: :data:`AlertDropReason`);
every delivered one in ``alerts_sent{channel}``; ``alerts_queued`` is a gauge. :meth:`submit`
never blocks and never raises. Threads are named ``pulsetrace-alerts-CHANNEL`` and run with
instrumentation suppressed (:mod:`pulsetrace.background`): an alert's HTTP call is never a span.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from pulsetrace.alerts.channels import Channel
from pulsetrace.alerts.model import Delivery, DeliveryResult, Notice
from pulsetrace.background import start_worker
from pulsetrace.selfmetrics import SelfMetrics

__all__ = ["AlertDropReason", "DeliveryWorker"]

_log = logging.getLogger("pulsetrace.alerts")

#: Why an alert message was lost (``alerts_dropped{reason=REASON:CHANNEL}``).
AlertDropReason = Literal[
    "queue_full",    # the channel's bounded queue was full (the channel is slow or down)
    "deadline",      # not delivered within ``delivery_deadline`` (retries and rate limits included)
    "rejected",      # the service refused it for good (4xx other than 429/408): a configuration problem
    "shutdown",      # still queued when the agent stopped
    "unknown_channel",
]
#: Called once per delivery when it is done: (delivery, last result, drop reason or ``None`` if delivered).
DoneCallback = Callable[[Delivery, DeliveryResult, "AlertDropReason | None"], None]

MAX_BACKOFF = 60.0


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before attempt ``attempts + 1``: 1, 2, 4 ... capped at 60, with ±25 % jitter."""
    base = min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1))
    return base * (0.75 + 0.5 * rng.random())


class _Lane:
    def __init__(self, channel: Channel, worker: DeliveryWorker) -> None:
        self.channel = channel
        self.worker = worker
        self.queue: collections.deque[tuple[float, Delivery]] = collections.deque()
        self.cond = threading.Condition()
        self.paused_until = 0.0
        self.next_slot = 0.0
        self.busy = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = start_worker(f"pulsetrace-alerts-{self.channel.name}"[:64], self.run)

    def depth(self) -> int:
        return len(self.queue) + int(self.busy)

    def put(self, delivery: Delivery, not_before: float = 0.0, front: bool = False) -> bool:
        with self.cond:
            if not front and len(self.queue) >= self.worker.queue_size:
                return False
            (self.queue.appendleft if front else self.queue.append)((not_before, delivery))
            self.cond.notify()
            return True

    def run(self) -> None:
        w = self.worker
        spacing = 60.0 / max(self.channel.rate_per_minute, 0.001)
        while True:
            with self.cond:
                while True:
                    if w.stopping and (not self.queue or w.clock() >= w.drain_deadline):
                        self._drop_all("shutdown")
                        return
                    now = w.clock()
                    ready_at = max(self.paused_until, self.next_slot, self.queue[0][0]) if self.queue else None
                    if ready_at is not None and ready_at <= now:
                        _, delivery = self.queue.popleft()
                        self.busy = True
                        break
                    timeout = 1.0 if ready_at is None else min(1.0, ready_at - now)
                    if w.stopping:
                        timeout = min(timeout, max(0.0, w.drain_deadline - now))
                    self.cond.wait(timeout)
            try:
                self._attempt(delivery, spacing)
            except Exception:  # a bug of ours: the message is lost and counted, the lane lives on
                _log.debug("alerts: delivery failed", exc_info=True)
                w.finish(delivery, DeliveryResult(self.channel.name, False, None, "internal error"), "rejected")
            finally:
                self.busy = False

    def _attempt(self, delivery: Delivery, spacing: float) -> None:
        w = self.worker
        now = w.clock()
        if now >= delivery.deadline:
            w.finish(delivery, DeliveryResult(self.channel.name, False, None, "deadline passed"), "deadline")
            return
        self.next_slot = now + spacing
        result = self.channel.send(delivery.notice)
        delivery = Delivery(delivery.notice, delivery.channel, delivery.deadline, delivery.attempts + 1)
        if result.ok:
            w.finish(delivery, result, None)
            return
        now = w.clock()
        if result.retry_after is not None:
            # Rate limited: the whole channel waits, this message goes first when it may.
            self.paused_until = now + result.retry_after
        if not result.retryable:
            w.finish(delivery, result, "rejected")
            return
        wait = result.retry_after if result.retry_after is not None else backoff(delivery.attempts, w.rng)
        if now + wait >= delivery.deadline:
            w.finish(delivery, result, "deadline")
            return
        w.metrics.inc("alerts_retried", 1, self.channel.name)
        self.put(delivery, now + wait, front=True)

    def _drop_all(self, reason: AlertDropReason) -> None:
        while self.queue:
            _, delivery = self.queue.popleft()
            self.worker.finish(delivery, DeliveryResult(self.channel.name, False, None, reason), reason)


class DeliveryWorker:
    """The channels' lanes. Thread-safe; :meth:`start` once, :meth:`shutdown` once."""

    def __init__(self, channels: Mapping[str, Channel], metrics: SelfMetrics, *, queue_size: int = 256,
                 deadline_s: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 on_done: DoneCallback | None = None, seed: int | None = None) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.deadline_s = deadline_s
        self.clock = clock
        self.on_done = on_done
        self.rng = random.Random(seed)
        self.stopping = False
        self.drain_deadline = 0.0
        self.lanes = {name: _Lane(ch, self) for name, ch in channels.items()}
        metrics.gauge_fn("alerts_queued", lambda: float(sum(lane.depth() for lane in self.lanes.values())))

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()

    def submit(self, notice: Notice, channels: tuple[str, ...] | list[str]) -> int:
        """Queue ``notice`` for each channel; returns how many were queued (the rest are counted drops)."""
        queued = 0
        for name in channels:
            delivery = Delivery(notice, name, self.clock() + self.deadline_s)
            lane = self.lanes.get(name)
            if lane is None:
                self.finish(delivery, DeliveryResult(name, False, None, "unknown channel"), "unknown_channel")
            elif self.stopping or not lane.put(delivery):
                self.finish(delivery, DeliveryResult(name, False, None, "queue full"), "queue_full")
            else:
                queued += 1
        return queued

    def finish(self, delivery: Delivery, result: DeliveryResult, dropped: AlertDropReason | None) -> None:
        if dropped is None:
            self.metrics.inc("alerts_sent", 1, delivery.channel)
        else:
            self.metrics.inc("alerts_dropped", 1, f"{dropped}:{delivery.channel}")
            _log.warning("alerts: %s message to %s dropped (%s): %s", delivery.notice.alert.key, delivery.channel,
                         dropped, result.detail)
        if self.on_done is not None:
            try:
                self.on_done(delivery, result, dropped)
            except Exception:
                _log.debug("alerts: on_done callback failed", exc_info=True)

    def idle(self) -> bool:
        return all(lane.depth() == 0 for lane in self.lanes.values())

    def flush(self, timeout: float) -> bool:
        """Wait until every lane is empty (or ``timeout``); ``True`` when all were delivered or dropped."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.idle():
                return True
            time.sleep(0.02)
        return self.idle()

    def shutdown(self, timeout: float = 2.0) -> None:
        """Deliver what can be within ``timeout``; the rest is dropped as ``shutdown``."""
        self.stopping = True
        self.drain_deadline = self.clock() + timeout
        for lane in self.lanes.values():
            with lane.cond:
                lane.cond.notify_all()
        end = time.monotonic() + timeout + 0.5
        for lane in self.lanes.values():
            if lane.thread is not None:
                lane.thread.join(max(0.0, end - time.monotonic()))
