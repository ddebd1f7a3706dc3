"""Alerts: what they cost the probes' loop, and what rendering a message costs.

1. One probe result recorded by the health service (damping, SLA, impact, snapshot, listeners) with
   the alert service listening, against the same without alerts: the listener only keeps the
   latest snapshot and sets an event (goal ≤ 1.1×). Alternating UP/DOWN results, so every one is a
   transition and the evaluator has work to be woken for.
2. One notice rendered for all four HTTP channels (Discord, Slack, PagerDuty, webhook) and encoded
   as JSON, against encoding the plain webhook body alone (report only): the price of the limits
   and escaping, paid on the delivery thread.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from benchmarks.harness import Comparison, interleaved, time_per_op


def _health(with_alerts: bool) -> tuple[Any, Any, Any]:
    from pulsetrace.alerts.service import AlertService
    from pulsetrace.healthchecks.base import ProbeResult, Status
    from pulsetrace.healthchecks.service import HealthService
    from pulsetrace.selfmetrics import SelfMetrics
    from pulsetrace.validation import config_from_mapping

    store = tempfile.mkdtemp(prefix="bench-alerts-")
    cfg = config_from_mapping({
        "store": {"path": store},
        "health": {"failure_threshold": 1, "success_threshold": 1, "probes": [
            {"name": "db", "type": "custom", "target": "tests.healthchecks.probes_for_tests:Switch"}]},
        "alerts": {"channels": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
                   "routes": [{"channels": ["hook"]}]}}, env={})
    service = HealthService(cfg, persist=False)
    alerts = None
    if with_alerts:
        alerts = AlertService(cfg, SelfMetrics())
        alerts.start()
        service.add_snapshot_listener(alerts.on_snapshot)
    runner = service.probes["db"].runner
    results = [ProbeResult(Status.UP, 0.001, "ok"), ProbeResult(Status.DOWN, 0.001, "refused")]
    state = {"i": 0}

    def one() -> None:
        state["i"] += 1
        service.record(runner, results[state["i"] & 1])

    return one, alerts, service


def run(quick: bool) -> list[Comparison]:
    from pulsetrace.alerts import formats
    from pulsetrace.alerts.model import Alert, Notice

    import logging

    logging.getLogger("pulsetrace.health").setLevel(logging.ERROR)  # every result is a transition: no log I/O
    rounds, n = (3, 500) if quick else (9, 3000)
    ours_fn, alerts, _ = _health(True)
    peer_fn, _, _ = _health(False)
    try:
        ours, peer = interleaved(rounds, lambda: time_per_op(ours_fn, n), lambda: time_per_op(peer_fn, n))
    finally:
        if alerts is not None:
            alerts.stop(0.5)
    listen = Comparison(
        name="probe result recorded, alerts listening", ours_label="HealthService.record + AlertService listener",
        peer_label="HealthService.record, no alerts", unit="s", ours=ours, peer=peer, goal=("<=", 1.1),
        note="every result a transition (UP/DOWN alternating); the evaluator and delivery run on their own threads")
    notice = Notice(Alert(key="probe:db", severity="critical", title="db is DOWN", service="shop-api",
                          environment="prod", source="probe:db", started=1.7e9, summary="connect failed: refused",
                          value="DOWN", threshold="UP", probe="db", sla_target=99.9, budget_remaining=0.4,
                          revenue_at_risk=360.0, users_affected=5000, runbook_url="https://r.example.test/db",
                          command="pulsetrace check"), "firing", 1.7e9)

    def all_four() -> None:
        for body in (formats.discord(notice), formats.slack(notice), formats.pagerduty(notice, "k" * 32),
                     formats.webhook(notice)):
            json.dumps(body)

    r_ours, r_peer = interleaved(rounds, lambda: time_per_op(all_four, n),
                                 lambda: time_per_op(lambda: json.dumps(formats.webhook(notice)), n))
    render = Comparison(
        name="alert rendered for 4 channels", ours_label="Discord + Slack + PagerDuty + webhook, JSON",
        peer_label="webhook body alone, JSON", unit="s", ours=r_ours, peer=r_peer, goal=None,
        note="on the delivery thread, once per message and channel (report only)")
    return [listen, render]
