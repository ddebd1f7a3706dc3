"""The alert service of one container: evaluates every source, keeps the open alerts, hands notices to delivery.

Runs on its own untraced thread, ``pulsetrace-alerts``, woken by a new health snapshot (the health
service's snapshot listener only stores the latest and sets an event: it never blocks the probes'
loop) or by the next timer (group_wait, repeats, ``evaluate_interval`` for the store sources).
Delivery is the :class:`~pulsetrace.alerts.worker.DeliveryWorker`'s, one lane per channel.

Started only where probes run (``pulsetrace run``'s supervisor, ``pulsetrace serve``): one
process per container delivers, never each worker of the app. Never raises into its caller
after :meth:`AlertService.start`; a failing source is logged at debug level and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pulsetrace.alerts.book import AlertBook, load_open
from pulsetrace.alerts.channels import build_channel
from pulsetrace.alerts.engine import AlertEngine
from pulsetrace.alerts.routing import silences_from
from pulsetrace.alerts.sources import (BUSINESS_SCOPE, DROP_SCOPE, SNAPSHOT_SCOPE, DropWatch, business_alerts,
                                       drop_alert, operation_counts, snapshot_alerts, undecided_keys)
from pulsetrace.alerts.worker import DeliveryWorker
from pulsetrace.background import start_worker
from pulsetrace.config.schema import Config
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import CounterWriter, LocalStore

__all__ = ["AlertService"]

_log = logging.getLogger("pulsetrace.alerts")
COUNTERS_EVERY = 5.0
#: Least time between two evaluation passes (seconds).
MIN_GAP = 0.1
#: The agent's own drop counters that raise ``agent:dropped`` (alerts' own drops would feed themselves).
DROP_COUNTERS = ("spans_dropped", "metrics_dropped")


class AlertService:
    def __init__(self, cfg: Config, metrics: SelfMetrics | None = None, *, clock: Callable[[], float] = time.time,
                 store: LocalStore | None = None, worker: DeliveryWorker | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or SelfMetrics()
        self.clock = clock
        self.store = store if store is not None else LocalStore(cfg.store.path, retention_s=cfg.store.retention)
        self.engine = AlertEngine(cfg.alerts, silences_from(cfg.alerts))
        channels = {c.name: build_channel(c) for c in cfg.alerts.channels}
        self.worker = worker or DeliveryWorker(channels, self.metrics, queue_size=cfg.alerts.queue_size,
                                               deadline_s=cfg.alerts.delivery_deadline)
        self.book = AlertBook(self.store)
        self.counters = CounterWriter(cfg.store.path, self.metrics, retention_s=cfg.store.retention)
        self.drops = DropWatch(cfg.alerts.drop_window, cfg.alerts.evaluate_interval)
        self._snapshot: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_store_look = 0.0
        self._next_counters = 0.0

    # -- inputs --------------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Any) -> None:
        """Health snapshot listener: keeps the latest, wakes the evaluator. O(1), never blocks.

        Takes the details dict (``/health/details``) or a typed snapshot with ``to_dict()`` giving
        it; the conversion happens on the evaluator's thread, never on the probes' loop.
        """
        self._snapshot = snapshot
        self._wake.set()

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self) -> float:
        """One pass: every source, then what is due; returns the seconds until the next pass is needed."""
        now = self.clock()
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            to_dict = getattr(snapshot, "to_dict", None)
            details: Mapping[str, Any] = to_dict() if callable(to_dict) else snapshot
            self.engine.observe(snapshot_alerts(self.cfg, details, now), SNAPSHOT_SCOPE, now,
                                undecided_keys(details))
        interval = self.cfg.alerts.evaluate_interval
        if now >= self._next_store_look:
            self._next_store_look = now + interval
            self._look_at_store(now)
        for out in self.engine.due(now):
            self.worker.submit(out.notice, out.channels)
        if self.engine.changed:
            self.engine.changed = False
            if not self.book.save(self.engine.open.values()):
                self.metrics.inc("alerts_book_errors")
        if now >= self._next_counters:
            self._next_counters = now + COUNTERS_EVERY
            self.counters()
        wait = self.engine.next_wakeup(now)
        return min(interval, max(self._next_store_look - now, 0.0), wait if wait is not None else interval)

    def _look_at_store(self, now: float) -> None:
        a = self.cfg.alerts
        try:
            counts = operation_counts(self.store.connect, list(a.failure_rates), now - a.failure_window)
            self.engine.observe(business_alerts(self.cfg, counts, now), BUSINESS_SCOPE, now)
        except Exception:
            self.metrics.inc("alerts_source_errors", 1, "business")
            _log.debug("alerts: business rates not read", exc_info=True)
        try:
            by_reason = {f"{n}:{r}": v for (n, r), v in self.store.counters().items() if n in DROP_COUNTERS}
            self.drops.feed(sum(by_reason.values()), now)
            self.engine.observe(drop_alert(self.cfg, self.drops, by_reason, now), DROP_SCOPE, now)
        except Exception:
            self.metrics.inc("alerts_source_errors", 1, "drops")
            _log.debug("alerts: drop counters not read", exc_info=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        # A restart (a deploy during an outage) carries on with what the previous process sent.
        self.engine.adopt(load_open(self.store))
        self.worker.start()
        self._thread = start_worker("pulsetrace-alerts", self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before evaluating: a snapshot arriving during it wakes the next pass
            try:
                wait = self.evaluate()
            except Exception:
                self.metrics.inc("alerts_source_errors", 1, "engine")
                _log.warning("alerts: evaluation failed", exc_info=True)
                wait = 1.0
            # Snapshots arriving faster than this are coalesced (only the latest matters), so a burst
            # of probe results costs the probes' loop no more than a few passes of evaluation.
            if self._stop.wait(MIN_GAP):
                return
            self._wake.wait(max(0.0, wait - MIN_GAP))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop evaluating; give queued messages up to ``timeout`` to leave; write the counters."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(min(1.0, timeout))
        self.worker.shutdown(max(0.1, timeout - 0.5))
        try:
            self.counters()
        except Exception:
            pass
        self.store.close()
