"""The probe protocol and its typed result: what every probe, built-in or custom, returns.

A probe's ``check()`` measures one dependency once and returns a :class:`ProbeResult`.
It must not hold on to the application's connections, and its ``detail`` must already
be redacted (the scheduler redacts again, to be safe). The scheduler, not the probe,
enforces the hard timeout, the cadence and the flap damping.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    from pulsetrace.store import LocalStore
    from pulsetrace.healthchecks.heartbeats import HeartbeatBook
    from pulsetrace.healthchecks.redact import Redactor

#: A measurement value: numbers for metrics, short strings / string lists for the details.
Measurement = Union[float, int, bool, str, list[str]]


class Status(str, enum.Enum):
    """Probe and overall status. The values are the strings of the user-facing contract."""

    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value

    @property
    def severity(self) -> int:
        """UP 0 < DEGRADED 1 < DOWN 2; UNKNOWN is -1 (no evidence either way)."""
        return _SEVERITY[self]


_SEVERITY = {Status.UP: 0, Status.DEGRADED: 1, Status.DOWN: 2, Status.UNKNOWN: -1}


@dataclass(frozen=True)
class ProbeResult:
    """One check of one dependency.

    ``latency_s`` is the time the check took (for a timeout: the timeout), ``detail``
    one redacted line for humans, ``measurements`` named values (``connect_ms``,
    ``hit_ratio``, ``stale_readers`` ...) shown in the details and exported as metrics
    when numeric.
    """

    status: Status
    latency_s: float = 0.0
    detail: str = ""
    measurements: Mapping[str, Measurement] = field(default_factory=dict)

    @classmethod
    def up(cls, latency_s: float, detail: str = "ok", **measurements: Measurement) -> ProbeResult:
        return cls(Status.UP, latency_s, detail, measurements)

    @classmethod
    def down(cls, latency_s: float, detail: str, **measurements: Measurement) -> ProbeResult:
        return cls(Status.DOWN, latency_s, detail, measurements)


@runtime_checkable
class Probe(Protocol):
    """Checks one dependency. ``check`` is awaited by the scheduler, never concurrently with itself."""

    async def check(self) -> ProbeResult:
        ...


class ClosableProbe(Probe, Protocol):
    """A probe holding resources (a client, a pool) that it releases on shutdown."""

    async def aclose(self) -> None:
        ...


@dataclass
class ProbeContext:
    """What the runtime gives a probe factory besides its own :class:`ProbeConfig`."""

    redactor: Redactor
    heartbeats: HeartbeatBook
    store: LocalStore | None = None
    #: Wall clock (epoch seconds); injectable for tests.
    clock: Callable[[], float] = time.time
    #: Where blocking work (SQLite reads) runs; ``None``: the loop's default executor.
    io: Executor | None = None
    #: When the health service started (``clock`` seconds; default: ``clock()`` now), and its start-up
    #: grace period: a probe with nothing to judge yet reports UNKNOWN at least that long.
    started_at: float | None = None
    startup_grace: float = 0.0

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()

    @property
    def since_start(self) -> float:
        """Seconds (``clock``) since the health service started."""
        return self.clock() - (self.started_at or 0.0)


def worst(statuses: Mapping[str, Status] | list[Status]) -> Status:
    """The most severe of some statuses (UNKNOWN only when there is nothing else)."""
    values = list(statuses.values()) if isinstance(statuses, Mapping) else statuses
    known = [s for s in values if s is not Status.UNKNOWN]
    if not known:
        return Status.UNKNOWN
    return max(known, key=lambda s: s.severity)


def describe_error(exc: BaseException, limit: int = 240) -> str:
    """``"ConnectionRefusedError: ..."``: one line, bounded. Not yet redacted."""
    raw = str(exc).strip()
    text = raw.splitlines()[0] if raw else ""
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."
