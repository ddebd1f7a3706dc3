"""What each service accepts: a notice rendered as a Discord, Slack, PagerDuty, SNS or webhook payload.

Every limit a service documents is applied here, by truncation that never cuts a character:
Discord embeds (title 256, description 4,096, 25 fields of 256/1,024, footer 2,048, 6,000 in
all), Slack Block Kit (header 150, section text 3,000, 10 fields of 2,000, context 10
elements), PagerDuty Events v2 (``summary`` 1,024, ``source``/``component``/``group``/``class``
255, ``dedup_key`` 255), SNS (``Subject`` ASCII under 100). Colours are the product's
(docs/alerts.md). Pure functions, standard library only: the CloudWatch forwarder Lambda
inlines this module, so CloudWatch alarms look exactly like the agent's own alerts.
"""

from __future__ import annotations

import json
from typing import Any

from pulsetrace.alerts.model import Alert, Notice
from pulsetrace.alerts.text import ascii_subject, fmt_number, iso_time, one_line, truncate

DISCORD_COLOURS = {"critical": 0xFF0000, "warning": 0xFF9900, "business": 0x0099FF, "info": 0x0099FF,
                   "resolved": 0x00DD00}
SLACK_COLOURS = {"critical": "#8B0000", "warning": "#ff9500", "business": "#36a64f", "info": "#36a64f",
                 "resolved": "#36a64f"}
PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "business": "error", "info": "info"}
EMOJI = {"critical": "\U0001f534", "warning": "\U0001f7e0", "business": "\U0001f535", "info": "\U0001f535",
         "resolved": "\u2705"}

DISCORD_TOTAL = 6000
DISCORD_FIELD_NAME, DISCORD_FIELD_VALUE, DISCORD_MAX_FIELDS = 256, 1024, 25


def headline(notice: Notice) -> str:
    """``[CRITICAL] db is DOWN`` / ``[RESOLVED] db is DOWN`` / ``[TEST] ...``, with flaps counted."""
    a = notice.alert
    tag = "RESOLVED" if notice.status == "resolved" else a.severity.upper()
    if notice.test:
        tag = f"TEST {tag}"
    flaps = f" (flapping: {notice.flaps + 1}x)" if notice.flaps else ""
    return one_line(f"[{tag}] {a.title}{flaps}")


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The alert's named values, in the order people read them; unknown ones left out."""
    rows: list[tuple[str, str]] = [("Severity", alert.severity), ("Service", f"{alert.service} ({alert.environment})"),
                                   ("Source", alert.source)]
    if alert.value is not None:
        rows.append(("Value", fmt_number(alert.value)))
    if alert.threshold is not None:
        rows.append(("Threshold", fmt_number(alert.threshold)))
    if alert.sla_target is not None:
        rows.append(("SLA", f"{fmt_number(alert.sla_target)} %"))
    if alert.budget_remaining is not None:
        rows.append(("Budget left", f"{alert.budget_remaining * 100:.1f} %"))
    if alert.revenue_at_risk:
        rows.append(("Revenue at risk", fmt_number(round(alert.revenue_at_risk, 2))))
    if alert.users_affected:
        rows.append(("Users affected", fmt_number(alert.users_affected)))
    rows.append(("Started", iso_time(alert.started)))
    for k, v in alert.details.items():
        rows.append((str(k), fmt_number(v)))
    return rows


def _colour_key(notice: Notice) -> str:
    return "resolved" if notice.status == "resolved" else notice.alert.severity


def _discord_len(embed: dict[str, Any]) -> int:
    fields = embed.get("fields", [])
    return (len(embed.get("title", "")) + len(embed.get("description", "")) + len(embed["footer"]["text"])
            + sum(len(f["name"]) + len(f["value"]) for f in fields))


def discord(notice: Notice, username: str = "") -> dict[str, Any]:
    """A Discord execute-webhook body: one embed, no mentions parsed (alert text cannot ping @everyone)."""
    a = notice.alert
    description = a.summary or a.title
    if a.command:
        description += f"\n`{a.command}`"
    embed: dict[str, Any] = {
        "title": truncate(headline(notice), 256),
        "description": truncate(description, 4096),
        "color": DISCORD_COLOURS[_colour_key(notice)],
        "timestamp": iso_time(notice.at),
        "fields": [{"name": truncate(one_line(k), DISCORD_FIELD_NAME) or "-",
                    "value": truncate(v, DISCORD_FIELD_VALUE) or "-", "inline": len(v) <= 40}
                   for k, v in facts(a)[:DISCORD_MAX_FIELDS]],
        "footer": {"text": truncate(f"pulsetrace · {a.key}", 2048)},
    }
    if a.runbook_url.startswith(("https://", "http://")) and len(a.runbook_url) <= 2048:
        embed["url"] = a.runbook_url
    # The 6,000-character budget: drop trailing fields, then shorten the description.
    while _discord_len(embed) > DISCORD_TOTAL and embed["fields"]:
        embed["fields"].pop()
    over = _discord_len(embed) - DISCORD_TOTAL
    if over > 0:
        embed["description"] = truncate(embed["description"], max(1, len(embed["description"]) - over))
    body: dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
    if username:
        body["username"] = truncate(one_line(username), 80)
    return body


