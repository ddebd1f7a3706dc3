"""The typed configuration of ``alerts:``: channels, routes, silences and timing.

Part of :mod:`pulsetrace.config.schema` (which re-exports these names). Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pulsetrace.config.fields import Duration, _c

#: Alert severities, most urgent first (``critical`` pages, ``warning`` tickets).
ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warning", "business", "info")
#: What a silence or a route may match on.
ALERT_MATCH_KEYS: tuple[str, ...] = ("probe", "operation", "severity", "source", "sla", "key")


@dataclass(frozen=True)
class AlertChannelConfig:
    """One place alerts go. Which keys a type reads: docs/alerts.md (``discord``/``slack``/``webhook``
    ``url``; ``pagerduty`` ``routing_key`` (+ ``url``); ``sns`` ``topic_arn``)."""

    name: str
    type: str = field(default="webhook", metadata=_c(choices="alert_channel"))
    #: The whole URL is a secret (a Discord or Slack webhook holds its token in the path).
    url: str = field(default="", metadata=_c(secret=True, mask="path"))
    routing_key: str = field(default="", metadata=_c(secret=True))
    headers: dict[str, str] = field(default_factory=dict, metadata=_c(secret=True))
    topic_arn: str = ""
    region: str = ""
    endpoint_url: str = ""
    #: Requests per minute at most (0: the service's documented default, see docs/alerts.md).
    rate_per_minute: float = field(default=0.0, metadata=_c(min=0.0, max=6000.0))
    #: I/O timeout of one request.
    timeout: Duration = field(default=5.0, metadata=_c(min=0.1, max=60.0))
    #: Discord: the name the message is posted under.
    username: str = ""


@dataclass(frozen=True)
class AlertRouteConfig:
    """Every matching route delivers (an empty list matches anything)."""

    channels: list[str] = field(default_factory=list)
    severity: list[str] = field(default_factory=list, metadata=_c(choices=ALERT_SEVERITIES))
    #: Glob patterns on the alert's probe, business operation or source (``probe:db``, ``sla:db``).
    probe: list[str] = field(default_factory=list)
    operation: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SilenceConfig:
    """Nothing is sent for an alert that matches while ``starts <= now < ends`` (ISO 8601 times)."""

    match: dict[str, str] = field(default_factory=dict, metadata=_c(keys=ALERT_MATCH_KEYS))
    starts: str = ""
    ends: str = ""
    comment: str = ""


def _default_failure_rates() -> dict[str, float]:
    # Percent of failed operations over ``failure_window``; the figures of docs/health.md.
    return {"payment.create": 1.5, "order.create": 5.0, "rfid.verify": 1.0}


@dataclass(frozen=True)
class AlertsConfig:
    channels: list[AlertChannelConfig] = field(default_factory=list)
    routes: list[AlertRouteConfig] = field(default_factory=list)
    #: How long a new alert waits for others to group with it before the first message.
    group_wait: Duration = field(default=30.0, metadata=_c(min=0.0, max=3600.0))
    #: An open alert is sent again after this long; an alert that resolves and fires again within it
    #: is a flap and is folded into one grouped message.
    repeat_interval: Duration = field(default=4 * 3600.0, metadata=_c(min=10.0, max=30 * 86400.0))
    send_resolved: bool = True
    silences: list[SilenceConfig] = field(default_factory=list)
    #: Business operation → failure rate (percent) over ``failure_window`` that raises a business alert.
    failure_rates: dict[str, float] = field(default_factory=_default_failure_rates, metadata=_c(min=0.0, max=100.0))
    failure_window: Duration = field(default=300.0, metadata=_c(min=10.0, max=86400.0))
    #: Fewer operations than this in the window never raise a failure-rate alert.
    failure_min_samples: int = field(default=20, metadata=_c(min=1))
    #: The agent's own spans or metrics dropped for longer than this: a warning.
    drop_window: Duration = field(default=60.0, metadata=_c(min=1.0, max=86400.0))
    #: How often business rates and the agent's drops are looked at.
    evaluate_interval: Duration = field(default=15.0, metadata=_c(min=0.05, max=3600.0))
    #: Runbook link put on every alert: ``{key}``, ``{source}``, ``{probe}``, ``{operation}`` are filled in.
    runbook_url: str = ""
    #: Bounded delivery queue (messages); a full queue drops and counts.
    queue_size: int = field(default=256, metadata=_c(min=1, max=100_000))
    #: A message not delivered within this long (retries and rate limits included) is dropped.
    delivery_deadline: Duration = field(default=120.0, metadata=_c(min=1.0, max=86400.0))
