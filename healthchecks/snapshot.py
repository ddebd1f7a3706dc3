"""The health snapshot as typed, immutable data, and the one place it is read from.

The probe loop builds a new :class:`HealthSnapshot` after every result and publishes it on
a :class:`SnapshotBoard`; every reader (the health routes, the Prometheus exposition, the
CloudWatch health metrics, ``pulsetrace check``, snapshot listeners such as the alert
engine) gets a :class:`HealthSnapshot` from :meth:`SnapshotBoard.read` or as a listener's
argument, and reads fields, never ``.get()`` chains. :meth:`HealthSnapshot.to_dict` is the
details JSON of docs/json.md (``/health/details``, ``check --json``), written through
explicit field lists; :func:`snapshot_from_dict` reads that JSON back (for a client of
``/health/details`` or the UI's ``/api/health``).

The board is written by one thread (the probe loop) and read by any: a publish swaps one
reference, so a reader sees a whole snapshot or the previous one, never a mix. Staleness is
judged from the probe loop's own progress (:meth:`SnapshotBoard.tick`), never from how
quickly a reader got to run: a busy HTTP loop can delay an answer, not turn it into a 503.
Nothing here does I/O or raises on a reader's path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pulsetrace.healthchecks.base import Measurement, Status
from pulsetrace.healthchecks.damping import Transition

__all__ = ["BurnAlert", "HealthSnapshot", "Impact", "Incident", "ProbeSnapshot", "SlaReport", "SlaWindow",
           "SnapshotBoard", "SnapshotListener", "snapshot_from_dict"]


@dataclass(frozen=True)
class SlaWindow:
    """One rolling SLA window of one probe. ``availability`` is percent (``None``: nothing observed)."""

    availability: float | None
    budget_remaining: float
    budget_total_s: float
    budget_remaining_s: float
    downtime_s: float
    degraded_s: float
    observed_s: float
    samples: int
    #: Only on the 24h and 30d windows.
    revenue_at_risk: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"availability": self.availability, "budget_remaining": self.budget_remaining,
                               "budget_total_s": self.budget_total_s, "budget_remaining_s": self.budget_remaining_s,
                               "downtime_s": self.downtime_s, "degraded_s": self.degraded_s,
                               "observed_s": self.observed_s, "samples": self.samples}
        if self.revenue_at_risk is not None:
            out["revenue_at_risk"] = self.revenue_at_risk
        return out


@dataclass(frozen=True)
class BurnAlert:
    """A multi-window burn-rate alert: the long window's rate, the short window's, and whether both burn."""

    long: float | None
    short: float | None
    short_window: str
    threshold: float
    firing: bool
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"long": self.long, "short": self.short, "short_window": self.short_window,
                "threshold": self.threshold, "firing": self.firing, "samples": self.samples}


@dataclass(frozen=True)
class SlaReport:
    target: float
    windows: Mapping[str, SlaWindow]
    burn_rates: Mapping[str, float | None]
    burn_alerts: Mapping[str, BurnAlert]
    latency_ms: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "windows": {k: w.to_dict() for k, w in self.windows.items()},
                "burn_rates": dict(self.burn_rates), "burn_alerts": {k: a.to_dict() for k, a in self.burn_alerts.items()},
                "latency_ms": None if self.latency_ms is None else dict(self.latency_ms)}


@dataclass(frozen=True)
class Incident:
    started: float
    ended: float
    revenue_at_risk: float

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "ended": self.ended, "revenue_at_risk": self.revenue_at_risk}


@dataclass(frozen=True)
class Impact:
    """Business impact now: revenue at risk in the current incident, users affected while not UP."""

    revenue_at_risk: float = 0.0
    users_affected: int = 0
    revenue_per_minute: float = 0.0
    incident_started: float | None = None
    #: ``None`` when the probe declares no capabilities.
    capabilities_affected: tuple[str, ...] | None = None
    last_incident: Incident | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revenue_at_risk": self.revenue_at_risk, "users_affected": self.users_affected,
                               "revenue_per_minute": self.revenue_per_minute,
                               "incident_started": self.incident_started}
        if self.capabilities_affected is not None:
            out["capabilities_affected"] = list(self.capabilities_affected)
        if self.last_incident is not None:
            out["last_incident"] = self.last_incident.to_dict()
        return out


@dataclass(frozen=True)
class ProbeSnapshot:
    """One probe in the snapshot: the reported (damped) status and what backs it."""

    status: Status
    critical: bool
    type: str
    latency_ms: float | None
    last_checked: float | None
    last_transition: float | None
    last_result: Status | None
    detail: str
    measurements: Mapping[str, Measurement]
    consecutive_failures: int
    transitions: tuple[Transition, ...]
    sla: SlaReport
    impact: Impact

    @property
    def reported(self) -> bool:
        """Whether the probe has produced a result yet."""
        return self.last_result is not None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "critical": self.critical, "type": self.type,
                "latency_ms": self.latency_ms, "last_checked": self.last_checked,
                "last_transition": self.last_transition,
                "last_result": None if self.last_result is None else self.last_result.value,
                "detail": self.detail,
                "measurements": {k: (list(v) if isinstance(v, list) else v) for k, v in self.measurements.items()},
                "consecutive_failures": self.consecutive_failures,
                "transitions": [t.as_dict() for t in self.transitions],
                "sla": self.sla.to_dict(), "impact": self.impact.to_dict()}


@dataclass(frozen=True)
class HealthSnapshot:
    """The whole health state at ``generated_at`` (epoch seconds)."""

    status: Status
    stale: bool
    generated_at: float
    probes: Mapping[str, ProbeSnapshot] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        """What ``/health`` answers: 200 for UP or DEGRADED, 503 for DOWN, UNKNOWN or stale."""
        return 200 if self.status in (Status.UP, Status.DEGRADED) and not self.stale else 503

    def to_dict(self) -> dict[str, Any]:
        """The details JSON (``/health/details``, ``pulsetrace check --json``) as plain data."""
        return {"status": self.status.value, "stale": self.stale, "generated_at": self.generated_at,
                "probes": {name: p.to_dict() for name, p in self.probes.items()}}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode() + b"\n"

    def health_body(self) -> bytes:
        """The ``/health`` body: ``{"status", "stale"}``."""
        return json.dumps({"status": self.status.value, "stale": self.stale}).encode() + b"\n"


#: Called with every new snapshot, on the probe loop's thread: must be quick and must not block.
SnapshotListener = Callable[[HealthSnapshot], None]


class _Published:
    """A snapshot with its serialised forms, built lazily once (a few bytes objects per publish)."""

    __slots__ = ("snapshot", "stale", "_health", "_details")

    def __init__(self, snapshot: HealthSnapshot) -> None:
        self.snapshot = snapshot
        self.stale = replace(snapshot, stale=True)
        self._health: dict[bool, tuple[int, bytes]] = {}
        self._details: dict[bool, bytes] = {}

    def get(self, stale: bool) -> HealthSnapshot:
        return self.stale if stale else self.snapshot

    def health(self, stale: bool) -> tuple[int, bytes]:
        out = self._health.get(stale)
        if out is None:
            snap = self.get(stale)
            out = self._health[stale] = (snap.http_status, snap.health_body())
        return out

    def details(self, stale: bool) -> bytes:
        out = self._details.get(stale)
        if out is None:
            out = self._details[stale] = self.get(stale).to_json()
        return out


class SnapshotBoard:
    """The latest snapshot, and whether the probe loop is still making progress.

    The probe loop calls :meth:`publish` after every result and :meth:`tick` from its
    watchdog (about once a second), saying whether, by its own clock, a result is overdue.
    :meth:`read` marks the snapshot stale when the loop says so, or when the loop has shown
    no sign of life (no publish, no tick) for ``stale_after`` seconds: then nothing is
    checking any more.
    """

    def __init__(self, initial: HealthSnapshot, stale_after: float, *, has_probes: bool = True,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.has_probes = has_probes
        self.monotonic = monotonic
        self._published = _Published(initial)
        self._alive_at = monotonic()
        self._overdue = False

    def publish(self, snapshot: HealthSnapshot) -> None:
        """A new snapshot (the probe loop, after a result)."""
        self._published = _Published(snapshot)
        self._alive_at = self.monotonic()
        self._overdue = False

    def tick(self, overdue: bool = False) -> None:
        """The probe loop is alive; ``overdue``: by its own clock, no result came within ``stale_after``."""
        self._alive_at = self.monotonic()
        self._overdue = overdue

    def is_stale(self) -> bool:
        if not self.has_probes:
            return False
        return self._overdue or self.monotonic() - self._alive_at > self.stale_after

    def read(self) -> HealthSnapshot:
        """The current snapshot, ``stale`` set when it is: the one way every reader reads it."""
        published = self._published
        return published.get(self.is_stale())

    def health(self) -> tuple[int, bytes]:
        """(HTTP status, body) of ``/health``: prebuilt bytes, no JSON encoding per request."""
        published = self._published
        return published.health(self.is_stale())

    def details_json(self) -> bytes:
        published = self._published
        return published.details(self.is_stale())


# -- reading the details JSON back ------------------------------------------------------------------


def _f(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _status(value: Any, default: Status = Status.UNKNOWN) -> Status:
    try:
        return Status(str(value))
    except ValueError:
        return default


def _window(d: Mapping[str, Any]) -> SlaWindow:
    return SlaWindow(availability=_f(d.get("availability")), budget_remaining=_f(d.get("budget_remaining")) or 0.0,
                     budget_total_s=_f(d.get("budget_total_s")) or 0.0,
                     budget_remaining_s=_f(d.get("budget_remaining_s")) or 0.0,
                     downtime_s=_f(d.get("downtime_s")) or 0.0, degraded_s=_f(d.get("degraded_s")) or 0.0,
                     observed_s=_f(d.get("observed_s")) or 0.0, samples=int(_f(d.get("samples")) or 0),
                     revenue_at_risk=_f(d.get("revenue_at_risk")))


def _alert(d: Mapping[str, Any]) -> BurnAlert:
    return BurnAlert(long=_f(d.get("long")), short=_f(d.get("short")), short_window=str(d.get("short_window", "")),
                     threshold=_f(d.get("threshold")) or 0.0, firing=bool(d.get("firing")),
                     samples=int(_f(d.get("samples")) or 0))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _probe(name: str, d: Mapping[str, Any]) -> ProbeSnapshot:
    sla = _mapping(d.get("sla"))
    impact = _mapping(d.get("impact"))
    last = _mapping(impact.get("last_incident"))
    latency = sla.get("latency_ms")
    caps = impact.get("capabilities_affected")
    transitions = tuple(
        Transition(str(t.get("probe", name)), _f(t.get("at")) or 0.0, _status(t.get("from")), _status(t.get("to")),
                   str(t.get("reason", "")))
        for t in d.get("transitions") or () if isinstance(t, Mapping))
    measurements = {str(k): v for k, v in _mapping(d.get("measurements")).items()
                    if isinstance(v, (int, float, bool, str)) or (isinstance(v, list) and all(isinstance(x, str) for x in v))}
    return ProbeSnapshot(
        status=_status(d.get("status")), critical=bool(d.get("critical")), type=str(d.get("type", "")),
        latency_ms=_f(d.get("latency_ms")), last_checked=_f(d.get("last_checked")),
        last_transition=_f(d.get("last_transition")),
        last_result=None if d.get("last_result") is None else _status(d.get("last_result")),
        detail=str(d.get("detail", "")), measurements=measurements,
        consecutive_failures=int(_f(d.get("consecutive_failures")) or 0), transitions=transitions,
        sla=SlaReport(target=_f(sla.get("target")) or 0.0,
                      windows={str(k): _window(v) for k, v in _mapping(sla.get("windows")).items() if isinstance(v, Mapping)},
                      burn_rates={str(k): _f(v) for k, v in _mapping(sla.get("burn_rates")).items()},
                      burn_alerts={str(k): _alert(v) for k, v in _mapping(sla.get("burn_alerts")).items()
                                   if isinstance(v, Mapping)},
                      latency_ms=None if not isinstance(latency, Mapping) else
                      {str(k): float(v) for k, v in latency.items() if _f(v) is not None}),
        impact=Impact(revenue_at_risk=_f(impact.get("revenue_at_risk")) or 0.0,
                      users_affected=int(_f(impact.get("users_affected")) or 0),
                      revenue_per_minute=_f(impact.get("revenue_per_minute")) or 0.0,
                      incident_started=_f(impact.get("incident_started")),
                      capabilities_affected=None if not isinstance(caps, list) else tuple(str(c) for c in caps),
                      last_incident=None if not last else Incident(_f(last.get("started")) or 0.0,
                                                                   _f(last.get("ended")) or 0.0,
                                                                   _f(last.get("revenue_at_risk")) or 0.0)))


def snapshot_from_dict(doc: object) -> HealthSnapshot:
    """The details JSON (as parsed) back into a :class:`HealthSnapshot`.

    Unknown, missing or ill-typed fields are tolerated (missing numbers read as ``None`` or 0, an
    unknown status as UNKNOWN); never raises.
    """
    doc = _mapping(doc)
    return HealthSnapshot(status=_status(doc.get("status")), stale=bool(doc.get("stale")),
                          generated_at=_f(doc.get("generated_at")) or 0.0,
                          probes={str(n): _probe(str(n), p) for n, p in _mapping(doc.get("probes")).items()
                                  if isinstance(p, Mapping)})
