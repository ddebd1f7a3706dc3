"""Flap damping: the reported status of a probe moves only after enough consecutive evidence.

Severity orders UP < DEGRADED < DOWN. The reported status gets worse only after
``failure_threshold`` consecutive results at least that bad, and better only after
``success_threshold`` consecutive results at least that good; it moves to the most severe
(getting worse) or the best (getting better) level the streak supports. So with
thresholds of 2, results DEGRADED, DOWN take an UP probe to DEGRADED, one more DOWN
takes it to DOWN. The first result after start is taken as is (there is nothing to damp),
and an UNKNOWN result (no evidence, e.g. too few samples) is reported at once.
Pure logic, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pulsetrace.healthchecks.base import Status


@dataclass(frozen=True)
class Transition:
    """The reported status of ``probe`` changed at ``at`` (epoch seconds) because of ``reason``."""

    probe: str
    at: float
    from_status: Status
    to_status: Status
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "at": self.at, "from": self.from_status.value, "to": self.to_status.value,
                "reason": self.reason}


class Damper:
    def __init__(self, failure_threshold: int, success_threshold: int) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.success_threshold = max(1, success_threshold)
        self.status = Status.UNKNOWN
        self.results = 0
        #: consecutive results at least as bad as the key
        self._worse = {Status.DEGRADED: 0, Status.DOWN: 0}
        #: consecutive results at least as good as the key
        self._better = {Status.UP: 0, Status.DEGRADED: 0}

    @property
    def consecutive_failures(self) -> int:
        return self._worse[Status.DOWN]

    def feed(self, raw: Status) -> Status | None:
        """Take one result; returns the new reported status when it changed, else None."""
        first = self.results == 0
        self.results += 1
        if raw is Status.UNKNOWN:
            for d in (self._worse, self._better):
                for k in d:
                    d[k] = 0
            return self._move(Status.UNKNOWN)
        for level in self._worse:
            self._worse[level] = self._worse[level] + 1 if raw.severity >= level.severity else 0
        for level in self._better:
            self._better[level] = self._better[level] + 1 if raw.severity <= level.severity else 0
        if first or self.status is Status.UNKNOWN:
            return self._move(raw)
        if raw.severity > self.status.severity:
            for level in (Status.DOWN, Status.DEGRADED):
                if level.severity > self.status.severity and self._worse[level] >= self.failure_threshold:
                    return self._move(level)
        elif raw.severity < self.status.severity:
            for level in (Status.UP, Status.DEGRADED):
                if level.severity < self.status.severity and self._better[level] >= self.success_threshold:
                    return self._move(level)
        return None

    def _move(self, new: Status) -> Status | None:
        if new is self.status:
            return None
        self.status = new
        return new
