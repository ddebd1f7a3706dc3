"""The alert rules with a controllable clock: group_wait, flap folding, repeats, escalation, silences, routes."""

from __future__ import annotations

import dataclasses
from typing import Any

from pulsetrace.alerts.engine import AlertEngine, Outgoing
from pulsetrace.alerts.routing import channels_for, parse_time, silences_from
from pulsetrace.config.schema import AlertsConfig
from pulsetrace.validation import config_from_mapping
from tests.alerts.support import alert

T0 = 1_790_000_000.0


def engine(**alerts: Any) -> AlertEngine:
    data = {"alerts": {"channels": [{"name": "oncall", "type": "pagerduty", "routing_key": "k" * 32},
                                    {"name": "team", "type": "discord", "url": "https://discord.test/api/webhooks/1/t"},
                                    {"name": "ops", "type": "slack", "url": "https://hooks.slack.test/services/T/B/x"}],
                       "routes": [{"severity": ["critical"], "channels": ["oncall", "team"]},
                                  {"severity": ["warning", "business"], "channels": ["ops", "team"]}],
                       "group_wait": "30s", "repeat_interval": "4h", **alerts}}
    cfg = config_from_mapping(data, env={}).alerts
    return AlertEngine(cfg, silences_from(cfg))


def step(e: AlertEngine, active: dict[str, Any], now: float) -> list[Outgoing]:
    e.observe(active, ("probe:",), now)
    return e.due(now)


def test_a_new_alert_waits_group_wait_then_goes_to_the_routed_channels() -> None:
    e = engine()
    a = alert("critical")
    assert step(e, {a.key: a}, T0) == []
    assert step(e, {a.key: a}, T0 + 29) == []
    out = step(e, {a.key: a}, T0 + 30)
    assert [(o.notice.status, o.channels) for o in out] == [("firing", ("oncall", "team"))]
    assert step(e, {a.key: a}, T0 + 60) == []  # one open alert per key


def test_a_blip_shorter_than_group_wait_sends_nothing() -> None:
    e = engine()
    a = alert("critical")
    step(e, {a.key: a}, T0)
    assert step(e, {}, T0 + 10) == []
    assert step(e, {}, T0 + 60) == [] and e.open == {}


def test_resolve_goes_once_after_group_wait_to_the_same_channels_with_the_same_key() -> None:
    e = engine()
    a = alert("critical")
    step(e, {a.key: a}, T0)
    step(e, {a.key: a}, T0 + 30)
    assert step(e, {}, T0 + 100) == []
    out = step(e, {}, T0 + 130)
    assert [(o.notice.status, o.notice.alert.key, o.channels) for o in out] == [("resolved", "probe:db",
                                                                                 ("oncall", "team"))]
    assert step(e, {}, T0 + 500) == []


def test_twenty_flaps_in_a_minute_are_one_firing_and_one_resolve_counting_the_flaps() -> None:
    e = engine()
    a = alert("warning")
    sent: list[Outgoing] = []
    t = T0
    for _ in range(21):  # 20 flaps: DOWN 1.5 s, UP 1.5 s
        sent += step(e, {a.key: a}, t)
        sent += step(e, {}, t + 1.5)
        t += 3
    sent += step(e, {a.key: a}, t)  # still flapping at group_wait
    for k in range(1, 40):
        sent += step(e, {}, t + k * 2)
    assert [o.notice.status for o in sent] == ["firing", "resolved"]
    assert sent[0].notice.flaps >= 9  # the first message already says it flaps
    assert sent[1].notice.flaps == 21


def test_an_open_alert_is_repeated_every_repeat_interval_and_at_once_when_it_gets_worse() -> None:
    e = engine()
    warn = alert("warning", title="db is DEGRADED")
    step(e, {warn.key: warn}, T0)
    assert [o.channels for o in step(e, {warn.key: warn}, T0 + 30)] == [("ops", "team")]
    crit = dataclasses.replace(warn, severity="critical", title="db is DOWN")
    out = step(e, {crit.key: crit}, T0 + 40)
    assert [(o.notice.alert.severity, o.channels) for o in out] == [("critical", ("oncall", "team"))]
    assert step(e, {crit.key: crit}, T0 + 40 + 3600) == []
    assert len(step(e, {crit.key: crit}, T0 + 40 + 4 * 3600)) == 1
    # the resolve reaches every channel any firing reached
    step(e, {}, T0 + 5 * 3600)
    out = step(e, {}, T0 + 5 * 3600 + 30)
    assert out[0].notice.status == "resolved" and set(out[0].channels) == {"oncall", "team", "ops"}


def test_a_silence_sends_nothing_while_it_lasts_and_nothing_on_resolve() -> None:
    start, end = "2026-12-24T22:00:00Z", "2026-12-25T02:00:00Z"
    e = engine(silences=[{"match": {"probe": "db"}, "starts": start, "ends": end, "comment": "maintenance"}])
    a = dataclasses.replace(alert("critical"), started=parse_time(start) + 60)
    t = parse_time(start) + 60
    sent = step(e, {a.key: a}, t) + step(e, {a.key: a}, t + 300)
    assert sent == [] and e.open[a.key].silenced_by is not None
    sent = step(e, {}, t + 600) + step(e, {}, t + 700)
    assert sent == [] and e.open == {}


def test_an_alert_still_open_when_its_silence_ends_is_sent_then() -> None:
    e = engine(silences=[{"match": {"severity": "critical"}, "ends": "2026-12-25T02:00:00Z"}])
    a = alert("critical")
    t = parse_time("2026-12-25T01:59:00Z")
    assert step(e, {a.key: a}, t) + step(e, {a.key: a}, t + 40) == []
    assert [o.notice.status for o in step(e, {a.key: a}, t + 61)] == ["firing"]


def test_routes_match_severity_probe_operation_and_source_globs() -> None:
    cfg = config_from_mapping({"alerts": {
        "channels": [{"name": n, "type": "webhook", "url": "https://h.test/x"} for n in ("a", "b", "c")],
        "routes": [{"probe": ["pay*"], "channels": ["a"]}, {"operation": ["payment.*"], "channels": ["b"]},
                   {"source": ["sla:*"], "severity": ["critical"], "channels": ["c", "a"]}]}}, env={}).alerts
    assert channels_for(alert("warning", probe="payments"), cfg.routes) == ("a",)
    assert channels_for(alert("business", probe="", operation="payment.create", key="operation:payment.create"),
                        cfg.routes) == ("b",)
    assert channels_for(alert("critical", probe="db", key="sla:db:fast"), cfg.routes) == ("c", "a")
    assert channels_for(alert("warning", probe="db"), cfg.routes) == ()
    assert isinstance(cfg, AlertsConfig)
