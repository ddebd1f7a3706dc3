"""Delivery against real loopback receivers: formats accepted, 429 Retry-After honoured, retries, hangs, bounds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pulsetrace.alerts.channels import build_channel
from pulsetrace.alerts.model import Delivery, DeliveryResult
from pulsetrace.alerts.worker import DeliveryWorker
from pulsetrace.selfmetrics import SelfMetrics
from tests.alerts.receivers import Mode, Receiver
from tests.alerts.support import alerts_config, notice


def worker_for(receivers: dict[str, Receiver], metrics: SelfMetrics, done: list[Any] | None = None,
               **alerts: Any) -> DeliveryWorker:
    cfg = alerts_config(receivers, **alerts)
    channels = {c.name: build_channel(c) for c in cfg.alerts.channels}

    def on_done(d: Delivery, r: DeliveryResult, dropped: str | None) -> None:
        if done is not None:
            done.append((d.channel, d.notice.status, r, dropped))

    w = DeliveryWorker(channels, metrics, queue_size=cfg.alerts.queue_size, deadline_s=cfg.alerts.delivery_deadline,
                       on_done=on_done, seed=1)
    w.start()
    return w


def wait_done(done: list[Any], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not done and time.monotonic() < end:
        time.sleep(0.05)


def test_every_channel_gets_a_payload_its_service_accepts_firing_then_resolved(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    w = worker_for(receivers, metrics)
    try:
        w.submit(notice("critical"), list(receivers))
        w.submit(notice("critical", "resolved"), list(receivers))
        for rec in receivers.values():
            rec.wait_for(2)
            assert rec.errors == []
    finally:
        w.shutdown(1.0)
    discord = receivers["team"].bodies()
    assert [b["embeds"][0]["color"] for b in discord] == [0xFF0000, 0x00DD00]
    assert [b["attachments"][0]["color"] for b in receivers["ops"].bodies()] == ["#8B0000", "#36a64f"]
    pd = receivers["oncall"].bodies()
    assert [(e["event_action"], e["dedup_key"]) for e in pd] == [("trigger", "probe:db"), ("resolve", "probe:db")]
    assert [b["status"] for b in receivers["hook"].bodies()] == ["firing", "resolved"]
    assert receivers["team"].requests[0].path.endswith("?wait=true")
    assert metrics.counter("alerts_sent") == 8 and metrics.counter("alerts_dropped") == 0


def test_a_429_pauses_the_channel_for_retry_after_and_nothing_is_lost(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    rec = receivers["team"]
    rec.script.append(Mode("429", retry_after=1.5))
    w = worker_for(receivers, metrics)
    try:
        started = time.monotonic()
        w.submit(notice("critical"), ["team"])
        w.submit(notice("warning"), ["team"])
        rec.wait_for(2)
        took = time.monotonic() - started
    finally:
        w.shutdown(1.0)
    assert took >= 1.4  # the service said 1.5 s: nothing was sent before
    assert rec.answered["429"] == 1 and len(rec.requests) == 2 and rec.errors == []
    # order kept: the rate-limited message goes first once the pause is over
    assert [b["embeds"][0]["color"] for b in rec.bodies()] == [0xFF0000, 0xFF9900]
    assert metrics.counter("alerts_retried", "team") == 1 and metrics.counter("alerts_dropped") == 0


def test_500s_are_retried_with_back_off_until_delivered(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    rec = receivers["oncall"]
    rec.script.extend([Mode("500"), Mode("500")])
    w = worker_for(receivers, metrics)
    try:
        w.submit(notice("critical"), ["oncall"])
        rec.wait_for(1, timeout=30)
    finally:
        w.shutdown(1.0)
    assert rec.answered["500"] == 2 and metrics.counter("alerts_retried", "oncall") == 2
    assert metrics.counter("alerts_sent", "oncall") == 1


def test_a_hanging_channel_delays_no_other_and_its_queue_stays_bounded(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    hung = receivers["team"]
    hung.default = Mode("hang", seconds=120)
    w = worker_for(receivers, metrics, queue_size=5)
    try:
        for _ in range(20):
            w.submit(notice("critical"), ["team"])
        started = time.monotonic()
        w.submit(notice("critical"), ["ops"])
        receivers["ops"].wait_for(1, timeout=30)  # Slack is not held up by the hung Discord
        assert time.monotonic() - started < 10
        assert metrics.gauges()["alerts_queued"] <= 6  # 5 queued + 1 in flight
        # 20 sent: 5 queued, and one in flight if the lane picked it up before the queue filled
        assert metrics.counter("alerts_dropped", "queue_full:team") in (14, 15)
        assert metrics.counter("alerts_dropped", "queue_full:ops") == 0
        # the receiver recovers: what is still queued is delivered
        hung.default = Mode("ok")
        hung.released.set()
        hung.wait_for(2, timeout=60)
    finally:
        w.shutdown(1.0)
    assert hung.errors == [] and receivers["ops"].errors == []


def test_a_channel_failing_past_the_deadline_is_dropped_and_counted(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    done: list[Any] = []
    receivers["hook"].default = Mode("500")
    w = worker_for(receivers, metrics, done, delivery_deadline="3s")
    try:
        w.submit(notice("warning"), ["hook"])
        wait_done(done)
    finally:
        w.shutdown(1.0)
    assert done and done[0][3] == "deadline" and done[0][2].status == 500
    assert metrics.counter("alerts_dropped", "deadline:hook") == 1
    assert receivers["hook"].answered["500"] >= 2


def test_a_refused_message_is_not_retried(receivers: dict[str, Receiver]) -> None:
    metrics = SelfMetrics()
    done: list[Any] = []
    receivers["hook"].expect_headers = {"X-Token": "another"}  # the receiver answers 400
    w = worker_for(receivers, metrics, done)
    try:
        w.submit(notice("warning"), ["hook"])
        wait_done(done)
    finally:
        w.shutdown(1.0)
    assert done[0][3] == "rejected" and done[0][2].status == 400
    assert len(receivers["hook"].errors) == 1  # one request only
    assert metrics.counter("alerts_dropped", "rejected:hook") == 1
