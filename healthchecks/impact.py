"""Business impact of a probe being unhealthy: revenue at risk and users affected.

Per probe ``impact: {revenue_per_minute, users, capabilities, degraded_weight}``. While the
reported status is DOWN, revenue at risk grows by ``revenue_per_minute`` per minute; while
DEGRADED, by ``degraded_weight`` of it. ``users_affected`` is ``users`` while the probe is
not UP (DOWN or DEGRADED), else 0. The live figure covers the current incident (since the
probe left UP) and resets when it is UP again; the incident just ended stays visible as
``last_incident``. Totals over SLA windows come from the measured minute buckets
(:func:`window_revenue`). Pure computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Status

if TYPE_CHECKING:
    from pulsetrace.config.schema import ImpactConfig
    from pulsetrace.healthchecks.sla import Sums


def window_revenue(cfg: ImpactConfig, sums: Sums) -> float:
    """Revenue at risk over a window's measured down/degraded seconds."""
    return cfg.revenue_per_minute * (sums.down_s + cfg.degraded_weight * sums.degraded_s) / 60.0


class ImpactTracker:
    def __init__(self, cfg: ImpactConfig) -> None:
        self.cfg = cfg
        self.revenue_at_risk = 0.0
        self.incident_started: float | None = None
        self.status = Status.UNKNOWN
        self.last_incident: dict[str, Any] | None = None

    def advance(self, status: Status, now: float, elapsed_s: float) -> None:
        """The probe was ``status`` (reported) for the last ``elapsed_s`` seconds, up to ``now``."""
        elapsed_s = max(0.0, elapsed_s)
        weight = 1.0 if status is Status.DOWN else self.cfg.degraded_weight if status is Status.DEGRADED else 0.0
        if weight > 0:
            if self.incident_started is None:
                self.incident_started = now - elapsed_s
            self.revenue_at_risk += self.cfg.revenue_per_minute * weight * elapsed_s / 60.0
        elif status is Status.UP and self.incident_started is not None:
            self.last_incident = {"started": self.incident_started, "ended": now,
                                  "revenue_at_risk": round(self.revenue_at_risk, 2)}
            self.incident_started = None
            self.revenue_at_risk = 0.0
        self.status = status

    @property
    def users_affected(self) -> int:
        return self.cfg.users if self.status in (Status.DOWN, Status.DEGRADED) else 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revenue_at_risk": round(self.revenue_at_risk, 2), "users_affected": self.users_affected,
                               "revenue_per_minute": self.cfg.revenue_per_minute,
                               "incident_started": self.incident_started}
        if self.cfg.capabilities:
            unhealthy = self.status in (Status.DOWN, Status.DEGRADED)
            out["capabilities_affected"] = list(self.cfg.capabilities) if unhealthy else []
        if self.last_incident is not None:
            out["last_incident"] = self.last_incident
        return out
