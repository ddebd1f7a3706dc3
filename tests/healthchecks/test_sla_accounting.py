"""SLA accounting through the health service, on a controllable clock: no data is not downtime, and an
outage of known length gives the exact availability, error budget, burn rate and revenue at risk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.service import HealthService
from tests.healthchecks.support import health_config

MOD = "tests.healthchecks.probes_for_tests"
T0 = 1_700_006_400.0  # on a minute boundary


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def switch(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "custom", "target": f"{MOD}:Switch", "options": {"name": name},
            "interval": "60s", "timeout": "5s", "jitter": 0, **extra}


def feed(service: HealthService, name: str, status: Status) -> None:
    service.record(service.probes[name].runner, ProbeResult(status, 0.01, status.value))


def test_a_reader_fleet_with_no_heartbeat_yet_is_not_down_and_costs_no_sla() -> None:
    clock = Clock()
    cfg = health_config([{"name": "rfid", "type": "rfid", "source": {"push": "true"}, "interval": "15s",
                          "timeout": "1s", "max_age": "60s", "sla": 99.0, "critical": True,
                          "impact": {"revenue_per_minute": 50, "users": 300}}])
    service = HealthService(cfg, persist=False, clock=clock)

    async def rounds(n: int) -> None:
        for _ in range(n):
            await service.run_round()
            clock.t += 15

    asyncio.run(rounds(4))  # a minute of rounds before the first reader beats
    snap = service.snapshot()
    rfid = snap.probes["rfid"]
    assert rfid.status is Status.UNKNOWN and snap.status is Status.DEGRADED and snap.http_status == 200
    day = rfid.sla.windows["24h"]
    assert day.availability is None and day.downtime_s == 0 and day.budget_remaining == 1.0
    assert rfid.sla.burn_rates["1h"] is None and rfid.impact.revenue_at_risk == 0 and day.revenue_at_risk == 0
    for reader in ("door-1", "door-2"):
        service.heartbeats.beat(reader)
    asyncio.run(rounds(4))
    rfid = service.snapshot().probes["rfid"]
    assert rfid.status is Status.UP and rfid.sla.windows["24h"].availability == 100.0
    assert rfid.sla.windows["24h"].downtime_s == 0


def test_an_outage_of_known_length_gives_the_exact_availability_budget_and_burn() -> None:
    clock = Clock()
    cfg = health_config([switch("db", sla=99.9, impact={"revenue_per_minute": 100, "users": 5000})],
                        failure_threshold=1, success_threshold=1)
    service = HealthService(cfg, persist=False, clock=clock)
    feed(service, "db", Status.UP)  # covers the minute before T0
    for k in range(1, 61):  # an hour of results, a minute each; minutes 41..50 DOWN
        clock.t = T0 + 60 * k
        feed(service, "db", Status.DOWN if 41 <= k <= 50 else Status.UP)
    sla = service.snapshot().probes["db"].sla
    hour = sla.windows["1h"]
    assert hour.downtime_s == 600.0 and hour.observed_s == 3600.0
    assert hour.availability == pytest.approx(100 * 3000 / 3600, abs=1e-4)  # 83.3333 %
    assert hour.budget_total_s == pytest.approx(3.6)  # 0.1 % of an hour
    assert hour.budget_remaining_s == pytest.approx(3.6 - 600.0)
    assert hour.budget_remaining == pytest.approx((3.6 - 600.0) / 3.6, abs=1e-6)
    assert sla.burn_rates["1h"] == pytest.approx((600 / 3600) / 0.001, rel=1e-6)  # 166.67x
    month = sla.windows["30d"]
    assert month.downtime_s == 600.0 and month.observed_s == 3660.0  # the agent ran 61 minutes of the 30 days
    assert month.budget_total_s == pytest.approx(2592.0) and month.budget_remaining_s == pytest.approx(1992.0)
    assert month.budget_remaining == pytest.approx(1992.0 / 2592.0, abs=1e-6)
    assert month.revenue_at_risk == pytest.approx(1000.0)  # 10 minutes DOWN at 100 a minute
    impact = service.snapshot().probes["db"].impact
    assert impact.revenue_at_risk == 0 and impact.last_incident is not None
    assert impact.last_incident.revenue_at_risk == pytest.approx(1000.0)


def test_degraded_risks_revenue_only_when_the_impact_declares_it() -> None:
    clock = Clock()
    cfg = health_config([switch("slow", impact={"revenue_per_minute": 100, "users": 10}),
                         switch("weighted", impact={"revenue_per_minute": 100, "users": 10, "degraded_weight": 0.5})],
                        failure_threshold=1, success_threshold=1, startup_grace="0s")
    service = HealthService(cfg, persist=False, clock=clock)
    for k in range(6):
        clock.t = T0 + 60 * k
        feed(service, "slow", Status.DEGRADED)
        feed(service, "weighted", Status.DEGRADED)
    snap = service.snapshot()
    assert snap.probes["slow"].impact.revenue_at_risk == 0 and snap.probes["slow"].impact.users_affected == 0
    assert snap.probes["slow"].sla.windows["24h"].revenue_at_risk == 0
    assert snap.probes["slow"].sla.windows["24h"].availability == 100.0  # slow is available
    assert snap.probes["weighted"].impact.revenue_at_risk == pytest.approx(250.0)  # 5 minutes at half
    assert snap.probes["weighted"].impact.users_affected == 10


def test_a_cold_start_degraded_inside_the_grace_period_counts_nothing_but_down_always_counts() -> None:
    clock = Clock()
    cfg = health_config([switch("pay", impact={"revenue_per_minute": 100, "degraded_weight": 1.0}, sla=99.9),
                         switch("db", sla=99.9)], failure_threshold=1, success_threshold=1, startup_grace="120s")
    service = HealthService(cfg, persist=False, clock=clock)
    feed(service, "pay", Status.DEGRADED)  # a cold connection: slow at T0 and T0+60
    feed(service, "db", Status.DOWN)  # down at start is down
    clock.t = T0 + 60
    feed(service, "pay", Status.DEGRADED)
    feed(service, "db", Status.DOWN)
    for k in range(2, 10):
        clock.t = T0 + 60 * k
        feed(service, "pay", Status.UP)
        feed(service, "db", Status.UP)
    snap = service.snapshot()
    pay = snap.probes["pay"]
    assert pay.status is Status.UP and pay.sla.windows["24h"].degraded_s == 0
    assert pay.sla.windows["24h"].revenue_at_risk == 0 and pay.impact.last_incident is None
    assert snap.probes["db"].sla.windows["24h"].downtime_s == 120.0
