"""Fixtures of the alerts tests: one loopback receiver per channel type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alerts.receivers import HOOK_TOKEN, Receiver, start_receiver


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    """``team`` Discord, ``ops`` Slack, ``oncall`` PagerDuty, ``hook`` a webhook expecting its ``X-Token``."""
    recs = {"team": start_receiver("discord"), "ops": start_receiver("slack"), "oncall": start_receiver("pagerduty"),
            "hook": start_receiver("webhook")}
    recs["hook"].expect_headers = {"X-Token": HOOK_TOKEN}
    yield recs
    for r in recs.values():
        r.stop()
