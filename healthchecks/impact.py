"""Business impact of a probe being unhealthy: revenue at risk and users affected.

Per probe ``impact: {revenue_per_minute, users, capabilities, degraded_weight}``. While the
reported status is DOWN, revenue at risk grows by ``revenue_per_minute`` per minute; while
DEGRADED, by ``degraded_weight`` of it, and ``degraded_weight`` is 0 unless the probe's
impact declares it: a probe that is slow but answering loses no revenue unless the user
says it does. Time with no verdict (UNKNOWN, or the start-up grace period) accrues nothing.
``users_affected`` is ``users`` while the probe is DOWN, or DEGRADED with a declared
weight, else 0. The live figure covers the current incident (since the probe left UP) and
resets when it is UP again; the incident just ended stays visible as ``last_incident``.
Totals over SLA windows come from the measured minute buckets (``Sums.revenue_at_risk``).
Pure computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.snapshot import Impact, Incident

if TYPE_CHECKING:
    from pulsetrace.config.schema import ImpactConfig


class ImpactTracker:
    def __init__(self, cfg: ImpactConfig) -> None:
        self.cfg = cfg
        self.revenue_at_risk = 0.0
        self.incident_started: float | None = None
        self.status = Status.UNKNOWN
        self.last_incident: Incident | None = None

    def weight(self, status: Status) -> float:
        """The share of ``revenue_per_minute`` at risk per minute in ``status``."""
        if status is Status.DOWN:
            return 1.0
        return self.cfg.degraded_weight if status is Status.DEGRADED else 0.0

    def advance(self, status: Status, now: float, elapsed_s: float) -> None:
        """The probe was ``status`` (reported) for the last ``elapsed_s`` seconds, up to ``now``."""
        elapsed_s = max(0.0, elapsed_s)
        weight = self.weight(status)
        if weight > 0:
            if self.incident_started is None:
                self.incident_started = now - elapsed_s
            self.revenue_at_risk += self.cfg.revenue_per_minute * weight * elapsed_s / 60.0
        elif status is Status.UP and self.incident_started is not None:
            self.last_incident = Incident(self.incident_started, now, round(self.revenue_at_risk, 2))
            self.incident_started = None
            self.revenue_at_risk = 0.0
        self.status = status

    @property
    def users_affected(self) -> int:
        return self.cfg.users if self.weight(self.status) > 0 else 0

    def report(self) -> Impact:
        caps = None
        if self.cfg.capabilities:
            caps = tuple(self.cfg.capabilities) if self.weight(self.status) > 0 else ()
        return Impact(revenue_at_risk=round(self.revenue_at_risk, 2), users_affected=self.users_affected,
                      revenue_per_minute=self.cfg.revenue_per_minute, incident_started=self.incident_started,
                      capabilities_affected=caps, last_incident=self.last_incident)
