"""The alert models: what an alert says, one message about it, one delivery of that message, its result.

Pure data (frozen dataclasses, standard library only: the CloudWatch forwarder Lambda inlines
this module). No I/O, no clock: times are given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["critical", "warning", "business", "info"]
#: Most urgent first.
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "business", "info")
NoticeStatus = Literal["firing", "resolved"]
Scalar = str | float | int | None


@dataclass(frozen=True)
class Alert:
    """One condition that someone should know about, identified by ``key``.

    ``key`` is stable for the life of the condition (the PagerDuty ``dedup_key`` is the same
    string): ``probe:db``, ``sla:db:fast``, ``operation:payment.create``, ``agent:spans_dropped``.
    ``source`` names what raised it the way routes and silences match it.
    """

    key: str
    severity: Severity
    title: str
    service: str
    environment: str
    source: str
    started: float
    summary: str = ""
    value: Scalar = None
    threshold: Scalar = None
    probe: str = ""
    operation: str = ""
    sla_target: float | None = None
    budget_remaining: float | None = None
    revenue_at_risk: float | None = None
    users_affected: int | None = None
    runbook_url: str = ""
    #: The ``pulsetrace`` command that shows more.
    command: str = ""
    details: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    """One message about an alert: it fires (again) or it resolved.

    ``flaps`` counts the times it resolved and fired again within ``repeat_interval`` that this
    one message stands for (0: none); ``test`` marks ``pulsetrace alert test``.
    """

    alert: Alert
    status: NoticeStatus
    at: float
    flaps: int = 0
    test: bool = False


@dataclass(frozen=True)
class Delivery:
    """A notice on its way to one channel. ``deadline`` is on the monotonic clock."""

    notice: Notice
    channel: str
    deadline: float
    attempts: int = 0


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt got: ``status`` is the HTTP status (``None``: no answer), ``detail`` one line.

    ``retry_after`` is the wait the service asked for (429 ``Retry-After``), in seconds.
    """

    channel: str
    ok: bool
    status: int | None
    detail: str
    retryable: bool = False
    retry_after: float | None = None
