"""The alert service fed by a real health service: flaps folded, burn rates with a controllable clock, the
agent's own drops, and a receiver that hangs or fails without costing the probes or ``/health`` anything."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.alerts.service import AlertService
from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.handle import HealthHandle, start_in_thread
from pulsetrace.healthchecks.service import HealthService
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore
from pulsetrace.validation import config_from_mapping
from tests.alerts.receivers import Mode, Receiver
from tests.alerts.support import channels_for
from tests.healthchecks import probes_for_tests as pft
from tests.integration.service_runner import wait_for

MOD = "tests.healthchecks.probes_for_tests"
T0 = 1_790_000_000.0


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    pft.reset()
    yield
    pft.reset()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def config(tmp: Path, receivers: dict[str, Receiver], probe: dict[str, Any] | None = None, **alerts: Any) -> Any:
    probes = [{"name": "pay", "type": "custom", "target": f"{MOD}:Switch", "options": {"name": "pay"},
               "interval": "0.1s", "timeout": "0.05s", "jitter": 0, "sla": 99.9, **(probe or {})}]
    return config_from_mapping({
        "service": {"name": "shop-api", "environment": "uat"}, "store": {"path": str(tmp / "store")},
        "health": {"listen": "127.0.0.1:0", "probes": probes},
        "alerts": {"channels": channels_for(receivers),
                   "routes": [{"severity": ["critical"], "channels": ["oncall", "team"]},
                              {"severity": ["warning", "business"], "channels": ["ops", "team", "hook"]}],
                   **alerts}}, env={})


def running(cfg: Any, metrics: SelfMetrics) -> tuple[HealthHandle, AlertService]:
    """The health service on its thread and the alert service listening to it, as ``pulsetrace run`` wires them."""
    health = start_in_thread(cfg, metrics=metrics)
    alerts = AlertService(cfg, metrics)
    alerts.start()
    health.add_snapshot_listener(alerts.on_snapshot)
    return health, alerts


def test_twenty_flaps_in_a_minute_are_one_grouped_message_not_twenty(tmp_path: Path,
                                                                      receivers: dict[str, Receiver]) -> None:
    cfg = config(tmp_path, receivers, {"failure_threshold": 1, "success_threshold": 1}, group_wait="3s")
    metrics = SelfMetrics()
    health, alerts = running(cfg, metrics)
    status = lambda: health.service.details()["probes"]["pay"]["status"]  # noqa: E731
    try:
        started = time.monotonic()
        for _ in range(20):
            pft.STATE["pay"] = Status.DOWN
            assert wait_for(lambda: status() == "DOWN", 10, 0.02)
            time.sleep(0.4)
            pft.STATE["pay"] = Status.UP
            assert wait_for(lambda: status() == "UP", 10, 0.02)
            time.sleep(0.4)
        assert time.monotonic() - started < 60
        team = receivers["team"].wait_for(2, timeout=30)
        time.sleep(4)
    finally:
        alerts.stop(1.0)
        health.stop(1.0)
    titles = [b["embeds"][0]["title"] for b in receivers["team"].bodies()]
    assert len(titles) == 2, titles  # one firing (already "flapping"), one resolve counting every flap
    assert titles[0].startswith("[WARNING] pay is DOWN (flapping:") and titles[1] == "[RESOLVED] pay is DOWN (flapping: 20x)"
    assert [b["status"] for b in receivers["hook"].bodies()] == ["firing", "resolved"]
    assert receivers["hook"].bodies()[1]["details"]["flaps"] == 19
    assert team[0]["embeds"][0]["color"] == 0xFF9900


def feed(service: HealthService, clock: Clock, status: Status, alerts: AlertService) -> None:
    clock.t += 15
    service.record(service.probes["pay"].runner, ProbeResult(status, 0.01, status.value))
    alerts.evaluate()


def test_burn_rate_pairs_page_fast_and_ticket_slow_with_a_controllable_clock(tmp_path: Path,
                                                                            receivers: dict[str, Receiver]) -> None:
    # One failure in three, never three in a row: the probe never turns DOWN, the budget burns at ~330x.
    cfg = config(tmp_path, receivers, {"failure_threshold": 3, "interval": "15s", "critical": True}, group_wait="30s")
    clock = Clock()
    health = HealthService(cfg, persist=False, clock=clock)
    alerts = AlertService(cfg, SelfMetrics(), clock=clock)
    alerts.worker.start()
    health.add_snapshot_listener(alerts.on_snapshot)
    try:
        for i in range(240):  # one hour
            feed(health, clock, Status.DOWN if i % 3 == 2 else Status.UP, alerts)
            assert health.details()["probes"]["pay"]["status"] == "UP"
        oncall = receivers["oncall"].wait_for(1, timeout=30)
        assert [(e["dedup_key"], e["event_action"], e["payload"]["severity"]) for e in oncall] == [
            ("sla:pay:fast", "trigger", "critical")]
        slow = [b for b in receivers["hook"].wait_for(1, timeout=30)]
        assert [(b["key"], b["severity"], b["status"]) for b in slow] == [("sla:pay:slow", "warning", "firing")]
        assert slow[0]["threshold"] == 6.0 and slow[0]["value"] > 100
        for _ in range(30):  # 7.5 healthy minutes: the 5-minute window clears, the page resolves
            feed(health, clock, Status.UP, alerts)
        oncall = receivers["oncall"].wait_for(2, timeout=30)
        assert oncall[1] == {"routing_key": oncall[0]["routing_key"], "dedup_key": "sla:pay:fast",
                             "event_action": "resolve"}
    finally:
        alerts.stop(1.0)
    assert all(r.errors == [] for r in receivers.values())


def test_an_outage_that_already_paged_is_not_paged_again_by_its_burn_rate(tmp_path: Path,
                                                                          receivers: dict[str, Receiver]) -> None:
    cfg = config(tmp_path, receivers, {"failure_threshold": 2, "success_threshold": 1, "interval": "15s",
                                       "critical": True}, group_wait="30s")
    clock = Clock()
    health = HealthService(cfg, persist=False, clock=clock)
    alerts = AlertService(cfg, SelfMetrics(), clock=clock)
    alerts.worker.start()
    health.add_snapshot_listener(alerts.on_snapshot)
    try:
        for status in [Status.UP] * 20 + [Status.DOWN] * 20 + [Status.UP] * 40:
            feed(health, clock, status, alerts)
        time.sleep(2)
        keys = [(e["dedup_key"], e["event_action"]) for e in receivers["oncall"].wait_for(2, timeout=30)]
    finally:
        alerts.stop(1.0)
    assert keys == [("probe:pay", "trigger"), ("probe:pay", "resolve")]


def test_spans_dropped_for_over_a_minute_raise_one_warning_that_resolves(tmp_path: Path,
                                                                          receivers: dict[str, Receiver]) -> None:
    cfg = config(tmp_path, receivers, group_wait="0s", evaluate_interval="15s", drop_window="60s")
    clock = Clock()
    alerts = AlertService(cfg, SelfMetrics(), clock=clock)
    alerts.worker.start()
    store = LocalStore(cfg.store.path)
    try:
        for i in range(8):  # a process of the app drops spans at every look for 2 minutes
            store.write_counters(os.getpid(), {("spans_dropped", "queue_full"): 100.0 * (i + 1)}, instance="app-1")
            alerts.evaluate()
            clock.t += 15
        hook = receivers["hook"].wait_for(1, timeout=30)
        assert (hook[0]["key"], hook[0]["severity"], hook[0]["status"]) == ("agent:dropped", "warning", "firing")
        assert "queue_full" in hook[0]["summary"]
        for _ in range(4):  # no more drops
            alerts.evaluate()
            clock.t += 15
        hook = receivers["hook"].wait_for(2, timeout=30)
        assert hook[1]["status"] == "resolved"
    finally:
        alerts.stop(1.0)
        store.close()


def test_a_receiver_hanging_then_failing_costs_counted_drops_never_the_probes_or_health(
        tmp_path: Path, receivers: dict[str, Receiver]) -> None:
    cfg = config(tmp_path, receivers, {"failure_threshold": 1, "success_threshold": 1, "interval": "0.2s"},
                 group_wait="0s", queue_size=2, delivery_deadline="4s")
    cfg = type(cfg)(**{**cfg.__dict__, "alerts": type(cfg.alerts)(**{
        **cfg.alerts.__dict__, "channels": [type(c)(**{**c.__dict__, "timeout": 1.0}) for c in cfg.alerts.channels]})})
    team = receivers["team"]
    team.default = Mode("hang", seconds=120)
    metrics = SelfMetrics()
    health, alerts = running(cfg, metrics)
    status = lambda: health.service.details()["probes"]["pay"]["status"]  # noqa: E731
    slowest = 0.0
    try:
        started, checks0 = time.monotonic(), pft.COUNTS.get("pay", 0)
        for k in range(12):
            pft.STATE["pay"] = Status.DOWN if k % 2 == 0 else Status.UP
            assert wait_for(lambda: status() == pft.STATE["pay"].value, 10, 0.02)
            t = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/health", timeout=5) as resp:
                assert resp.status == 200
            slowest = max(slowest, time.monotonic() - t)
            if k == 5:
                team.default = Mode("500")  # from hanging to failing
        elapsed = time.monotonic() - started
        checks = pft.COUNTS["pay"] - checks0
        assert checks >= 0.5 * elapsed / 0.2  # the probe kept its cadence (generous for two busy cores)
        assert slowest < 2.0
        assert metrics.gauges()["alerts_queued"] <= 3 * 4  # per channel: 2 queued + 1 in flight
        assert metrics.counter("alerts_dropped", "queue_full:team") > 0
        # Slack kept delivering meanwhile (at its own rate of one a second; what its queue could not
        # hold is counted as its own drops): every message is accounted for
        receivers["ops"].wait_for(3, timeout=30)
        assert wait_for(lambda: len(receivers["ops"].requests)
                        + metrics.counter("alerts_dropped", "queue_full:ops") == 12, 30, 0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'pulsetrace_agent_alerts_dropped_total{reason="queue_full:team"}' in text
        # the receiver recovers: delivery resumes
        team.default = Mode("ok")
        team.released.set()
        before = len(team.requests)
        pft.STATE["pay"] = Status.DOWN
        assert wait_for(lambda: len(team.requests) > before, 40, 0.1)
    finally:
        alerts.stop(1.0)
        health.stop(1.0)
    assert json.loads(json.dumps(team.errors)) == []


def test_a_typed_snapshot_is_read_through_its_to_dict_like_the_details(tmp_path: Path,
                                                                       receivers: dict[str, Receiver]) -> None:
    from types import SimpleNamespace

    cfg = config(tmp_path, receivers, group_wait="0s")
    alerts = AlertService(cfg, SelfMetrics(), clock=Clock())
    details = {"status": "DOWN", "probes": {"pay": {"status": "DOWN", "critical": True, "detail": "refused",
                                                    "last_transition": T0, "sla": {}, "impact": {}}}}
    try:
        alerts.on_snapshot(SimpleNamespace(to_dict=lambda: details))
        alerts.evaluate()
        opened = alerts.engine.open["probe:pay"].alert
    finally:
        alerts.stop(0.5)
    assert (opened.severity, opened.title, opened.summary) == ("critical", "pay is DOWN", "refused")


def test_a_restart_during_an_outage_neither_pages_again_nor_forgets_the_resolve(
        tmp_path: Path, receivers: dict[str, Receiver]) -> None:
    cfg = config(tmp_path, receivers, {"failure_threshold": 1, "success_threshold": 1, "critical": True},
                 group_wait="0s")

    def snapshot(status: str) -> dict[str, Any]:
        return {"probes": {"pay": {"status": status, "critical": True, "detail": status.lower(),
                                   "last_transition": T0, "sla": {}, "impact": {}}}}

    first = AlertService(cfg, SelfMetrics(), clock=Clock())
    first.start()
    try:
        first.on_snapshot(snapshot("DOWN"))
        receivers["oncall"].wait_for(1)
    finally:
        first.stop(1.0)
    second = AlertService(cfg, SelfMetrics(), clock=Clock(T0 + 600))  # the deploy; the outage goes on
    second.start()
    try:
        second.on_snapshot(snapshot("UNKNOWN"))  # not checked yet: nothing clears, nothing opens
        second.evaluate()
        assert "probe:pay" in second.engine.open
        second.on_snapshot(snapshot("DOWN"))
        second.evaluate()
        second.on_snapshot(snapshot("UP"))  # ... and it ends under the new process
        pd = receivers["oncall"].wait_for(2)
        time.sleep(1)
    finally:
        second.stop(1.0)
    assert [(e["event_action"], e["dedup_key"]) for e in receivers["oncall"].bodies()] == [
        ("trigger", "probe:pay"), ("resolve", "probe:pay")]
    assert pd[1]["event_action"] == "resolve"
    assert len(receivers["team"].requests) == 2
