"""The health page's data: probe history read from the local store, turned into what the page draws.

The store holds what ``pulsetrace run``/``serve`` persisted: per probe, one SLA bucket per
minute (seconds up/degraded/down, result counts, a latency histogram) and every change of
reported status. From those, for a time range ending now: each probe's status timeline
(exact, from the transitions) and its per-minute measured strip, availability and budget
per SLA window against the target, burn rates of the multi-window pairs over time, revenue
at risk and users affected over time, and the ``check``-shaped document of ``/api/health``.

Read-only: the tables are looked up in ``sqlite_master`` first and never created (a store
written by no health process simply has no probes). Blocking SQLite I/O: call from a
worker thread. Probe targets and impact come from the configuration; a probe found in the
store but no longer configured is shown against the default 99.9 % target.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.history import decode_hist
from pulsetrace.healthchecks.sla import BURN_WINDOWS, RETENTION_MINUTES, WINDOWS, MinuteRow, SlaTracker
from pulsetrace.healthchecks.status import ProbeView, overall

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig
    from pulsetrace.store import LocalStore

__all__ = ["RANGES", "ProbeHistory", "Segment", "HealthPage", "health_page", "check_document"]

#: The health page's time ranges (name → seconds). ``auto``: from the oldest history of the last
#: 24 hours to now (at least two minutes), so a short run fills the charts instead of a sliver.
RANGES: dict[str, int] = {"auto": 86400, "5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
#: Points per over-time chart.
_POINTS = 90
#: A probe whose newest bucket is older than this is shown as stale (the agent is not running).
STALE_AFTER_S = 180.0
_DEFAULT_TARGET = 99.9


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    status: str


@dataclass
class ProbeHistory:
    name: str
    target: float
    critical: bool
    configured: bool
    status: str
    detail: str
    last_checked: float | None
    last_transition: float | None
    timeline: list[Segment] = field(default_factory=list)
    #: (minute start, status of the worst time in it or "NONE") over the range.
    minutes: list[tuple[float, str]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    burn_rates: dict[str, float | None] = field(default_factory=dict)
    burn_alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: name of the pair → [(t, long-window rate or None, short-window rate or None)]
    burn_series: dict[str, list[tuple[float, float | None, float | None]]] = field(default_factory=dict)
    #: [(t, revenue at risk accumulated since the range start, users affected at t)]
    impact_series: list[tuple[float, float, int]] = field(default_factory=list)
    revenue_at_risk: float = 0.0
    users_affected: int = 0
    latency_ms: dict[str, float] | None = None
    stale: bool = False


@dataclass
class HealthPage:
    now: float
    range_name: str
    start: float
    status: str
    stale: bool
    probes: list[ProbeHistory]


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def _minutes(conn: sqlite3.Connection, probe: str, since_minute: int) -> list[MinuteRow]:
    rows = conn.execute(
        "SELECT minute, up_s, degraded_s, down_s, n_up, n_degraded, n_down, lat FROM health_sla "
        "WHERE probe = ? AND minute >= ? ORDER BY minute", (probe, since_minute)).fetchall()
    return [MinuteRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], decode_hist(r[7])) for r in rows]


def _transitions(conn: sqlite3.Connection, probe: str, since: float) -> list[tuple[float, str, str, str]]:
    """Transitions from ``since`` on, plus the last one before it (the status the range starts in)."""
    before = conn.execute("SELECT at, from_status, to_status, reason FROM health_transitions WHERE probe = ? AND "
                          "at < ? ORDER BY at DESC LIMIT 1", (probe, since)).fetchall()
    after = conn.execute("SELECT at, from_status, to_status, reason FROM health_transitions WHERE probe = ? AND "
                         "at >= ? ORDER BY at LIMIT 5000", (probe, since)).fetchall()
    return [(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in before + after]


def _status(text: str) -> str:
    return text if text in {s.value for s in Status} else Status.UNKNOWN.value


def _worst(row: MinuteRow) -> str:
    if row.down_s > 0:
        return "DOWN"
    if row.degraded_s > 0:
        return "DEGRADED"
    if row.up_s > 0:
        return "UP"
    return "NONE"


def _probe(conn: sqlite3.Connection, name: str, pc: ProbeConfig | None, cfg: Config, now: float,
           start: float) -> ProbeHistory:
    hc = cfg.health
    target = pc.sla if pc is not None else _DEFAULT_TARGET
    tracker = SlaTracker(target, degraded_is_available=hc.degraded_is_available, min_samples=hc.burn_min_samples,
                         min_failures=hc.burn_min_failures, hist_minutes=60)
    rows = _minutes(conn, name, int(now // 60) - RETENTION_MINUTES)
    tracker.load(rows, now)
    trans = _transitions(conn, name, start)
    current = trans[-1] if trans else None
    last_checked = min(now, (rows[-1].minute + 1) * 60.0) if rows else None
    p = ProbeHistory(name=name, target=target, critical=bool(pc.critical) if pc is not None else False,
                     configured=pc is not None, status=_status(current[2]) if current else Status.UNKNOWN.value,
                     detail=current[3] if current else "no status change recorded yet",
                     last_checked=last_checked, last_transition=current[0] if current else None)
    p.stale = last_checked is None or now - last_checked > STALE_AFTER_S
    # The timeline: the status the range starts in, then each change.
    first_seen = next((r.minute * 60.0 for r in rows if r.minute * 60.0 + 60 > start), None)
    t0 = max(start, first_seen) if first_seen is not None else None
    if t0 is not None:
        status = "UNKNOWN"
        cursor = t0
        for at, _frm, to, _reason in trans:
            if at <= t0:
                status = _status(to)
                continue
            p.timeline.append(Segment(cursor, min(at, now), status))
            cursor, status = at, _status(to)
        end = last_checked if last_checked is not None and p.stale else now
        if end > cursor:
            p.timeline.append(Segment(cursor, end, status))
    p.transitions = [{"at": at, "from": _status(frm), "to": _status(to), "reason": reason}
                     for at, frm, to, reason in trans if at >= start]
    p.minutes = [(r.minute * 60.0, _worst(r)) for r in rows if r.minute * 60.0 + 60 > start]
    p.windows = {w: tracker.window(now, s).to_dict() for w, s in WINDOWS.items()}
    p.burn_rates, alerts = tracker.burn(now)
    p.burn_alerts = {w: a.to_dict() for w, a in alerts.items()}
    p.latency_ms = tracker.latency(now, 3600)
    span = now - start
    for pair, long_s, short_s, _factor in BURN_WINDOWS:
        series: list[tuple[float, float | None, float | None]] = []
        for i in range(_POINTS + 1):
            t = start + span * i / _POINTS
            series.append((t, _rate(tracker, t, long_s), _rate(tracker, t, short_s)))
        p.burn_series[pair] = series
    impact = pc.impact if pc is not None else None
    per_minute = impact.revenue_per_minute if impact is not None else 0.0
    weight = impact.degraded_weight if impact is not None else 0.0
    users = impact.users if impact is not None else 0
    total = 0.0
    by_minute = {r.minute: r for r in rows}
    for m in range(int(start // 60), int(now // 60) + 1):
        r = by_minute.get(m)
        affected = 0
        if r is not None:
            total += per_minute * (r.down_s + weight * r.degraded_s) / 60.0
            affected = users if (r.down_s > 0 or r.degraded_s > 0) else 0
        p.impact_series.append((m * 60.0, round(total, 2), affected))
    if p.impact_series:  # carried to now, so the line spans the whole range
        p.impact_series.append((now, p.impact_series[-1][1], p.impact_series[-1][2]))
    if p.status in ("DOWN", "DEGRADED") and p.last_transition is not None:
        share = 1.0 if p.status == "DOWN" else weight
        p.revenue_at_risk = round(per_minute * share * max(0.0, now - p.last_transition) / 60.0, 2)
        p.users_affected = users
    return p


def _rate(tracker: SlaTracker, t: float, seconds: int) -> float | None:
    s = tracker.sums(t, seconds)
    if s.observed_s <= 0:
        return None
    rate = (s.bad_s(tracker.degraded_is_available) / s.observed_s) / tracker.allowed_fraction
    return round(rate, 4) if math.isfinite(rate) else None


def health_page(store: LocalStore, cfg: Config, now: float, range_name: str = "auto") -> HealthPage:
    """Every probe that is configured or has history in the store, over ``range_name`` up to ``now``."""
    range_name = range_name if range_name in RANGES else "auto"
    start = now - RANGES[range_name]
    configured = {p.name: p for p in cfg.health.probes}
    names = list(configured)
    probes: list[ProbeHistory] = []
    if store.exists():
        conn = store.connect()
        tables = _tables(conn)
        if "health_sla" in tables and "health_transitions" in tables:
            if range_name == "auto":
                first = conn.execute("SELECT min(minute) FROM health_sla WHERE minute >= ?",
                                     (int(start // 60),)).fetchone()[0]
                start = min(now - 120.0, first * 60.0 - 15.0) if first is not None else now - 3600.0
            stored = [r[0] for r in conn.execute("SELECT DISTINCT probe FROM health_sla ORDER BY probe")]
            names += [n for n in stored if n not in configured]
            probes = [_probe(conn, n, configured.get(n), cfg, now, start) for n in names]
    if not probes:
        probes = [ProbeHistory(name=n, target=p.sla, critical=p.critical, configured=True, status="UNKNOWN",
                               detail="no history in the local store yet", last_checked=None, last_transition=None,
                               stale=True) for n, p in configured.items()]
    views = [ProbeView(Status(p.status), p.critical, p.last_checked is not None) for p in probes]
    return HealthPage(now=now, range_name=range_name, start=start,
                      status=overall(views).value, stale=bool(probes) and all(p.stale for p in probes),
                      probes=probes)


def check_document(page: HealthPage) -> dict[str, Any]:
    """``/api/health``: the ``check`` / ``/health/details`` shape, as the store last saw each probe."""
    probes: dict[str, Any] = {}
    for p in page.probes:
        probes[p.name] = {
            "status": p.status, "critical": p.critical,
            "latency_ms": None if not p.latency_ms else p.latency_ms.get("p50"),
            "last_checked": p.last_checked, "last_transition": p.last_transition, "detail": p.detail,
            "stale": p.stale,
            "sla": {"target": p.target,
                    "windows": {w: {"availability": v["availability"], "budget_remaining": v["budget_remaining"]}
                                for w, v in p.windows.items()},
                    "burn_rates": p.burn_rates},
            "impact": {"revenue_at_risk": p.revenue_at_risk, "users_affected": p.users_affected},
        }
    return {"status": page.status, "stale": page.stale, "generated_at": page.now, "probes": probes}
