"""HealthService: status aggregation, staleness, transitions, impact, listeners, persistence, thread runner."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.store import LocalStore
from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.handle import start_in_thread
from pulsetrace.healthchecks.service import HealthService
from pulsetrace.healthchecks.snapshot import HealthSnapshot
from tests.healthchecks import probes_for_tests as pft
from tests.healthchecks.support import health_config

MOD = "tests.healthchecks.probes_for_tests"
T0 = 1_700_006_400.0


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    pft.reset()
    yield
    pft.reset()


def switch(name: str, critical: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "custom", "target": f"{MOD}:Switch", "options": {"name": name},
            "critical": critical, "interval": "0.2s", "timeout": "0.1s", **extra}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feed(service: HealthService, name: str, status: Status, clock: Clock | None = None, step: float = 0.0,
         detail: str = "") -> None:
    if clock is not None:
        clock.t += step
    service.record(service.probes[name].runner, ProbeResult(status, 0.01, detail or status.value))


def test_before_the_first_round_health_is_unknown_503() -> None:
    service = HealthService(health_config([switch("db", critical=True)]), persist=False)
    assert service.health() == (503, b'{"status": "UNKNOWN", "stale": false}\n')
    assert service.details()["probes"]["db"]["status"] == "UNKNOWN"


def test_no_probes_is_up() -> None:
    assert HealthService(health_config([]), persist=False).health()[0] == 200


def test_critical_down_is_503_non_critical_down_is_200_degraded() -> None:
    service = HealthService(health_config([switch("db", critical=True), switch("cache")], failure_threshold=1),
                            persist=False)
    feed(service, "db", Status.UP)
    feed(service, "cache", Status.DOWN)
    assert service.health() == (200, b'{"status": "DEGRADED", "stale": false}\n')
    feed(service, "db", Status.DOWN)
    assert service.health() == (503, b'{"status": "DOWN", "stale": false}\n')


def test_critical_probe_with_no_evidence_degrades_but_does_not_fail() -> None:
    service = HealthService(health_config([switch("ops", critical=True)]), persist=False)
    feed(service, "ops", Status.UNKNOWN)
    assert service.health()[0] == 200 and service.details()["status"] == "DEGRADED"


def test_snapshot_older_than_three_intervals_is_stale_and_503() -> None:
    mono = Clock(100.0)
    service = HealthService(health_config([switch("a"), switch("b", interval="1s", timeout="0.5s")]), persist=False,
                            monotonic=mono)
    feed(service, "a", Status.UP)
    feed(service, "b", Status.UP)
    mono.t += 2.9  # 3 × the longest interval (1 s) is 3 s
    assert service.health() == (200, b'{"status": "UP", "stale": false}\n')
    mono.t += 0.2
    assert service.health() == (503, b'{"status": "UP", "stale": true}\n')
    assert service.details()["stale"] is True and json.loads(service.details_json())["stale"] is True


def test_transitions_are_events_with_time_and_reason() -> None:
    clock = Clock()
    service = HealthService(health_config([switch("db")], failure_threshold=2), persist=False, clock=clock)
    feed(service, "db", Status.UP, clock, 1)
    feed(service, "db", Status.DOWN, clock, 1, "connect failed: refused")
    feed(service, "db", Status.DOWN, clock, 1, "connect failed: refused again")
    probe = service.details()["probes"]["db"]
    assert probe["status"] == "DOWN" and probe["last_transition"] == T0 + 3
    assert probe["transitions"][-1] == {"probe": "db", "at": T0 + 3, "from": "UP", "to": "DOWN",
                                        "reason": "connect failed: refused again"}


def test_details_have_the_interface_shape() -> None:
    service = HealthService(health_config([switch("db", sla=99.9)]), persist=False)
    feed(service, "db", Status.UP)
    d = service.details()
    assert set(d) == {"status", "stale", "generated_at", "probes"}
    p = d["probes"]["db"]
    assert {"status", "critical", "latency_ms", "last_checked", "last_transition", "detail", "sla", "impact"} <= set(p)
    assert set(p["sla"]["windows"]) == {"1h", "24h", "7d", "30d"}
    assert {"availability", "budget_remaining"} <= set(p["sla"]["windows"]["1h"])
    assert set(p["sla"]["burn_rates"]) == {"1h", "6h", "3d"}
    assert p["sla"]["target"] == 99.9
    assert {"revenue_at_risk", "users_affected"} <= set(p["impact"])
    json.dumps(d)  # plain JSON


def test_revenue_at_risk_accumulates_while_down_weighted_while_degraded() -> None:
    clock = Clock()
    cfg = health_config([switch("pay", interval="60s", timeout="5s", jitter=0,
                                impact={"revenue_per_minute": 100, "users": 4000, "degraded_weight": 0.5,
                                        "capabilities": ["checkout"]})], failure_threshold=1, success_threshold=1)
    service = HealthService(cfg, persist=False, clock=clock)
    feed(service, "pay", Status.UP, clock, 0)
    feed(service, "pay", Status.DOWN, clock, 60)
    for _ in range(3):
        feed(service, "pay", Status.DOWN, clock, 60)  # 3 minutes DOWN
    impact = service.details()["probes"]["pay"]["impact"]
    assert impact["revenue_at_risk"] == pytest.approx(300.0)
    assert impact["users_affected"] == 4000 and impact["capabilities_affected"] == ["checkout"]
    feed(service, "pay", Status.DEGRADED, clock, 60)  # one more DOWN minute accrues at the DOWN rate
    feed(service, "pay", Status.DEGRADED, clock, 60)  # one DEGRADED minute at half the rate
    assert service.details()["probes"]["pay"]["impact"]["revenue_at_risk"] == pytest.approx(450.0)
    feed(service, "pay", Status.UP, clock, 60)
    impact = service.details()["probes"]["pay"]["impact"]
    assert impact["revenue_at_risk"] == 0 and impact["users_affected"] == 0
    assert impact["last_incident"]["revenue_at_risk"] == pytest.approx(500.0)
    # The window totals come from the measured minutes: 4 DOWN results + 2 DEGRADED × 0.5, a minute each.
    assert service.details()["probes"]["pay"]["sla"]["windows"]["24h"]["revenue_at_risk"] == pytest.approx(500.0)


def test_snapshot_listeners_are_called_and_their_errors_counted() -> None:
    service = HealthService(health_config([switch("db")]), persist=False)
    seen: list[str] = []
    service.add_snapshot_listener(lambda d: seen.append(d.probes["db"].status.value))

    def broken(_d: HealthSnapshot) -> None:
        raise RuntimeError("listener bug")

    service.add_snapshot_listener(broken)
    feed(service, "db", Status.UP)
    feed(service, "db", Status.UP)
    assert seen == ["UP", "UP"] and service.listener_errors == 2


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    cfg = health_config([switch("db", interval="60s", timeout="5s")], tmp_path, failure_threshold=1)
    first = HealthService(cfg, store=LocalStore(tmp_path), clock=clock)
    feed(first, "db", Status.UP, clock, 0)
    for _ in range(10):
        feed(first, "db", Status.DOWN, clock, 60)
    await first.flush()
    before = first.details()["probes"]["db"]["sla"]["windows"]["30d"]
    second = HealthService(cfg, store=LocalStore(tmp_path), clock=clock)
    await second._load_history()  # noqa: SLF001 - what start() does first
    after = second.details()["probes"]["db"]["sla"]["windows"]["30d"]
    assert after["downtime_s"] == before["downtime_s"] == pytest.approx(600.0)
    assert after["availability"] == before["availability"]
    assert second.details()["probes"]["db"]["transitions"][-1]["to"] == "DOWN"
    await first.stop()
    await second.stop()


async def test_probes_run_on_their_schedule_and_the_server_answers(tmp_path: Path) -> None:
    cfg = health_config([switch("db", critical=True), switch("cache")], tmp_path)
    service = HealthService(cfg, store=LocalStore(tmp_path))
    await service.start()
    try:
        await asyncio.sleep(0.7)
        assert pft.COUNTS["db"] >= 3 and pft.COUNTS["cache"] >= 3
        assert service.server is not None
        status, body = await asyncio.to_thread(fetch, service.server.port, "/health")
        assert status == 200 and json.loads(body) == {"status": "UP", "stale": False}
    finally:
        await service.stop()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_start_in_thread_serves_snapshots_and_stops(tmp_path: Path) -> None:
    alive = [True]
    handle = start_in_thread(health_config([switch("db")], tmp_path), child_alive=lambda: alive[0])
    try:
        assert handle.port > 0 and handle.thread.name == "pulsetrace-health"
        for _ in range(50):
            if handle.snapshot().status.value == "UP":
                break
            import time

            time.sleep(0.05)
        assert handle.snapshot().probes["db"].status.value == "UP"
        assert fetch(handle.port, "/health/live")[0] == 200
        alive[0] = False
        assert fetch(handle.port, "/health/live")[0] == 503
        got: list[HealthSnapshot] = []
        handle.add_snapshot_listener(got.append)
        import time

        time.sleep(0.5)
        assert got and got[-1].probes["db"].status is Status.UP
    finally:
        handle.stop(1.0)
    assert not handle.thread.is_alive()


def test_start_in_thread_raises_oserror_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(OSError):
            start_in_thread(health_config([switch("db")], tmp_path, listen=f"127.0.0.1:{port}"))


def test_a_probe_that_cannot_be_built_reports_down_with_the_reason() -> None:
    cfg = health_config([{"name": "q", "type": "custom", "target": "no_such_pkg.mod:Probe", "interval": "1s",
                          "timeout": "0.5s"}])
    service = HealthService(cfg, persist=False)
    snapshot = asyncio.run(service.run_round())
    assert snapshot.probes["q"].status is Status.DOWN
    assert "cannot import no_such_pkg.mod" in snapshot.probes["q"].detail


def test_inside_the_application_process_the_interpreter_settings_are_left_alone(tmp_path: Path) -> None:
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        handle = start_in_thread(health_config([switch("db")], tmp_path), own_process=False)
        try:
            assert fetch(handle.port, "/health/live")[0] == 200
            assert sys.getswitchinterval() == pytest.approx(0.005)  # the app's, untouched
        finally:
            handle.stop(1.0)
        handle = start_in_thread(health_config([switch("db")], tmp_path))  # a process of the agent's own
        try:
            assert sys.getswitchinterval() < 0.005
        finally:
            handle.stop(1.0)
    finally:
        sys.setswitchinterval(before)
