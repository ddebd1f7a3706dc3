"""Overall status from the probes' reported statuses, and what ``/health`` answers.

- Before every probe has reported once: UNKNOWN (``/health`` 503: not ready yet).
- A ``critical`` probe DOWN: DOWN (503). Non-critical DOWN never fails the target: an ALB
  takes a target out when it fails, and a shared dependency (the database every task uses)
  being down would take *every* task out, after which the ALB fails open anyway.
- Any probe DOWN or DEGRADED, or a critical probe UNKNOWN (no evidence, e.g. a passive probe
  with too few samples): DEGRADED (200, the status in the body).
- Otherwise UP (also with no probes at all).
- Stale: the snapshot is older than ``stale_factor`` × the longest probe interval: 503
  whatever the status, because nothing is checking any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pulsetrace.healthchecks.base import Status


@dataclass(frozen=True)
class ProbeView:
    status: Status
    critical: bool
    reported: bool


def overall(probes: Iterable[ProbeView]) -> Status:
    views = list(probes)
    if any(not p.reported for p in views):
        return Status.UNKNOWN
    if any(p.critical and p.status is Status.DOWN for p in views):
        return Status.DOWN
    if any(p.status in (Status.DOWN, Status.DEGRADED) or (p.critical and p.status is Status.UNKNOWN)
           for p in views):
        return Status.DEGRADED
    return Status.UP


def http_status(status: Status, stale: bool) -> int:
    return 200 if status in (Status.UP, Status.DEGRADED) and not stale else 503


def exit_code(status: Status) -> int:
    """``pulsetrace check``: 0 UP, 1 DEGRADED, 2 DOWN (and UNKNOWN: nothing could be shown healthy)."""
    return {Status.UP: 0, Status.DEGRADED: 1}.get(status, 2)
