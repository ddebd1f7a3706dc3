"""The health score: one number from 0 to 100 for the whole service, from the health snapshot.

Each probe with a result scores its status (UP 100, DEGRADED 60, DOWN 0) and its SLA
compliance (100 while the 30-day availability meets the target, else the share of the
30-day error budget left, 0 when it is spent): ``0.7 × status + 0.3 × compliance``
(a probe without an SLA: its status alone). Probes are weighted by criticality: a
critical probe (one that makes ``/health`` answer 503 when DOWN) weighs 3, any other 1.
``UNKNOWN`` probes (no result yet) are left out; with no probe at all there is no score.

So one critical dependency DOWN takes a service with two other healthy probes to
``(3 × 30 + 2 × 100) / 5 = 58`` (30: its compliance still counts), one non-critical
DOWN to 86, one DEGRADED critical to 83.2. The CloudWatch ``HealthScore`` metric and
``/metrics``' ``pulsetrace_health_score`` are this number. A pure function: no I/O, never raises
on a snapshot read back from JSON with fields missing (what it cannot read it leaves out).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulsetrace.healthchecks.snapshot import HealthSnapshot, SlaReport

STATUS_SCORES: dict[str, float] = {"UP": 100.0, "DEGRADED": 60.0, "DOWN": 0.0}
CRITICAL_WEIGHT = 3.0
STATUS_SHARE = 0.7


def finite_number(value: object) -> float | None:
    """A finite int/float (not a bool) as a float, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _compliance(sla: SlaReport) -> float | None:
    """100 while the 30-day availability meets the target, else the 30-day budget left (percent)."""
    window = sla.windows.get("30d")
    if window is None:
        return None
    availability = finite_number(window.availability)
    if availability is not None and availability >= sla.target:
        return 100.0
    budget = finite_number(window.budget_remaining)  # a fraction: 1 untouched, negative overspent
    if budget is None:
        return None
    return min(100.0, max(0.0, budget * 100.0))


def health_score(snapshot: HealthSnapshot) -> float | None:
    """The score of one health snapshot; ``None`` without a probe result."""
    weighted = weights = 0.0
    for probe in snapshot.probes.values():
        status = STATUS_SCORES.get(probe.status.value)
        if status is None:
            continue
        compliance = _compliance(probe.sla)
        score = status if compliance is None else STATUS_SHARE * status + (1 - STATUS_SHARE) * compliance
        weight = CRITICAL_WEIGHT if probe.critical else 1.0
        weighted += weight * score
        weights += weight
    if weights == 0:
        return None
    return round(weighted / weights, 2)