def _mrkdwn(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut_escaped(text: str, limit: int) -> str:
    """Escape for mrkdwn and fit ``limit`` after escaping (never splitting an ``&amp;``)."""
    escaped = _mrkdwn(text)
    while len(escaped) > limit:
        text = truncate(text, max(1, len(text) - (len(escaped) - limit)))
        escaped = _mrkdwn(text)
    return escaped


def slack(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook body: fallback ``text`` plus one attachment (the colour bar) of Block Kit blocks."""
    a = notice.alert
    head = headline(notice)
    rows = facts(a)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(f"{EMOJI[_colour_key(notice)]} {head}", 150),
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut_escaped(a.summary or a.title, 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut_escaped(f"*{k}*\n{v}", 2000)}
                                       for k, v in rows[:10]]},
    ]
    context: list[dict[str, Any]] = [{"type": "mrkdwn", "text": _cut_escaped(f"key `{a.key}`", 3000)}]
    if a.command:
        context.append({"type": "mrkdwn", "text": _cut_escaped(f"more: `{a.command}`", 3000)})
    if a.runbook_url.startswith(("https://", "http://")) and "|" not in a.runbook_url and ">" not in a.runbook_url:
        context.append({"type": "mrkdwn", "text": f"<{a.runbook_url}|runbook>"})
    blocks.append({"type": "context", "elements": context})
    return {"text": truncate(head, 3000),
            "attachments": [{"color": SLACK_COLOURS[_colour_key(notice)], "fallback": truncate(head, 3000),
                             "blocks": blocks}]}


def pagerduty(notice: Notice, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger with the alert's payload, or resolve by ``dedup_key``."""
    a = notice.alert
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": truncate(a.key, 255, ""),
                             "event_action": "resolve" if notice.status == "resolved" else "trigger"}
    if notice.status == "resolved":
        return event
    custom: dict[str, Any] = {k: v for k, v in facts(a)}
    if a.command:
        custom["command"] = a.command
    event["payload"] = {
        "summary": truncate(headline(notice), 1024),
        "source": truncate(one_line(f"{a.service}/{a.environment}"), 255) or "pulsetrace",
        "severity": PAGERDUTY_SEVERITY[a.severity],
        "timestamp": iso_time(a.started),
        "component": truncate(one_line(a.probe or a.operation or a.source), 255) or "pulsetrace",
        "group": truncate(one_line(a.service), 255) or "pulsetrace",
        "class": truncate(one_line(a.source.split(":", 1)[0]), 255) or "alert",
        "custom_details": custom,
    }
    event["client"] = "pulsetrace"
    if a.runbook_url.startswith(("https://", "http://")):
        event["links"] = [{"href": a.runbook_url, "text": "runbook"}]
    return event


def webhook(notice: Notice) -> dict[str, Any]:
    """The documented webhook body (docs/alerts.md, ``version: 1``)."""
    a = notice.alert
    return {"version": 1, "status": notice.status, "key": a.key, "severity": a.severity, "title": a.title,
            "summary": a.summary or a.title, "service": a.service, "environment": a.environment, "source": a.source,
            "value": a.value, "threshold": a.threshold, "started": a.started, "runbook_url": a.runbook_url or None,
            "details": {"probe": a.probe or None, "operation": a.operation or None, "sla_target": a.sla_target,
                        "budget_remaining": a.budget_remaining, "revenue_at_risk": a.revenue_at_risk,
                        "users_affected": a.users_affected, "command": a.command or None, "flaps": notice.flaps,
                        "test": notice.test, **dict(a.details)}}


def sns(notice: Notice) -> tuple[str, str]:
    """(``Subject``, ``Message``) for SNS Publish: an ASCII subject under 100, the webhook body as JSON."""
    return ascii_subject(headline(notice), 100), json.dumps(webhook(notice), ensure_ascii=False)
