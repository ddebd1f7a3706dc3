"""Alarms and dashboards as code for what this configuration emits.

:func:`build_plan` derives, from the configuration alone, one :class:`Plan`:

- SNS topics per alert tier: ``critical`` (pages), ``warning`` (tickets), ``business``;
- per probe with an SLA target: an availability alarm (30-day ``Availability`` below
  the target → warning) and multi-window burn-rate alarms as the SRE workbook gives
  them, as composite alarms over child metric alarms: fast burn (1 h and 5 m above
  14.4×) pages, slow burn (6 h and 30 m above 6×, or 3 d and 6 h above 1×) opens a
  ticket. The 1 h / 6 h / 3 d burn rates are the SLA tracker's ``BurnRate``; the short
  windows (5 m, 30 m), which the tracker does not report, are metric math on
  ``ProbeUp``: ``(1 - AVG(ProbeUp)) / (1 - target)``;
- a service alarm when ``HealthStatus`` says DOWN (critical);
- per business operation in ``failure_alarms``: failure rate
  ``100 × (Errors + Faults) / Requests`` over 5 minutes above its threshold, once the
  period has at least ``failure_min_requests`` requests (business);
- one dashboard for the service: overview (health status, revenue at risk, error
  budget remaining), operations (requests, errors, faults, p99 per operation: every
  operation through SEARCH, plus one graph per configured business operation) and
  dependencies (probe latency, availability, status).

:func:`cloudformation` renders the plan as a CloudFormation template,
:func:`dashboard_body` as the ``put-dashboard`` body, and :func:`apply_plan` creates it
through the API (each call idempotent: the same names are overwritten in place).
Nothing here reads secrets: probe names and thresholds only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig

ALERT_TIERS: tuple[str, ...] = ("critical", "warning", "business")

#: (name, long window, short window, factor): the SRE workbook's multi-window burn-rate alerts.
FAST_BURN = ("fast-burn", "1h", "5m", 14.4)
SLOW_BURNS = (("6h", "30m", 6.0), ("3d", "6h", 1.0))
#: Windows whose burn rate the SLA tracker reports as ``BurnRate{Window}``.
TRACKER_BURN_WINDOWS = frozenset({"1h", "6h", "3d"})
_WINDOW_SECONDS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}
_REGION_TOKEN = "__PULSETRACE_REGION__"


def _name_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]+", "-", text).strip("-") or "x"


def _logical_id(prefix: str, name: str) -> str:
    camel = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)
    digest = hashlib.sha1(name.encode()).hexdigest()[:6].upper()
    return f"{prefix}{camel[:200]}{digest}"


@dataclass
class MetricAlarm:
    name: str
    description: str
    #: The topic tier notified, or ``None`` (a child of a composite alarm notifies no one itself).
    tier: str | None
    #: PutMetricAlarm parameters other than name, description and actions (same keys as CloudFormation).
    params: dict[str, Any]


@dataclass
class CompositeAlarm:
    name: str
    description: str
    tier: str
    rule: str
    children: list[str]


@dataclass
class Plan:
    namespace: str
    topics: dict[str, str] = field(default_factory=dict)
    metric_alarms: list[MetricAlarm] = field(default_factory=list)
    composite_alarms: list[CompositeAlarm] = field(default_factory=list)
    dashboard_name: str = ""
    #: The dashboard body with ``_REGION_TOKEN`` where the region goes.
    dashboard: dict[str, Any] = field(default_factory=dict)


def _dims(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Name": n, "Value": v} for n, v in pairs]


def _metric_stat(ns: str, name: str, dims: Sequence[tuple[str, str]], period: int, stat: str) -> dict[str, Any]:
    return {"Metric": {"Namespace": ns, "MetricName": name, "Dimensions": _dims(dims)}, "Period": period,
            "Stat": stat}


def _fmt(x: float) -> str:
    return f"{x:.10g}"


class _Builder:
    def __init__(self, cfg: Config) -> None:
        cw = cfg.metrics.cloudwatch
        self.cfg = cfg
        self.ns = cw.namespace
        self.service = cfg.service.name
        self.env = cfg.service.environment
        self.base = (("Service", self.service), ("Environment", self.env))
        self.stem = f"{_name_part(cw.alarm_prefix)}-{_name_part(self.service)}-{_name_part(self.env)}"
        self.plan = Plan(namespace=self.ns)

    def build(self) -> Plan:
        self.plan.topics = {tier: f"{self.stem}-{tier}" for tier in ALERT_TIERS}
        self._service_alarms()
        for probe in self.cfg.health.probes:
            self._probe_alarms(probe)
        for op, threshold in sorted(self.cfg.metrics.cloudwatch.failure_alarms.items()):
            self._failure_alarm(op, threshold)
        self.plan.dashboard_name = self.stem[:255]
        self.plan.dashboard = _dashboard(self.cfg, self.base, self.ns)
        return self.plan

    def _service_alarms(self) -> None:
        self.plan.metric_alarms.append(MetricAlarm(
            name=f"{self.stem}-health-down",
            description=f"{self.service} ({self.env}): a critical dependency is DOWN (HealthStatus = 2).",
            tier="critical",
            params={"Namespace": self.ns, "MetricName": "HealthStatus", "Dimensions": _dims(self.base),
                    "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 2,
                    "Threshold": 2, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "TreatMissingData": "missing"},
        ))

    def _probe_alarms(self, probe: ProbeConfig) -> None:
        pdims = self.base + (("Probe", probe.name),)
        pstem = f"{self.stem}-{_name_part(probe.name)}"
        target = float(probe.sla)
        self.plan.metric_alarms.append(MetricAlarm(
            name=f"{pstem}-availability",
            description=(f"{probe.name}: 30-day availability below its SLA target of {_fmt(target)} % "
                         f"({self.service}, {self.env})."),
            tier="warning",
            params={"Namespace": self.ns, "MetricName": "Availability",
                    "Dimensions": _dims(pdims + (("Window", "30d"),)), "Statistic": "Minimum", "Period": 300,
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
                name = f"{pstem}-burn-{window}-x{_fmt(factor)}"
                children[key] = name
                self.plan.metric_alarms.append(self._burn_child(name, probe.name, pdims, window, factor, budget))
            return children[key]

        fast = [child(FAST_BURN[1], FAST_BURN[3]), child(FAST_BURN[2], FAST_BURN[3])]
        self.plan.composite_alarms.append(CompositeAlarm(
            name=f"{pstem}-fast-burn",
            description=(f"{probe.name}: error budget burning at >= {_fmt(FAST_BURN[3])}x over 1 h and 5 m "
                         f"(2 % of a 30-day budget in an hour). Page."),
            tier="critical", rule=f'ALARM("{fast[0]}") AND ALARM("{fast[1]}")', children=fast))
        pairs = [(child(long_w, f), child(short_w, f)) for long_w, short_w, f in SLOW_BURNS]
        rule = " OR ".join(f'(ALARM("{a}") AND ALARM("{b}"))' for a, b in pairs)
        self.plan.composite_alarms.append(CompositeAlarm(
            name=f"{pstem}-slow-burn",
            description=(f"{probe.name}: error budget burning at >= 6x over 6 h and 30 m, or >= 1x over 3 d "
                         f"and 6 h. Ticket."),
            tier="warning", rule=rule, children=[c for p in pairs for c in p]))

    def _burn_child(self, name: str, probe: str, pdims: tuple[tuple[str, str], ...], window: str, factor: float,
                    budget: float) -> MetricAlarm:
        common = {"EvaluationPeriods": 1, "Threshold": factor, "ComparisonOperator": "GreaterThanThreshold",
                  "TreatMissingData": "notBreaching"}
        desc = f"{probe}: burn rate over {window} above {_fmt(factor)}x (part of a composite alarm)."
        if window in TRACKER_BURN_WINDOWS:
            return MetricAlarm(name, desc, None, {
                "Namespace": self.ns, "MetricName": "BurnRate", "Dimensions": _dims(pdims + (("Window", window),)),
                "Statistic": "Maximum", "Period": 300, **common})
        seconds = _WINDOW_SECONDS[window]
        return MetricAlarm(name, desc, None, {"Metrics": [
            {"Id": "up", "MetricStat": _metric_stat(self.ns, "ProbeUp", pdims, seconds, "Average"),
             "ReturnData": False},
            {"Id": "burn", "Expression": f"(1 - up) / {_fmt(budget)}", "Label": f"burn rate {window}",
             "ReturnData": True},
        ], **common})

    def _failure_alarm(self, op: str, threshold: float) -> None:
        odims = self.base + (("Operation", op),)
        min_req = self.cfg.metrics.cloudwatch.failure_min_requests
        self.plan.metric_alarms.append(MetricAlarm(
            name=f"{self.stem}-{_name_part(op)}-failure-rate",
            description=(f"{op}: more than {_fmt(threshold)} % of requests failed over 5 minutes "
                         f"(errors + faults, with at least {min_req} requests)."),
            tier="business",
            params={"Metrics": [
                {"Id": "req", "MetricStat": _metric_stat(self.ns, "Requests", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "err", "MetricStat": _metric_stat(self.ns, "Errors", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "flt", "MetricStat": _metric_stat(self.ns, "Faults", odims, 300, "Sum"), "ReturnData": False},
                {"Id": "rate", "Expression": f"IF(req >= {min_req}, 100 * (err + flt) / req, 0)",
                 "Label": f"{op} failure rate %", "ReturnData": True},
            ], "EvaluationPeriods": 1, "Threshold": threshold, "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching"},
        ))


def build_plan(cfg: Config) -> Plan:
    return _Builder(cfg).build()


# -- the dashboard ----------------------------------------------------------------------------------------------


def _widget(x: int, y: int, w: int, h: int, title: str, metrics: list[Any], *, stat: str = "Average",
            view: str = "timeSeries", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"title": title, "region": _REGION_TOKEN, "view": view, "stat": stat, "period": 60,
                             "metrics": metrics}
    if extra:
        props.update(extra)
    return {"type": "metric", "x": x, "y": y, "width": w, "height": h, "properties": props}


def _dashboard(cfg: Config, base: tuple[tuple[str, str], ...], ns: str) -> dict[str, Any]:
    service, env = cfg.service.name, cfg.service.environment
    probes = [p.name for p in cfg.health.probes]
    flat_base = [v for pair in base for v in pair]
    widgets: list[dict[str, Any]] = []
    y = 0

    def text(md: str) -> None:
        nonlocal y
        widgets.append({"type": "text", "x": 0, "y": y, "width": 24, "height": 1, "properties": {"markdown": md}})
        y += 1

    def search(metric: str, stat: str, ident: str, label: str) -> dict[str, Any]:
        query = (f"{{{ns},Environment,Operation,Service}} MetricName=\"{metric}\" "
                 f"Service=\"{service}\" Environment=\"{env}\"")
        return {"expression": f"SEARCH('{query}', '{stat}', 60)", "id": ident, "label": label}

    text(f"# {service} ({env}): overview")
    widgets.append(_widget(0, y, 8, 6, "Health status (0 UP, 1 DEGRADED, 2 DOWN)",
                           [[ns, "HealthStatus", *flat_base]], stat="Maximum",
                           extra={"yAxis": {"left": {"min": 0, "max": 2}}}))
    widgets.append(_widget(8, y, 8, 6, "Revenue at risk",
                           [[ns, "RevenueAtRisk", *flat_base, "Probe", p] for p in probes] or
                           [[ns, "RevenueAtRisk", *flat_base, "Probe", "none"]], stat="Maximum"))
    widgets.append(_widget(16, y, 8, 6, "Error budget remaining, 30 days (%)",
                           [[ns, "ErrorBudgetRemaining", *flat_base, "Probe", p, "Window", "30d"] for p in probes] or
                           [[ns, "ErrorBudgetRemaining", *flat_base, "Probe", "none", "Window", "30d"]],
                           stat="Minimum", extra={"yAxis": {"left": {"min": 0, "max": 100}}}))
    y += 6
    text("## Operations")
    widgets.append(_widget(0, y, 8, 6, "Requests by operation", [[search("Requests", "Sum", "r", "")]], stat="Sum"))
    widgets.append(_widget(8, y, 8, 6, "Errors and faults by operation",
                           [[search("Errors", "Sum", "e", "errors")], [search("Faults", "Sum", "f", "faults")]],
                           stat="Sum"))
    widgets.append(_widget(16, y, 8, 6, "Latency p99 by operation (ms)", [[search("Latency", "p99", "l", "")]],
                           stat="p99"))
    y += 6
    for i, op in enumerate(cfg.metrics.cloudwatch.operations):
        od = [*flat_base, "Operation", op]
        widgets.append(_widget((i % 3) * 8, y + (i // 3) * 6, 8, 6, op, [
            [ns, "Requests", *od, {"stat": "Sum"}],
            [ns, "Errors", *od, {"stat": "Sum"}],
            [ns, "Faults", *od, {"stat": "Sum"}],
            [ns, "Latency", *od, {"stat": "p50", "yAxis": "right"}],
            [ns, "Latency", *od, {"stat": "p99", "yAxis": "right"}],
        ], stat="Sum"))
    y += ((len(cfg.metrics.cloudwatch.operations) + 2) // 3) * 6
    text("## Dependencies")
    if probes:
        widgets.append(_widget(0, y, 8, 6, "Probe latency p99 (ms)",
                               [[ns, "ProbeLatency", *flat_base, "Probe", p] for p in probes], stat="p99"))
        widgets.append(_widget(8, y, 8, 6, "Availability, 1 hour (%)",
                               [[ns, "Availability", *flat_base, "Probe", p, "Window", "1h"] for p in probes],
                               stat="Minimum"))
        widgets.append(_widget(16, y, 8, 6, "Probe status (0 UP, 1 DEGRADED, 2 DOWN)",
                               [[ns, "ProbeStatus", *flat_base, "Probe", p] for p in probes], stat="Maximum"))
    else:
        widgets.append({"type": "text", "x": 0, "y": y, "width": 24, "height": 2,
                        "properties": {"markdown": "No probes are configured (`health.probes`)."}})
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


def dashboard_body(plan: Plan, region: str) -> str:
    """The ``put-dashboard`` body for ``region``."""
    return json.dumps(plan.dashboard, separators=(",", ":")).replace(_REGION_TOKEN, region)


# -- CloudFormation ---------------------------------------------------------------------------------------------


def cloudformation(plan: Plan, description: str = "") -> dict[str, Any]:
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    topic_ids: dict[str, str] = {}
    for tier, name in plan.topics.items():
        lid = f"Topic{tier.capitalize()}"
        topic_ids[tier] = lid
        resources[lid] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": name}}
        outputs[f"{lid}Arn"] = {"Description": f"SNS topic for {tier} alerts: subscribe your pager / e-mail here.",
                                "Value": {"Ref": lid}}
    alarm_ids: dict[str, str] = {}
    for alarm in plan.metric_alarms:
        lid = _logical_id("Alarm", alarm.name)
        alarm_ids[alarm.name] = lid
        props: dict[str, Any] = {"AlarmName": alarm.name, "AlarmDescription": alarm.description, **alarm.params}
        if alarm.tier is not None:
            props["AlarmActions"] = [{"Ref": topic_ids[alarm.tier]}]
            props["OKActions"] = [{"Ref": topic_ids[alarm.tier]}]
        resources[lid] = {"Type": "AWS::CloudWatch::Alarm", "Properties": props}
    for comp in plan.composite_alarms:
        lid = _logical_id("Composite", comp.name)
        resources[lid] = {
            "Type": "AWS::CloudWatch::CompositeAlarm",
            "DependsOn": sorted({alarm_ids[c] for c in comp.children}),
            "Properties": {"AlarmName": comp.name, "AlarmDescription": comp.description, "AlarmRule": comp.rule,
                           "AlarmActions": [{"Ref": topic_ids[comp.tier]}],
                           "OKActions": [{"Ref": topic_ids[comp.tier]}]},
        }
    # ${...} in the body would be read by Fn::Sub: escape any, then put the region in.
    body = json.dumps(plan.dashboard, separators=(",", ":")).replace("${", "${!")
    resources["Dashboard"] = {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
        "DashboardName": plan.dashboard_name,
        "DashboardBody": {"Fn::Sub": body.replace(_REGION_TOKEN, "${AWS::Region}")},
    }}
    outputs["DashboardName"] = {"Value": {"Ref": "Dashboard"}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description or f"pulsetrace alarms and dashboard for namespace {plan.namespace}",
        "Resources": resources,
        "Outputs": outputs,
    }


# -- apply through the API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    ok: bool
    error: str = ""


def _error_text(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error") or {}
        code = err.get("Code") or ""
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code and not str(code).isdigit():
            return str(code)
        if status:
            return f"HTTP {status}"
    return type(exc).__name__


def apply_plan(plan: Plan, cloudwatch: Any, sns: Any, region: str, *, composite: bool = True) -> list[Applied]:
    """Create or update every resource of ``plan`` (idempotent); one :class:`Applied` per resource."""
    results: list[Applied] = []
    arns: dict[str, str] = {}
    for tier, name in plan.topics.items():
        try:
            arns[tier] = str(sns.create_topic(Name=name)["TopicArn"])  # create_topic returns the existing one
            results.append(Applied("topic", name, True))
        except Exception as exc:
            results.append(Applied("topic", name, False, _error_text(exc)))
    for alarm in plan.metric_alarms:
        params: dict[str, Any] = {"AlarmName": alarm.name, "AlarmDescription": alarm.description, **alarm.params}
        if alarm.tier is not None and alarm.tier in arns:
            params["AlarmActions"] = [arns[alarm.tier]]
            params["OKActions"] = [arns[alarm.tier]]
        try:
            cloudwatch.put_metric_alarm(**params)
            results.append(Applied("alarm", alarm.name, True))
        except Exception as exc:
            results.append(Applied("alarm", alarm.name, False, _error_text(exc)))
    if composite:
        for comp in plan.composite_alarms:
            actions = [arns[comp.tier]] if comp.tier in arns else []
            try:
                cloudwatch.put_composite_alarm(AlarmName=comp.name, AlarmDescription=comp.description,
                                               AlarmRule=comp.rule, AlarmActions=actions, OKActions=actions)
                results.append(Applied("composite-alarm", comp.name, True))
            except Exception as exc:
                results.append(Applied("composite-alarm", comp.name, False, _error_text(exc)))
    try:
        cloudwatch.put_dashboard(DashboardName=plan.dashboard_name, DashboardBody=dashboard_body(plan, region))
        results.append(Applied("dashboard", plan.dashboard_name, True))
    except Exception as exc:
        results.append(Applied("dashboard", plan.dashboard_name, False, _error_text(exc)))
    return results
