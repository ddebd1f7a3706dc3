"""Alarms on the metrics the agent emits, from the configuration alone.

- per probe with an SLA target: an availability alarm (30-day ``Availability`` below the
  target → warning) and multi-window burn-rate alarms as the SRE workbook gives them, as
  composite alarms over child metric alarms: fast burn (1 h and 5 m above 14.4×) pages,
  slow burn (6 h and 30 m above 6×, or 3 d and 6 h above 1×) opens a ticket. The 1 h /
  6 h / 3 d burn rates are the SLA tracker's ``BurnRate``; the short windows (5 m, 30 m)
  are metric math on ``ProbeUp``: ``(1 - AVG(ProbeUp)) / (1 - target)``;
- for the service: ``HealthStatus`` DOWN (critical); ``HealthScore`` below
  ``health_score_alarm`` (critical); the fault rate ``100 × Faults / Requests`` over 5
  minutes above ``fault_rate_alarm`` (critical) and more than ``fault_count_alarm`` faults
  in 5 minutes (warning), both on the service-wide series;
- per operation: ``failure_alarms`` (failure rate ``100 × (Errors + Faults) / Requests``
  over 5 minutes once the period has ``failure_min_requests`` requests, business),
  ``latency_alarms`` (``Latency`` at ``latency_percentile`` above the milliseconds given,
  ``datapoints_to_alarm`` of ``evaluation_periods`` periods of ``alarm_period``, warning)
  and ``error_count_alarms`` (errors + faults in 5 minutes above the count, business);
- composites: one per business area (``areas``, or the first word of the alarmed business
  operations with the probes named like it: ``payment.create`` and probe ``payments`` →
  "payment system") and one system-wide alarm over every critical alarm.

Every alarm's namespace, metric, dimensions and statistic are those the agent emits
(:mod:`~pulsetrace.metrics.request_metrics`, :mod:`~pulsetrace.metrics.health_metrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulsetrace.metrics.plan import CompositeAlarm, MetricAlarm, Plan, dims, fmt, metric_stat, name_part

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig

#: (name, long window, short window, factor): the SRE workbook's multi-window burn-rate alerts.
FAST_BURN = ("fast-burn", "1h", "5m", 14.4)
SLOW_BURNS = (("6h", "30m", 6.0), ("3d", "6h", 1.0))
#: Windows whose burn rate the SLA tracker reports as ``BurnRate{Window}``.
TRACKER_BURN_WINDOWS = frozenset({"1h", "6h", "3d"})
_WINDOW_SECONDS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}
#: AlarmRule's limit; a longer rule is cut to the alarms that fit (the most severe first).
MAX_RULE = 10_240


class AlarmBuilder:
    def __init__(self, cfg: Config, plan: Plan, stem: str) -> None:
        cw = cfg.metrics.cloudwatch
        self.cfg = cfg
        self.cw = cw
        self.ns = cw.namespace
        self.service = cfg.service.name
        self.env = cfg.service.environment
        self.base = (("Service", self.service), ("Environment", self.env))
        self.stem = stem
        self.plan = plan

    def build(self) -> None:
        self._service_alarms()
        for probe in self.cfg.health.probes:
            self._probe_alarms(probe)
        for op, threshold in sorted(self.cw.failure_alarms.items()):
            self._failure_alarm(op, threshold)
        for op, ms in sorted(self.cw.latency_alarms.items()):
            self._latency_alarm(op, ms)
        for op, n in sorted(self.cw.error_count_alarms.items()):
            self._error_count_alarm(op, n)

    def _add(self, alarm: MetricAlarm) -> None:
        self.plan.metric_alarms.append(alarm)

    # -- the service ------------------------------------------------------------------------------------------

    def _service_alarms(self) -> None:
        svc = f"{self.service} ({self.env})"
        self._add(MetricAlarm(
            name=f"{self.stem}-health-down",
            description=f"{svc}: a critical dependency is DOWN (HealthStatus = 2).",
            tier="critical", subject="service",
            params={"Namespace": self.ns, "MetricName": "HealthStatus", "Dimensions": dims(self.base),
                    "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 2,
                    "Threshold": 2, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "TreatMissingData": "missing"},
        ))
        if self.cw.health_score_alarm > 0 and self.cfg.health.probes:
            self._add(MetricAlarm(
                name=f"{self.stem}-health-score",
                description=(f"{svc}: HealthScore below {fmt(self.cw.health_score_alarm)} (0-100, weighted by "
                             f"probe criticality and SLA compliance)."),
                tier="critical", subject="service",
                params={"Namespace": self.ns, "MetricName": "HealthScore", "Dimensions": dims(self.base),
                        "Statistic": "Minimum", "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 2,
                        "Threshold": self.cw.health_score_alarm, "ComparisonOperator": "LessThanThreshold",
                        "TreatMissingData": "missing"},
            ))
        min_req = self.cw.failure_min_requests
        if self.cw.fault_rate_alarm > 0:
            self._add(MetricAlarm(
                name=f"{self.stem}-fault-rate",
                description=(f"{svc}: more than {fmt(self.cw.fault_rate_alarm)} % of all requests were faults "
                             f"(5xx, exceptions) over 5 minutes, with at least {min_req} requests."),
                tier="critical", subject="service",
                params={"Metrics": [
                    {"Id": "req", "MetricStat": metric_stat(self.ns, "Requests", self.base, 300, "Sum"),
                     "ReturnData": False},
                    {"Id": "flt", "MetricStat": metric_stat(self.ns, "Faults", self.base, 300, "Sum"),
                     "ReturnData": False},
                    {"Id": "rate", "Expression": f"IF(req >= {min_req}, 100 * flt / req, 0)",
                     "Label": "fault rate %", "ReturnData": True},
                ], "EvaluationPeriods": 1, "Threshold": self.cw.fault_rate_alarm,
                    "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching"},
            ))
        if self.cw.fault_count_alarm > 0:
            self._add(MetricAlarm(
                name=f"{self.stem}-fault-count",
                description=f"{svc}: more than {self.cw.fault_count_alarm} faults (5xx, exceptions) in 5 minutes.",
                tier="warning", subject="service",
                params={"Namespace": self.ns, "MetricName": "Faults", "Dimensions": dims(self.base),
                        "Statistic": "Sum", "Period": 300, "EvaluationPeriods": 1,
                        "Threshold": self.cw.fault_count_alarm, "ComparisonOperator": "GreaterThanThreshold",
                        "TreatMissingData": "notBreaching"},
            ))

    # -- probes -----------------------------------------------------------------------------------------------

    def _probe_alarms(self, probe: ProbeConfig) -> None:
        pdims = (*self.base, ("Probe", probe.name))
        pstem = f"{self.stem}-{name_part(probe.name)}"
        target = float(probe.sla)
        self._add(MetricAlarm(
            name=f"{pstem}-availability",
            description=(f"{probe.name}: 30-day availability below its SLA target of {fmt(target)} % "
                         f"({self.service}, {self.env})."),
            tier="warning", subject=probe.name,
            params={"Namespace": self.ns, "MetricName": "Availability",
                    "Dimensions": dims((*pdims, ("Window", "30d"))), "Statistic": "Minimum", "Period": 300,
                    "EvaluationPeriods": 1, "Threshold": target, "ComparisonOperator": "LessThanThreshold",
                    "TreatMissingData": "missing"},
        ))
        budget = 1.0 - target / 100.0
        if budget <= 0:
            return  # a 100 % target has no error budget to burn
        children: dict[tuple[str, float], str] = {}

        def child(window: str, factor: float) -> str:
            key = (window, factor)
            if key not in children:
                name = f"{pstem}-burn-{window}-x{fmt(factor)}"
                children[key] = name
                self._add(self._burn_child(name, probe.name, pdims, window, factor, budget))
            return children[key]

        fast = [child(FAST_BURN[1], FAST_BURN[3]), child(FAST_BURN[2], FAST_BURN[3])]
        self.plan.composite_alarms.append(CompositeAlarm(
            name=f"{pstem}-fast-burn",
            description=(f"{probe.name}: error budget burning at >= {fmt(FAST_BURN[3])}x over 1 h and 5 m "
                         f"(2 % of a 30-day budget in an hour). Page."),
            tier="critical", rule=f'ALARM("{fast[0]}") AND ALARM("{fast[1]}")', children=fast, subject=probe.name))
        pairs = [(child(long_w, f), child(short_w, f)) for long_w, short_w, f in SLOW_BURNS]
        rule = " OR ".join(f'(ALARM("{a}") AND ALARM("{b}"))' for a, b in pairs)
        self.plan.composite_alarms.append(CompositeAlarm(
            name=f"{pstem}-slow-burn",
            description=(f"{probe.name}: error budget burning at >= 6x over 6 h and 30 m, or >= 1x over 3 d "
                         f"and 6 h. Ticket."),
            tier="warning", rule=rule, children=[c for p in pairs for c in p], subject=probe.name))

    def _burn_child(self, name: str, probe: str, pdims: tuple[tuple[str, str], ...], window: str, factor: float,
                    budget: float) -> MetricAlarm:
        common = {"EvaluationPeriods": 1, "Threshold": factor, "ComparisonOperator": "GreaterThanThreshold",
                  "TreatMissingData": "notBreaching"}
        desc = f"{probe}: burn rate over {window} above {fmt(factor)}x (part of a composite alarm)."
        if window in TRACKER_BURN_WINDOWS:
            return MetricAlarm(name, desc, None, {
                "Namespace": self.ns, "MetricName": "BurnRate", "Dimensions": dims((*pdims, ("Window", window))),
                "Statistic": "Maximum", "Period": 300, **common}, subject=probe)
        seconds = _WINDOW_SECONDS[window]
        return MetricAlarm(name, desc, None, {"Metrics": [
            {"Id": "up", "MetricStat": metric_stat(self.ns, "ProbeUp", pdims, seconds, "Average"),
             "ReturnData": False},
            {"Id": "burn", "Expression": f"(1 - up) / {fmt(budget)}", "Label": f"burn rate {window}",
             "ReturnData": True},
        ], **common}, subject=probe)

    # -- operations -------------------------------------------------------------------------------------------

    def _failure_alarm(self, op: str, threshold: float) -> None:
        odims = (*self.base, ("Operation", op))
        min_req = self.cw.failure_min_requests
        self._add(MetricAlarm(
            name=f"{self.stem}-{name_part(op)}-failure-rate",
            description=(f"{op}: more than {fmt(threshold)} % of requests failed over 5 minutes "
                         f"(errors + faults, with at least {min_req} requests)."),
            tier="business", subject=op,
            params={"Metrics": [
                {"Id": "req", "MetricStat": metric_stat(self.ns, "Requests", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "err", "MetricStat": metric_stat(self.ns, "Errors", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "flt", "MetricStat": metric_stat(self.ns, "Faults", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "rate", "Expression": f"IF(req >= {min_req}, 100 * (err + flt) / req, 0)",
                 "Label": f"{op} failure rate %", "ReturnData": True},
            ], "EvaluationPeriods": 1, "Threshold": threshold, "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching"},
        ))

    def _latency_alarm(self, op: str, ms: float) -> None:
        cw = self.cw
        periods = cw.evaluation_periods
        self._add(MetricAlarm(
            name=f"{self.stem}-{name_part(op)}-latency",
            description=(f"{op}: {cw.latency_percentile} latency above {fmt(ms)} ms in "
                         f"{min(cw.datapoints_to_alarm, periods)} of {periods} periods of {fmt(cw.alarm_period)} s."),
            tier="warning", subject=op,
            params={"Namespace": self.ns, "MetricName": "Latency", "Dimensions": dims((*self.base, ("Operation", op))),
                    "ExtendedStatistic": cw.latency_percentile, "Period": int(cw.alarm_period),
                    "EvaluationPeriods": periods, "DatapointsToAlarm": min(cw.datapoints_to_alarm, periods),
                    "Threshold": ms, "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
                    "Unit": "Milliseconds"},
        ))

    def _error_count_alarm(self, op: str, n: int) -> None:
        odims = (*self.base, ("Operation", op))
        self._add(MetricAlarm(
            name=f"{self.stem}-{name_part(op)}-error-count",
            description=f"{op}: more than {n} failed requests (errors + faults) in 5 minutes.",
            tier="business", subject=op,
            params={"Metrics": [
                {"Id": "err", "MetricStat": metric_stat(self.ns, "Errors", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "flt", "MetricStat": metric_stat(self.ns, "Faults", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "failed", "Expression": "FILL(err, 0) + FILL(flt, 0)", "Label": f"{op} failures",
                 "ReturnData": True},
            ], "EvaluationPeriods": 1, "Threshold": n, "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching"},
        ))


# -- composites ---------------------------------------------------------------------------------------------------


def areas(cfg: Config) -> dict[str, list[str]]:
    """Business area → the probes and operations in it (configured, or found from the alarmed operations)."""
    cw = cfg.metrics.cloudwatch
    if cw.areas:
        return {area: list(members) for area, members in sorted(cw.areas.items())}
    found: dict[str, list[str]] = {}
    for op in sorted({*cw.failure_alarms, *cw.latency_alarms, *cw.error_count_alarms}):
        if " " in op or "." not in op:
            continue  # a route (``POST /payments``) names no area; a business operation's first word does
        found.setdefault(op.split(".", 1)[0], []).append(op)
    for area, members in found.items():
        members.extend(p.name for p in cfg.health.probes if p.name.lower().startswith(area.lower()))
    return found


def _rule(names: list[str]) -> tuple[str, list[str]]:
    kept: list[str] = []
    for name in names:
        if len(" OR ".join(f'ALARM("{n}")' for n in [*kept, name])) > MAX_RULE:
            break
        kept.append(name)
    return " OR ".join(f'ALARM("{n}")' for n in kept), kept


def add_composites(cfg: Config, plan: Plan, stem: str) -> None:
    """One composite per business area and one system-wide, over the alarms already in ``plan``."""
    svc = f"{cfg.service.name} ({cfg.service.environment})"
    # Alarms that notify (not the burn-rate children, which speak through their composites).
    tops = [(a.name, a.subject, a.tier) for a in plan.metric_alarms if a.tier is not None]
    tops += [(c.name, c.subject, c.tier) for c in plan.composite_alarms]
    for area, members in areas(cfg).items():
        wanted = set(members)
        names = [name for name, subject, _ in tops if subject in wanted]
        if not names:
            continue
        rule, kept = _rule(names)
        tiers = {tier for name, _, tier in tops if name in kept}
        plan.composite_alarms.append(CompositeAlarm(
            name=f"{stem}-area-{name_part(area)}",
            description=(f"{svc}: the {area} system is unhealthy (any alarm of "
                         f"{', '.join(sorted(wanted))})."),
            # as severe as its most severe member: a latency warning must not page through the area
            tier=next(t for t in ("critical", "warning", "business") if t in tiers), rule=rule, children=kept,
            subject=area))
    critical = [name for name, _, tier in tops if tier == "critical"]
    if critical:
        rule, kept = _rule(critical)
        plan.composite_alarms.append(CompositeAlarm(
            name=f"{stem}-system",
            description=f"{svc}: system-wide health: any critical alarm of the service is in ALARM.",
            tier="critical", rule=rule, children=kept, subject="service"))
