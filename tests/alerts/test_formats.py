"""Every payload is one the service accepts (checked by the receivers' validators), whatever the alert says."""

from __future__ import annotations

import json

import pytest

from pulsetrace.alerts import formats
from pulsetrace.alerts.text import ascii_subject, truncate
from tests.alerts.receivers import PD_KEY, check_discord, check_pagerduty, check_slack, check_webhook
from tests.alerts.support import HOSTILE, notice

SEVERITIES = ["critical", "warning", "business", "info"]
DISCORD_PATH = "/api/webhooks/1/abc?wait=true"
SLACK_PATH = "/services/T1/B1/abc"


@pytest.mark.parametrize("severity", SEVERITIES)
def test_discord_embed_is_coloured_by_severity_and_green_when_resolved(severity: str) -> None:
    firing = formats.discord(notice(severity))  # type: ignore[arg-type]
    resolved = formats.discord(notice(severity, "resolved"))  # type: ignore[arg-type]
    expected = {"critical": 0xFF0000, "warning": 0xFF9900, "business": 0x0099FF, "info": 0x0099FF}[severity]
    assert firing["embeds"][0]["color"] == expected
    assert resolved["embeds"][0]["color"] == 0x00DD00
    assert firing["allowed_mentions"] == {"parse": []}
    assert check_discord(DISCORD_PATH, firing) == [] and check_discord(DISCORD_PATH, resolved) == []


@pytest.mark.parametrize("severity", SEVERITIES)
def test_slack_attachment_colour_by_severity(severity: str) -> None:
    body = formats.slack(notice(severity))  # type: ignore[arg-type]
    expected = {"critical": "#8B0000", "warning": "#ff9500", "business": "#36a64f", "info": "#36a64f"}[severity]
    assert body["attachments"][0]["color"] == expected
    assert formats.slack(notice(severity, "resolved"))["attachments"][0]["color"] == "#36a64f"  # type: ignore[arg-type]
    assert check_slack(SLACK_PATH, body) == []


def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    trigger = formats.pagerduty(notice("critical"), PD_KEY)
    resolve = formats.pagerduty(notice("critical", "resolved"), PD_KEY)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "probe:db"
    assert trigger["payload"]["severity"] == "critical"
    assert formats.pagerduty(notice("business"), PD_KEY)["payload"]["severity"] == "error"
    assert check_pagerduty("/v2/enqueue", trigger) == [] and check_pagerduty("/v2/enqueue", resolve) == []


def test_webhook_body_follows_the_documented_schema() -> None:
    for status in ("firing", "resolved"):
        body = formats.webhook(notice("warning", status))
        assert check_webhook("/hook", json.loads(json.dumps(body))) == []
        assert body["status"] == status and body["key"] == "probe:db"


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_hostile_text_is_cut_to_every_limit_without_breaking_a_character(status: str) -> None:
    n = notice("critical", status, text=HOSTILE, details={f"k{i}{HOSTILE[:300]}": HOSTILE for i in range(40)})
    d, s, p, w = (formats.discord(n), formats.slack(n), formats.pagerduty(n, PD_KEY), formats.webhook(n))
    assert check_discord(DISCORD_PATH, d) == []
    assert check_slack(SLACK_PATH, s) == []
    assert check_pagerduty("/v2/enqueue", p) == []
    assert check_webhook("/hook", json.loads(json.dumps(w))) == []
    for text in (d["embeds"][0]["title"], d["embeds"][0]["description"], s["text"]):
        text.encode("utf-8")  # no lone surrogate
        assert not text.endswith(("\u200d", "\u0301"))  # no half cluster left at the cut


def test_sns_subject_is_ascii_one_line_and_under_100() -> None:
    subject, message = formats.sns(notice("critical", text=HOSTILE))
    assert len(subject) < 100 and subject.isascii() and "\n" not in subject and subject[0].isprintable()
    assert json.loads(message)["key"] == "probe:db"
    assert ascii_subject("Café down") == "Cafe down"


def test_truncate_never_splits_a_joined_emoji_or_combining_mark() -> None:
    family = "👩‍👩‍👧‍👦"
    for limit in range(1, 12):
        cut = truncate("ab" + family + "cd", limit)
        assert len(cut) <= limit
        assert "\u200d" not in cut or family in cut
    assert truncate("e\u0301e\u0301e\u0301", 4) in ("e\u0301…", "…")
    assert truncate("short", 10) == "short"
