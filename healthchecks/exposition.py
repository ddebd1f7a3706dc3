"""Prometheus text exposition (format 0.0.4) of the health details and the agent's self-metrics.

Built from the typed snapshot (the same one ``/health/details`` shows), so it never
runs a probe and shows exactly what the snapshot holds. Probe details and measurements
are already redacted; only numbers and probe names appear as values or labels here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pulsetrace.healthchecks.base import Status

from pulsetrace.healthchecks.score import health_score

if TYPE_CHECKING:
    from pulsetrace.healthchecks.snapshot import HealthSnapshot
    from pulsetrace.selfmetrics import SelfMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("UP", "DEGRADED", "DOWN", "UNKNOWN")
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: object) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "+Inf" if f > 0 else "-Inf"
        return repr(f) if not f.is_integer() else str(int(f)) if abs(f) < 1e15 else repr(f)
    return None


def _ratio(percent: float | None) -> float | None:
    """A percent from the snapshot (availability 99.95) as the ratio Prometheus metrics use (0.9995)."""
    return None if percent is None else round(percent / 100.0, 8)  # no float noise (0.9995000000000001)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.declared: set[str] = set()

    def metric(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, object], object]]) -> None:
        rendered = []
        for labels, value in samples:
            text = _num(value)
            if text is None:
                continue
            label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            rendered.append(f"{name}{{{label_text}}} {text}" if label_text else f"{name} {text}")
        if not rendered:
            return
        if name not in self.declared:
            self.declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(rendered)


def render(snapshot: HealthSnapshot, metrics: SelfMetrics | None = None,
           counters: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The exposition text. ``counters``: per-probe counters (``checks``, ``timeouts``) by probe name."""
    w = _Writer()
    overall = snapshot.status.value
    w.metric("pulsetrace_health_status", "gauge", "Overall health: 1 for the current status.",
             [({"status": s}, int(s == overall)) for s in STATUSES])
    w.metric("pulsetrace_health_score", "gauge",
             "Health score 0-100: probe status and SLA compliance, weighted by criticality (HealthScore).",
             [({}, health_score(snapshot))])
    w.metric("pulsetrace_health_stale", "gauge", "1 when the health snapshot is stale.", [({}, snapshot.stale)])
    probes = snapshot.probes
    w.metric("pulsetrace_probe_status", "gauge", "Probe status: 1 for the current status.",
             [({"probe": n, "status": s}, int(p.status.value == s)) for n, p in probes.items() for s in STATUSES])
    w.metric("pulsetrace_probe_up", "gauge", "1 when the probe is UP or DEGRADED, 0 when DOWN or UNKNOWN.",
             [({"probe": n}, int(p.status in (Status.UP, Status.DEGRADED))) for n, p in probes.items()])
    w.metric("pulsetrace_probe_critical", "gauge", "1 when the probe is critical for /health.",
             [({"probe": n}, p.critical) for n, p in probes.items()])
    w.metric("pulsetrace_probe_latency_seconds", "gauge", "Duration of the last check.",
             [({"probe": n}, p.latency_ms / 1000.0) for n, p in probes.items() if p.latency_ms is not None])
    w.metric("pulsetrace_probe_last_checked_timestamp_seconds", "gauge", "When the probe last ran (epoch).",
             [({"probe": n}, p.last_checked) for n, p in probes.items()])
    windows = [(n, name, win) for n, p in probes.items() for name, win in p.sla.windows.items()]
    w.metric("pulsetrace_probe_availability_ratio", "gauge", "Time-weighted availability over the window.",
             [({"probe": n, "window": name}, _ratio(win.availability)) for n, name, win in windows])
    w.metric("pulsetrace_probe_error_budget_remaining_ratio", "gauge",
             "Error budget left over the window (1 untouched, 0 spent, negative overspent).",
             [({"probe": n, "window": name}, win.budget_remaining) for n, name, win in windows])
    w.metric("pulsetrace_probe_error_budget_remaining_seconds", "gauge", "Error budget left over the window.",
             [({"probe": n, "window": name}, win.budget_remaining_s) for n, name, win in windows])
    w.metric("pulsetrace_probe_sla_target_ratio", "gauge", "The availability target.",
             [({"probe": n}, p.sla.target / 100.0) for n, p in probes.items()])
    w.metric("pulsetrace_probe_burn_rate", "gauge", "Error-budget burn rate over the long window.",
             [({"probe": n, "window": name}, rate) for n, p in probes.items()
              for name, rate in p.sla.burn_rates.items()])
    w.metric("pulsetrace_probe_burn_alert", "gauge", "1 when the multi-window burn-rate alert fires.",
             [({"probe": n, "window": name}, a.firing) for n, p in probes.items()
              for name, a in p.sla.burn_alerts.items()])
    w.metric("pulsetrace_probe_revenue_at_risk", "gauge", "Revenue at risk in the current incident.",
             [({"probe": n}, p.impact.revenue_at_risk) for n, p in probes.items()])
    w.metric("pulsetrace_probe_users_affected", "gauge", "Users affected while the probe is not UP.",
             [({"probe": n}, p.impact.users_affected) for n, p in probes.items()])
    w.metric("pulsetrace_probe_measurement", "gauge", "Numeric measurements of the last check.",
             [({"probe": n, "name": k}, v) for n, p in probes.items()
              for k, v in p.measurements.items() if not isinstance(v, (str, list))])
    for key, help_text in (("checks", "Checks run."), ("timeouts", "Checks that hit the hard timeout."),
                           ("transitions", "Reported status changes.")):
        w.metric(f"pulsetrace_probe_{key}_total", "counter", help_text,
                 [({"probe": n}, c.get(key, 0)) for n, c in (counters or {}).items()])
    if metrics is not None:
        _self_metrics(w, metrics)
    return "\n".join(w.lines) + "\n"


def _self_metrics(w: _Writer, metrics: SelfMetrics) -> None:
    by_name: dict[str, list[tuple[dict[str, object], float]]] = {}
    for (name, reason), value in sorted(metrics.counters().items()):
        by_name.setdefault(name, []).append(({"reason": reason} if reason else {}, value))
    for name, samples in by_name.items():
        w.metric(f"pulsetrace_agent_{_NAME_RE.sub('_', name)}_total", "counter", f"Agent counter {name}.", samples)
    for name, value in sorted(metrics.gauges().items()):
        w.metric(f"pulsetrace_agent_{_NAME_RE.sub('_', name)}", "gauge", f"Agent gauge {name}.", [({}, value)])
