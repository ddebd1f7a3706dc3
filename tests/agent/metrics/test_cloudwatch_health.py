"""Health metrics from the health snapshot (the ``/health/details`` dict), with the real SLA tracker's numbers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.sla import SlaTracker
from pulsetrace.metrics.datum import MetricDatum
from pulsetrace.metrics.health_metrics import (
    HealthMetricsSource,
    health_listener,
    publish_health,
    wire_health_metrics,
)
from pulsetrace.healthchecks.snapshot import HealthSnapshot, snapshot_from_dict
from pulsetrace.metrics.publisher import build_publisher
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping

DIMS = (("Service", "shop-api"), ("Environment", "uat"))
SECRET_DSN = "postgresql://app:pg-s3cret-Pw9@10.0.0.5:5432/shop"


def sla_report(target: float, down_minutes: int, now: float) -> dict[str, Any]:
    """An hour of 15-second probe results with ``down_minutes`` of DOWN at the end, through the real tracker."""
    tracker = SlaTracker(target, min_samples=1)
    start = now - 3600
    for i in range(240):
        at = start + i * 15
        down = at >= now - down_minutes * 60
        tracker.record(at, Status.DOWN if down else Status.UP, 0.004, 15.0)
    report: dict[str, Any] = tracker.report(now).to_dict()
    return report


def details(now: float, db_status: str = "DOWN", checked: float | None = None) -> HealthSnapshot:
    return snapshot_from_dict({
        "status": "DOWN" if db_status == "DOWN" else "UP", "stale": False, "generated_at": now,
        "probes": {
            "db": {"status": db_status, "critical": True, "latency_ms": 2000.0, "last_checked": checked or now,
                   "last_transition": now - 300, "detail": f"connect to {SECRET_DSN} failed: timeout",
                   "sla": sla_report(99.9, 6, now),
                   "impact": {"revenue_at_risk": 720.0, "users_affected": 5000}},
            "cache": {"status": "DEGRADED", "critical": False, "latency_ms": 80.0, "last_checked": checked or now,
                      "last_transition": now - 60, "detail": "slow", "sla": sla_report(99.5, 0, now),
                      "impact": {"revenue_at_risk": 0.0, "users_affected": 0}},
            "rfid": {"status": "UNKNOWN", "critical": False, "latency_ms": None, "last_checked": None,
                     "last_transition": None, "detail": "no result yet", "sla": None, "impact": None},
        },
    })


def pick(data: list[MetricDatum], name: str, **dims: str) -> MetricDatum:
    want = dict(DIMS, **dims)
    found = [d for d in data if d.name == name and dict(d.dimensions) == want]
    assert len(found) == 1, (name, dims, sorted({(d.name, d.dimensions) for d in data}))
    return found[0]


def test_snapshot_becomes_status_availability_budget_burn_and_impact_per_probe() -> None:
    now = time.time()
    source = HealthMetricsSource(DIMS)
    source.on_snapshot(details(now))
    data = source.collect(now)
    assert pick(data, "HealthStatus").value == 2
    assert pick(data, "ProbeStatus", Probe="db").value == 2
    assert pick(data, "ProbeStatus", Probe="cache").value == 1
    # 6 of 60 minutes down in the last hour: 90 % available, a 99.9 % target's hourly budget overspent 100-fold.
    avail = pick(data, "Availability", Probe="db", Window="1h")
    assert avail.unit == "Percent" and avail.value == pytest.approx(90.0, abs=0.5)
    budget = pick(data, "ErrorBudgetRemaining", Probe="db", Window="1h")
    assert budget.unit == "Percent" and budget.value is not None and budget.value < -9000
    assert pick(data, "BurnRate", Probe="db", Window="1h").value == pytest.approx(100.0, rel=0.05)
    assert pick(data, "Availability", Probe="cache", Window="30d").value == 100.0
    assert pick(data, "RevenueAtRisk", Probe="db").value == 720.0
    assert pick(data, "UsersAffected", Probe="db").value == 5000
    up = pick(data, "ProbeUp", Probe="db")
    assert (up.count, up.total) == (1, 0)
    assert pick(data, "ProbeUp", Probe="cache").total == 1  # DEGRADED counts as available, as in the SLA
    lat = pick(data, "ProbeLatency", Probe="db")
    assert lat.unit == "Milliseconds" and lat.count == 1 and lat.total == 2000.0


def test_unknown_has_no_status_data_rather_than_a_made_up_number() -> None:
    now = time.time()
    source = HealthMetricsSource(DIMS)
    source.on_snapshot(details(now))
    names = {d.name for d in source.collect(now) if dict(d.dimensions).get("Probe") == "rfid"}
    assert names == set()
    source.on_snapshot(snapshot_from_dict({"status": "UNKNOWN", "probes": {}}))
    assert [d for d in source.collect(now) if d.name == "HealthStatus"] == []


def test_probe_up_counts_each_result_once_and_averages_to_the_share_up() -> None:
    now = time.time()
    source = HealthMetricsSource(DIMS)
    for i, status in enumerate(["UP", "UP", "DOWN", "UP"]):
        snap = details(now, db_status=status, checked=now + i)
        source.on_snapshot(snap)
        source.on_snapshot(snap)  # the same result seen twice (another probe finished) is not counted again
    data = source.collect(now)
    up = pick(data, "ProbeUp", Probe="db")
    assert (up.count, up.total, up.minimum, up.maximum) == (4, 3, 0, 1)
    assert pick(data, "ProbeLatency", Probe="db").count == 4
    # Next interval, no new result: the current state stands as one sample.
    again = pick(source.collect(now + 60), "ProbeUp", Probe="db")
    assert (again.count, again.total) == (1, 1)


def test_nothing_from_a_probes_detail_text_reaches_the_metrics() -> None:
    now = time.time()
    source = HealthMetricsSource(DIMS)
    source.on_snapshot(details(now))
    text = json.dumps([[d.name, d.dimensions, d.value] for d in source.collect(now)])
    assert "pg-s3cret-Pw9" not in text and "10.0.0.5" not in text and "timeout" not in text


@pytest.mark.parametrize("garbage", [None, 42, "x", {"probes": "nope"}, {"probes": {"db": 7}},
                                     {"status": "UP", "probes": {"db": {"status": "UP", "latency_ms": "fast",
                                                                        "last_checked": 1, "sla": {"windows": 3}}}}])
def test_the_listener_never_raises_on_a_malformed_snapshot(garbage: Any) -> None:
    source = HealthMetricsSource(DIMS)
    source.on_snapshot(snapshot_from_dict(garbage))
    source.collect(time.time())


def test_listener_feeds_the_publisher_and_publish_health_is_one_shot(tmp_path: Any) -> None:
    path = tmp_path / "emf.log"
    cfg = config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                               "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{path}"}}}, {})
    publisher = build_publisher(cfg, SelfMetrics(), self_metrics=False)
    assert publisher is not None
    listener = health_listener(cfg, publisher)
    listener(details(time.time()))
    publisher.flush(2.0)
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(d.get("Probe") == "db" and d.get("ProbeStatus") == 2 for d in docs)
    publish_health(details(time.time(), db_status="UP"), publisher, cfg)
    publisher.flush(2.0)
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(d.get("Probe") == "db" and d.get("ProbeStatus") == 0 for d in docs)
    publisher.shutdown(0.5)


def test_wiring_reuses_the_agents_publisher_or_owns_one_and_does_nothing_when_off(tmp_path: Any) -> None:
    listeners: list[Any] = []
    cfg = config_from_mapping({"metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{tmp_path}/e"}}}, {})
    agents = build_publisher(cfg, SelfMetrics())
    assert agents is not None
    assert wire_health_metrics(cfg, listeners.append, SelfMetrics(), publisher=agents) is None
    owned = wire_health_metrics(cfg, listeners.append, SelfMetrics())
    assert owned is not None and owned is not agents and owned._started
    assert len(listeners) == 2
    off = config_from_mapping({}, {})
    assert wire_health_metrics(off, listeners.append, SelfMetrics()) is None and len(listeners) == 2
    owned.shutdown(0.5)
    agents.shutdown(0.5)
