"""What raises an alert: probe status and SLA burn rates (health snapshots), business failure rates and
the agent's own drops (the local store).

Each source returns the conditions active now as :class:`~pulsetrace.alerts.model.Alert` by key,
and the key prefixes it speaks for (so the engine knows what cleared):

- ``probe:NAME``: the probe is DOWN (critical when the probe is critical, else warning) or DEGRADED
  (warning); UP again clears it. UNKNOWN (not checked yet) raises nothing.
- ``sla:NAME:fast`` / ``sla:NAME:slow``: the SRE workbook's multi-window burn-rate alerts of the
  probe's SLA: the fast pair (1 h and 5 m at 14.4x) is critical (pages); the slow pairs (6 h and
  30 m at 6x, 3 d and 6 h at 1x) are warnings (tickets). They are inhibited while the probe is DOWN
  and until their short window has passed since it last left DOWN: that outage already paged (and
  resolved) as ``probe:NAME``, and its burn only echoes it. What they catch is the failing that never
  turns the probe DOWN (failures below ``failure_threshold``, again and again).
- ``operation:OP``: the failure rate of business operation ``OP`` over ``failure_window`` is above
  its ``failure_rates`` threshold (business severity), counted from the sampled spans in the local
  store (as the passive probe counts them: keep-errors spans are left out, they would bias it).
- ``agent:dropped``: the agent's spans or metrics were dropped in every look for longer than
  ``drop_window`` (warning).

The snapshot source is pure (it reads the details dict); the store sources read SQLite and run on
the alert evaluator's thread, never on the health loop. None of them raises for a storage problem.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pulsetrace.alerts.model import Alert, Severity
from pulsetrace.config.schema import Config

__all__ = ["DropWatch", "business_alerts", "snapshot_alerts", "SNAPSHOT_SCOPE", "BUSINESS_SCOPE", "DROP_SCOPE"]

_log = logging.getLogger("pulsetrace.alerts")
SNAPSHOT_SCOPE = ("probe:", "sla:")
BUSINESS_SCOPE = ("operation:",)
DROP_SCOPE = ("agent:",)
_FAST = ("1h",)
_SLOW = ("6h", "3d")
#: Short window of each burn-rate pair (seconds): how long an ended outage keeps echoing in it.
_SHORT_S = {"1h": 300.0, "6h": 1800.0, "3d": 6 * 3600.0}


def _left_down_at(p: Mapping[str, Any]) -> float | None:
    """When the probe last left DOWN (from its recent transitions), or ``None``."""
    times = [t.get("at") for t in p.get("transitions") or () if isinstance(t, Mapping) and t.get("from") == "DOWN"]
    nums = [float(t) for t in times if isinstance(t, (int, float))]
    return max(nums) if nums else None


def runbook(cfg: Config, key: str, source: str, probe: str = "", operation: str = "") -> str:
    template = cfg.alerts.runbook_url
    if not template:
        return ""
    try:
        return template.format(key=key, source=source, probe=probe, operation=operation,
                               service=cfg.service.name, environment=cfg.service.environment)
    except (KeyError, IndexError, ValueError):
        return template


def _alert(cfg: Config, **kw: Any) -> Alert:
    kw.setdefault("runbook_url", runbook(cfg, kw["key"], kw["source"], kw.get("probe", ""), kw.get("operation", "")))
    return Alert(service=cfg.service.name, environment=cfg.service.environment, **kw)


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def snapshot_alerts(cfg: Config, details: Mapping[str, Any], now: float) -> dict[str, Alert]:
    """The probe and burn-rate conditions in a health details dict (``/health/details``)."""
    out: dict[str, Alert] = {}
    probes: Mapping[str, Any] = details.get("probes") or {}
    for name, p in probes.items():
        if not isinstance(p, Mapping):
            continue
        sla = p.get("sla") or {}
        window = (sla.get("windows") or {}).get("30d") or {}
        impact = p.get("impact") or {}
        common: dict[str, Any] = {
            "probe": str(name), "sla_target": _num(sla.get("target")),
            "budget_remaining": _num(window.get("budget_remaining")),
            "revenue_at_risk": _num(impact.get("revenue_at_risk")),
            "users_affected": int(impact["users_affected"]) if _num(impact.get("users_affected")) else None,
            "command": "pulsetrace check",
        }
        status = p.get("status")
        if status in ("DOWN", "DEGRADED"):
            severity: Severity = "critical" if status == "DOWN" and p.get("critical") else "warning"
            key = f"probe:{name}"
            started = _num(p.get("last_transition")) or now
            out[key] = _alert(cfg, key=key, severity=severity, source=key, started=started,
                              title=f"{name} is {status}", summary=str(p.get("detail") or status),
                              value=status, threshold="UP", **common)
        left_down = _left_down_at(p)
        for pair, names, severity in (("fast", _FAST, "critical"), ("slow", _SLOW, "warning")):
            firing = [(w, a) for w, a in (sla.get("burn_alerts") or {}).items()
                      if w in names and isinstance(a, Mapping) and a.get("firing") and status != "DOWN"
                      and (left_down is None or now - left_down >= _SHORT_S[w])]
            if not firing:
                continue
            window_name, state = firing[0]
            key = f"sla:{name}:{pair}"
            out[key] = _alert(cfg, key=key, severity=severity, source=key, started=now,
                              title=f"{name}: error budget burning {_num(state.get('long')) or 0:.1f}x "
                                    f"({window_name} and {state.get('short_window')})",
                              summary=(f"At this rate the {sla.get('target')} % SLA of {name} is spent "
                                       f"{'in hours' if pair == 'fast' else 'before the month ends'}."),
                              value=_num(state.get("long")), threshold=_num(state.get("threshold")),
                              **{**common, "command": "pulsetrace sla"})
    return out


def undecided_keys(details: Mapping[str, Any]) -> tuple[str, ...]:
    """Key prefixes of the probes that have not reported yet (UNKNOWN): nothing about them clears."""
    probes: Mapping[str, Any] = details.get("probes") or {}
    return tuple(prefix for name, p in probes.items() if isinstance(p, Mapping) and p.get("status") == "UNKNOWN"
                 for prefix in (f"probe:{name}", f"sla:{name}:"))


_OPS_QUERY = ("SELECT json_extract(attributes, '$.\"business.operation\"') AS op, status, "
              "json_extract(attributes, '$.\"business.outcome\"') FROM spans WHERE start >= ? "
              "AND json_extract(attributes, '$.\"sampling.kept_by\"') IS NULL AND op IN ({marks}) LIMIT 500000")
_SUCCESS = ("success", "ok", "succeeded", "true")


def operation_counts(connect: Callable[[], sqlite3.Connection], operations: list[str],
                     since: float) -> dict[str, tuple[int, int]]:
    """``{operation: (total, failed)}`` among the sampled spans started at or after ``since``."""
    if not operations:
        return {}
    sql = _OPS_QUERY.format(marks=",".join("?" * len(operations)))
    try:
        rows = connect().execute(sql, (since, *operations)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    counts: dict[str, list[int]] = {}
    for op, status, outcome in rows:
        c = counts.setdefault(str(op), [0, 0])
        c[0] += 1
        ok = status == "ok" if outcome is None else str(outcome).lower() in _SUCCESS
        c[1] += not ok
    return {op: (c[0], c[1]) for op, c in counts.items()}


def business_alerts(cfg: Config, counts: Mapping[str, tuple[int, int]], now: float) -> dict[str, Alert]:
    out: dict[str, Alert] = {}
    a = cfg.alerts
    for op, threshold in a.failure_rates.items():
        total, failed = counts.get(op, (0, 0))
        if total < a.failure_min_samples:
            continue
        rate = 100.0 * failed / total
        if rate <= threshold:
            continue
        key = f"operation:{op}"
        minutes = a.failure_window / 60
        out[key] = _alert(cfg, key=key, severity="business", source=key, started=now, operation=op,
                          title=f"{op}: {rate:.1f} % failing (threshold {threshold:g} %)",
                          summary=f"{failed} of {total} sampled {op} operations failed in the last {minutes:g} min.",
                          value=round(rate, 2), threshold=threshold, command="pulsetrace traces",
                          details={"failed": failed, "total": total})
    return out


@dataclass
class DropWatch:
    """Raises ``agent:dropped`` when the agent's drop counters grew at every look for ``window`` seconds.

    A look with no growth after ``2 × interval`` ends the streak (drops come in bursts between looks).
    """

    window: float
    interval: float
    last_total: float | None = None
    streak_start: float | None = None
    last_growth: float | None = None

    def feed(self, total: float, now: float) -> bool:
        grew = self.last_total is not None and total > self.last_total
        if self.last_total is not None and total < self.last_total:
            grew = False  # a process's counters left the store (pruned, restarted): start over
        self.last_total = total
        if grew:
            if self.streak_start is None or self.last_growth is None or now - self.last_growth > 2 * self.interval + 1:
                self.streak_start = now - self.interval  # the drops happened since the previous look
            self.last_growth = now
        elif self.last_growth is not None and now - self.last_growth > 2 * self.interval + 1:
            self.streak_start = self.last_growth = None
        return self.streak_start is not None and self.last_growth is not None \
            and self.last_growth - self.streak_start >= self.window


def drop_alert(cfg: Config, watch: DropWatch, by_reason: Mapping[str, float], now: float) -> dict[str, Alert]:
    if watch.streak_start is None:
        return {}
    top = ", ".join(f"{r} {int(v)}" for r, v in sorted(by_reason.items(), key=lambda kv: -kv[1])[:5])
    key = "agent:dropped"
    return {key: _alert(cfg, key=key, severity="warning", source=key, started=watch.streak_start,
                        title=f"pulsetrace is dropping telemetry ({int(sum(by_reason.values()))} so far)",
                        summary=f"Spans or metrics have been dropped for over {cfg.alerts.drop_window:g} s: {top}.",
                        value=sum(by_reason.values()), threshold=0, command="pulsetrace status")}
