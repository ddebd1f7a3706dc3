"""Health metrics for CloudWatch from the typed health snapshot (what ``/health/details`` shows).

Per probe (dimensions ``Service, Environment, Probe``): ``ProbeStatus`` (0 UP,
1 DEGRADED, 2 DOWN), ``ProbeUp`` (1 UP or DEGRADED, 0 DOWN, one sample per probe
result, so its Average over a period is the share of results that were up),
``ProbeLatency`` (ms, a distribution over the interval's results), ``RevenueAtRisk``
and ``UsersAffected``; per probe and SLA window (``+ Window``): ``Availability``
and ``ErrorBudgetRemaining`` (percent) and ``BurnRate``; for the service:
``HealthStatus`` (0/1/2 like ProbeStatus) and ``HealthScore`` (0-100,
:mod:`pulsetrace.healthchecks.score`). A probe (or the service) that is
``UNKNOWN`` has no status data that interval rather than a made-up number.

:func:`health_listener` gives the callable to register with the health service's
snapshot listeners (:func:`wire_health_metrics` does the wiring for ``run``/``serve``); it only stores the snapshot and a few counters (never I/O,
never raises). Probe names come from the configuration, so they are safe as
dimension values; nothing of a probe's ``detail`` text is ever used.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pulsetrace.healthchecks.score import health_score
from pulsetrace.metrics.datum import (
    Dimensions,
    MetricDatum,
    base_dimensions,
    bucket_index,
    clean_dimension_value,
    distribution_datum,
    stats_datum,
    value_datum,
)
from pulsetrace.metrics.publisher import MetricsPublisher, build_publisher

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.healthchecks.snapshot import HealthSnapshot, SnapshotListener
    from pulsetrace.selfmetrics import SelfMetrics

_log = logging.getLogger("pulsetrace.metrics")

STATUS_VALUES: dict[str, int] = {"UP": 0, "DEGRADED": 1, "DOWN": 2}
#: SLA windows and burn-rate windows emitted (others in the snapshot are ignored: bounded cardinality).
WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "6h", "24h", "3d", "7d", "30d")
_MAX_PROBES = 100


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _percent(value: float | None) -> float | None:
    """A fraction of 1 from the SLA report (``budget_remaining`` 0.4, or -0.2 when overspent) in
    percent, the unit the SLA target and the alarms use. ``availability`` is a percent already."""
    v = _finite(value)
    return None if v is None else round(v * 100.0, 6)


def _probe_dims(dims: Dimensions, name: str) -> Dimensions:
    return dims + (("Probe", clean_dimension_value(name, limit=64)),)


def health_datums(snapshot: HealthSnapshot, dims: Dimensions, now: float) -> list[MetricDatum]:
    """The point-in-time health data of one snapshot (no ProbeUp/ProbeLatency samples: see the source)."""
    out: list[MetricDatum] = []
    overall = STATUS_VALUES.get(snapshot.status.value)
    if overall is not None:
        out.append(value_datum("HealthStatus", "None", dims, now, overall))
    score = health_score(snapshot)
    if score is not None:
        out.append(value_datum("HealthScore", "None", dims, now, score))
    for name, probe in list(snapshot.probes.items())[:_MAX_PROBES]:
        pdims = _probe_dims(dims, name)
        status = STATUS_VALUES.get(probe.status.value)
        if status is not None:
            out.append(value_datum("ProbeStatus", "None", pdims, now, status))
        if status is not None:  # an UNKNOWN probe has no impact figures rather than made-up zeros
            revenue = _finite(probe.impact.revenue_at_risk)
            if revenue is not None:
                out.append(value_datum("RevenueAtRisk", "None", pdims, now, revenue))
            out.append(value_datum("UsersAffected", "Count", pdims, now, float(probe.impact.users_affected)))
        for window in WINDOWS:
            w = probe.sla.windows.get(window)
            if w is None:
                continue
            wdims = pdims + (("Window", window),)
            availability = _finite(w.availability)  # percent in the snapshot, like the target
            if availability is not None:
                out.append(value_datum("Availability", "Percent", wdims, now, availability))
            budget = _percent(w.budget_remaining)
            if budget is not None:
                out.append(value_datum("ErrorBudgetRemaining", "Percent", wdims, now, budget))
        for window in WINDOWS:
            rate = _finite(probe.sla.burn_rates.get(window))
            if rate is not None:
                out.append(value_datum("BurnRate", "None", pdims + (("Window", window),), now, rate))
    return out


class HealthMetricsSource:
    """Keeps the latest snapshot and, per probe, the results seen since the last flush."""

    def __init__(self, dims: Dimensions) -> None:
        self.dims = dims
        self._lock = threading.Lock()
        self._latest: HealthSnapshot | None = None
        self._seen: dict[str, float | None] = {}  # probe → last_checked of the last result counted
        self._up: dict[str, list[float]] = {}  # probe → [results, up]
        self._latency: dict[str, tuple[dict[int, list[float]], list[float]]] = {}  # probe → (buckets, [lo, hi])

    def on_snapshot(self, snapshot: HealthSnapshot) -> None:
        """The snapshot listener: cheap, never raises."""
        try:
            self._on_snapshot(snapshot)
        except Exception:
            _log.debug("health snapshot not understood", exc_info=True)

    def _on_snapshot(self, snapshot: HealthSnapshot) -> None:
        with self._lock:
            self._latest = snapshot
            for name, probe in list(snapshot.probes.items())[:_MAX_PROBES]:
                checked = probe.last_checked
                status = probe.status.value
                if checked is None or status not in STATUS_VALUES or self._seen.get(name) == checked:
                    continue  # no new result for this probe
                self._seen[name] = checked
                up = self._up.setdefault(name, [0.0, 0.0])
                up[0] += 1
                up[1] += 1.0 if status != "DOWN" else 0.0
                latency = _finite(probe.latency_ms)
                if latency is not None and latency >= 0:
                    buckets, bounds = self._latency.setdefault(name, ({}, [math.inf, 0.0]))
                    b = buckets.setdefault(bucket_index(latency), [0.0, 0.0])
                    b[0] += 1
                    b[1] += latency
                    bounds[0] = min(bounds[0], latency)
                    bounds[1] = max(bounds[1], latency)

    def collect(self, now: float) -> list[MetricDatum]:
        with self._lock:
            latest = self._latest
            up, self._up = self._up, {}
            latency, self._latency = self._latency, {}
        if latest is None:
            return []
        out = health_datums(latest, self.dims, now)
        for name, probe in list(latest.probes.items())[:_MAX_PROBES]:
            pdims = _probe_dims(self.dims, name)
            counts = up.get(name)
            if counts is None:
                # No new result this interval: the current state stands as one sample.
                status = probe.status.value
                if status in STATUS_VALUES:
                    counts = [1.0, 1.0 if status != "DOWN" else 0.0]
            if counts is not None:
                results, ups = counts
                out.append(stats_datum("ProbeUp", "None", pdims, now, results, ups,
                                       0.0 if ups < results else 1.0, 1.0 if ups > 0 else 0.0))
            lat = latency.get(name)
            if lat is not None:
                buckets, (lo, hi) = lat
                out.append(distribution_datum("ProbeLatency", "Milliseconds", pdims, now, buckets, lo, hi))
        return out


def health_listener(cfg: Config, publisher: MetricsPublisher) -> SnapshotListener:
    """A snapshot listener that feeds ``publisher`` (register it with ``HealthService.add_snapshot_listener``)."""
    source = HealthMetricsSource(base_dimensions(cfg))
    publisher.add_source(source.collect)
    return source.on_snapshot


def wire_health_metrics(cfg: Config, add_snapshot_listener: Callable[[SnapshotListener], None],
                        metrics: SelfMetrics, publisher: MetricsPublisher | None = None) -> MetricsPublisher | None:
    """Send the health service's snapshots to CloudWatch; returns a publisher the caller must shut down.

    In a process where the agent runs, pass its ``agent.recorder.publisher`` (one publisher per process,
    so the self-metrics are not sent twice); ``None`` is then returned. Otherwise (``pulsetrace run``'s
    supervisor, ``pulsetrace serve`` without an agent) a publisher is built for ``cfg`` with ``metrics``
    as its self-metrics, started and returned. Also ``None`` when ``metrics.cloudwatch.mode`` is off.
    """
    owned = None
    if publisher is None:
        publisher = owned = build_publisher(cfg, metrics)
        if publisher is None:
            return None
    add_snapshot_listener(health_listener(cfg, publisher))
    if owned is not None:
        owned.start()
    return owned


def publish_health(snapshot: HealthSnapshot, publisher: MetricsPublisher, cfg: Config) -> None:
    """Queue the data of one snapshot now (one-shot use, e.g. after ``pulsetrace check``); flush to send."""
    source = HealthMetricsSource(base_dimensions(cfg))
    source.on_snapshot(snapshot)
    publisher.offer(source.collect(time.time()))
