"""Alerts test helpers: sample alerts (plain and hostile) and configurations pointing at receivers."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pulsetrace.alerts.model import Alert, Notice, Severity
from pulsetrace.config.schema import Config
from pulsetrace.validation import config_from_mapping
from tests.alerts.receivers import HOOK_TOKEN, PD_KEY, Receiver

HOSTILE = ("é́👩‍👩‍👧‍👦<@everyone> & <!channel> *bold* `code` \n\x00 " * 400)


def alert(severity: Severity = "critical", *, text: str = "", key: str = "probe:db", **kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        key=key, severity=severity, title=f"db is DOWN{text}", service="shop-api", environment="uat",
        source=key, started=1_790_000_000.0, summary=f"connect failed: connection refused{text}", value="DOWN",
        threshold="UP", probe="db", sla_target=99.9, budget_remaining=0.42, revenue_at_risk=1234.5,
        users_affected=5000, runbook_url="https://runbooks.example.test/db", command="pulsetrace check")
    base.update(kw)
    return Alert(**base)


def notice(severity: Severity = "critical", status: str = "firing", **kw: Any) -> Notice:
    return Notice(alert(severity, **kw), status, 1_790_000_100.0)  # type: ignore[arg-type]


def channels_for(receivers: dict[str, Receiver]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, rec in receivers.items():
        if rec.kind == "pagerduty":
            out.append({"name": name, "type": "pagerduty", "routing_key": PD_KEY, "url": rec.url})
        elif rec.kind == "webhook":
            out.append({"name": name, "type": "webhook", "url": rec.url, "headers": {"X-Token": HOOK_TOKEN}})
        else:
            out.append({"name": name, "type": rec.kind, "url": rec.url})
    return out


def alerts_config(receivers: dict[str, Receiver], store: Path | None = None, **alerts: Any) -> Config:
    data: dict[str, Any] = {
        "service": {"name": "shop-api", "environment": "uat"},
        "store": {"path": str(store or tempfile.mkdtemp(prefix="alerts-store-"))},
        "alerts": {"channels": channels_for(receivers),
                   "routes": [{"channels": list(receivers)}], **alerts},
    }
    return config_from_mapping(data, env={})
