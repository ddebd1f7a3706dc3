"""Alarms and dashboards as code for what this configuration emits: the plan and how it is deployed.

:func:`build_plan` derives, from the configuration alone, one :class:`Plan`
(:mod:`~pulsetrace.metrics.plan`): SNS topics per alert tier (``critical`` pages,
``warning`` tickets, ``business``), the alarms on the agent's own metrics and their
composites (:mod:`~pulsetrace.metrics.alarms`), the alarms on the AWS resources around the
service (:mod:`~pulsetrace.metrics.resources`) and three dashboards
(:mod:`~pulsetrace.metrics.dashboards`). Every alarm's description ends with its runbook
link when one is configured (``runbooks`` by alarm, probe, operation or area name, else
``runbook_url`` with ``{alarm}`` replaced).

:func:`cloudformation` renders the plan as a CloudFormation template,
:func:`dashboard_body` as a ``put-dashboard`` body, :func:`pulsetrace.metrics.terraform.terraform`
as Terraform JSON, and :func:`apply_plan` creates it through the API (each call idempotent:
the same names are overwritten in place). Nothing here reads secrets: names and thresholds only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pulsetrace.metrics.alarms import AlarmBuilder, add_composites
from pulsetrace.metrics.dashboards import build_dashboards
from pulsetrace.metrics.plan import (
    ALERT_TIERS,
    MAX_DESCRIPTION,
    REGION_TOKEN,
    CompositeAlarm,
    Dashboard,
    MetricAlarm,
    Plan,
    logical_id,
    name_part,
)
from pulsetrace.metrics.resources import resource_alarms

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

__all__ = ["ALERT_TIERS", "Applied", "CompositeAlarm", "Dashboard", "MetricAlarm", "Plan", "apply_plan",
           "build_plan", "cloudformation", "dashboard_body"]


def stem_of(cfg: Config) -> str:
    """The prefix of every alarm, dashboard and topic name: ``<alarm_prefix>-<service>-<environment>``."""
    return f"{name_part(cfg.metrics.cloudwatch.alarm_prefix)}-{name_part(cfg.service.name)}-" \
           f"{name_part(cfg.service.environment)}"


def runbook_for(cfg: Config, alarm: str, subject: str) -> str:
    cw = cfg.metrics.cloudwatch
    found = cw.runbooks.get(alarm) or (cw.runbooks.get(subject) if subject else None)
    if found:
        return found
    return cw.runbook_url.replace("{alarm}", alarm) if cw.runbook_url else ""


def with_runbook(description: str, url: str) -> str:
    if not url:
        return description[:MAX_DESCRIPTION]
    suffix = f" Runbook: {url}"
    return description[:max(0, MAX_DESCRIPTION - len(suffix))] + suffix


def build_plan(cfg: Config) -> Plan:
    stem = stem_of(cfg)
    plan = Plan(namespace=cfg.metrics.cloudwatch.namespace)
    plan.topics = {tier: f"{stem}-{tier}" for tier in ALERT_TIERS}
    AlarmBuilder(cfg, plan, stem).build()
    plan.metric_alarms.extend(resource_alarms(cfg.metrics.aws_resources, stem))
    add_composites(cfg, plan, stem)
    alarms: list[MetricAlarm | CompositeAlarm] = [*plan.metric_alarms, *plan.composite_alarms]
    for alarm in alarms:
        alarm.description = with_runbook(alarm.description, runbook_for(cfg, alarm.name, alarm.subject))
    plan.dashboards = build_dashboards(cfg, stem)
    return plan


def dashboard_body(plan: Plan, region: str, name: str | None = None) -> str:
    """The ``put-dashboard`` body of the dashboard ``name`` (default: the service dashboard) for ``region``."""
    board = next((d for d in plan.dashboards if d.name == name), None) if name else None
    body = board.body if board is not None else plan.dashboard
    return json.dumps(body, separators=(",", ":")).replace(REGION_TOKEN, region)


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
        lid = logical_id("Alarm", alarm.name)
        alarm_ids[alarm.name] = lid
        props: dict[str, Any] = {"AlarmName": alarm.name, "AlarmDescription": alarm.description, **alarm.params}
        if alarm.tier is not None:
            props["AlarmActions"] = [{"Ref": topic_ids[alarm.tier]}]
            props["OKActions"] = [{"Ref": topic_ids[alarm.tier]}]
        resources[lid] = {"Type": "AWS::CloudWatch::Alarm", "Properties": props}
    for comp in plan.composite_alarms:
        alarm_ids[comp.name] = logical_id("Composite", comp.name)
    for comp in plan.composite_alarms:
        lid = alarm_ids[comp.name]
        resources[lid] = {
            "Type": "AWS::CloudWatch::CompositeAlarm",
            "DependsOn": sorted({alarm_ids[c] for c in comp.children}),
            "Properties": {"AlarmName": comp.name, "AlarmDescription": comp.description, "AlarmRule": comp.rule,
                           "AlarmActions": [{"Ref": topic_ids[comp.tier]}],
                           "OKActions": [{"Ref": topic_ids[comp.tier]}]},
        }
    for i, board in enumerate(plan.dashboards):
        # ${...} in the body would be read by Fn::Sub: escape any, then put the region in.
        body = json.dumps(board.body, separators=(",", ":")).replace("${", "${!")
        lid = "Dashboard" if i == 0 else logical_id("Dashboard", board.name.removeprefix(plan.dashboard_name))
        resources[lid] = {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
            "DashboardName": board.name,
            "DashboardBody": {"Fn::Sub": body.replace(REGION_TOKEN, "${AWS::Region}")},
        }}
        outputs[f"{lid}Name"] = {"Value": {"Ref": lid}}
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
    for board in plan.dashboards:
        try:
            cloudwatch.put_dashboard(DashboardName=board.name, DashboardBody=dashboard_body(plan, region, board.name))
            results.append(Applied("dashboard", board.name, True))
        except Exception as exc:
            results.append(Applied("dashboard", board.name, False, _error_text(exc)))
    return results
