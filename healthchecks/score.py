"""The health score: one number from 0 to 100 for the whole service, from the health details.

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
on a malformed snapshot (what it cannot read it leaves out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

STATUS_SCORES: dict[str, float] = {"UP": 100.0, "DEGRADED": 60.0, "DOWN": 0.0}
CRITICAL_WEIGHT = 3.0
STATUS_SHARE = 0.7


def finite_number(value: object) -> float | None:
    """A finite int/float (not a bool) as a float, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _compliance(sla: object) -> float | None:
    """100 while the 30-day availability meets the target, else the 30-day budget left (percent)."""
    if not isinstance(sla, Mapping):
        return None
    target = finite_number(sla.get("target"))
    windows = sla.get("windows")
    window = windows.get("30d") if isinstance(windows, Mapping) else None
    if not isinstance(window, Mapping):
        return None
    availability = finite_number(window.get("availability"))
    if target is not None and availability is not None and availability >= target:
        return 100.0
    budget = finite_number(window.get("budget_remaining"))  # a fraction: 1 untouched, negative overspent
    if budget is None:
        return None
    return min(100.0, max(0.0, budget * 100.0))


def health_score(details: Mapping[str, Any]) -> float | None:
    """The score of one health snapshot (the ``/health/details`` dict); ``None`` without a probe result."""
    probes = details.get("probes")
    if not isinstance(probes, Mapping):
        return None
    weighted = weights = 0.0
    for probe in probes.values():
        if not isinstance(probe, Mapping):
            continue
        status = STATUS_SCORES.get(str(probe.get("status", "")))
        if status is None:
            continue
        compliance = _compliance(probe.get("sla"))
        score = status if compliance is None else STATUS_SHARE * status + (1 - STATUS_SHARE) * compliance
        weight = CRITICAL_WEIGHT if probe.get("critical") else 1.0
        weighted += weight * score
        weights += weight
    if weights == 0:
        return None
    return round(weighted / weights, 2)
