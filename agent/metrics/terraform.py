"""The plan as Terraform JSON (``pulsetrace cloudwatch render --format terraform`` → ``*.tf.json``).

The same SNS topics, metric alarms, composite alarms and dashboards as the CloudFormation
template, as resources of the ``hashicorp/aws`` provider in Terraform's JSON syntax:
``aws_sns_topic``, ``aws_cloudwatch_metric_alarm`` (metric math as ``metric_query`` blocks),
``aws_cloudwatch_composite_alarm`` (``depends_on`` its children, as CloudFormation's
``DependsOn``) and ``aws_cloudwatch_dashboard`` (the region from ``data.aws_region.current``).
Strings in Terraform JSON are templates, so a literal ``${`` or ``%{`` is escaped (``$${``,
``%%{``). Resource names are the template's logical ids. No I/O.
"""

from __future__ import annotations

import json
from typing import Any

from pulsetrace.metrics.plan import REGION_TOKEN, Plan, logical_id

PROVIDER_VERSION = ">= 5.0, < 7.0"

#: PutMetricAlarm / CloudFormation keys → aws_cloudwatch_metric_alarm arguments.
_ALARM_KEYS = {
    "Namespace": "namespace", "MetricName": "metric_name", "Statistic": "statistic",
    "ExtendedStatistic": "extended_statistic", "Period": "period", "EvaluationPeriods": "evaluation_periods",
    "DatapointsToAlarm": "datapoints_to_alarm", "Threshold": "threshold", "ComparisonOperator": "comparison_operator",
    "TreatMissingData": "treat_missing_data", "Unit": "unit",
}


def _escape(text: str) -> str:
    return text.replace("${", "$${").replace("%{", "%%{")


def _dims(dimensions: list[dict[str, str]]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in dimensions}


def _query(q: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": q["Id"], "return_data": bool(q.get("ReturnData", False))}
    if "Expression" in q:
        out["expression"] = _escape(q["Expression"])
    if "Label" in q:
        out["label"] = _escape(q["Label"])
    stat = q.get("MetricStat")
    if stat is not None:
        metric = stat["Metric"]
        out["metric"] = [{"namespace": metric["Namespace"], "metric_name": metric["MetricName"],
                          "dimensions": _dims(metric["Dimensions"]), "period": stat["Period"], "stat": stat["Stat"]}]
    return out


def terraform(plan: Plan) -> dict[str, Any]:
    """The Terraform JSON document for ``plan``."""
    topics: dict[str, Any] = {}
    topic_ref: dict[str, str] = {}
    for tier, name in plan.topics.items():
        topics[tier] = {"name": name}
        topic_ref[tier] = f"${{aws_sns_topic.{tier}.arn}}"
    alarms: dict[str, Any] = {}
    ids: dict[str, str] = {}
    for alarm in plan.metric_alarms:
        lid = ids[alarm.name] = logical_id("Alarm", alarm.name)
        body: dict[str, Any] = {"alarm_name": _escape(alarm.name), "alarm_description": _escape(alarm.description)}
        for key, value in alarm.params.items():
            if key == "Dimensions":
                body["dimensions"] = _dims(value)
            elif key == "Metrics":
                body["metric_query"] = [_query(q) for q in value]
            else:
                body[_ALARM_KEYS[key]] = value
        if alarm.tier is not None:
            body["alarm_actions"] = [topic_ref[alarm.tier]]
            body["ok_actions"] = [topic_ref[alarm.tier]]
        alarms[lid] = body
    composites: dict[str, Any] = {}
    kinds = {name: "aws_cloudwatch_metric_alarm" for name in ids}
    for comp in plan.composite_alarms:
        ids[comp.name] = logical_id("Composite", comp.name)
        kinds[comp.name] = "aws_cloudwatch_composite_alarm"
    for comp in plan.composite_alarms:
        composites[ids[comp.name]] = {
            "alarm_name": _escape(comp.name), "alarm_description": _escape(comp.description),
            "alarm_rule": _escape(comp.rule), "alarm_actions": [topic_ref[comp.tier]],
            "ok_actions": [topic_ref[comp.tier]],
            "depends_on": sorted({f"{kinds[c]}.{ids[c]}" for c in comp.children}),
        }
    dashboards: dict[str, Any] = {}
    for i, board in enumerate(plan.dashboards):
        lid = "Dashboard" if i == 0 else logical_id("Dashboard", board.name.removeprefix(plan.dashboard_name))
        body_text = _escape(json.dumps(board.body, separators=(",", ":")))
        dashboards[lid] = {"dashboard_name": board.name,
                           "dashboard_body": body_text.replace(REGION_TOKEN, "${data.aws_region.current.name}")}
    resource: dict[str, Any] = {"aws_sns_topic": topics}
    if alarms:
        resource["aws_cloudwatch_metric_alarm"] = alarms
    if composites:
        resource["aws_cloudwatch_composite_alarm"] = composites
    resource["aws_cloudwatch_dashboard"] = dashboards
    return {
        "//": f"pulsetrace alarms and dashboards for namespace {plan.namespace} (generated; edit the configuration)",
        "terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": PROVIDER_VERSION}}},
        "data": {"aws_region": {"current": {}}},
        "resource": resource,
        "output": {**{f"topic_{tier}_arn": {"value": ref, "description": f"SNS topic for {tier} alerts"}
                      for tier, ref in topic_ref.items()},
                   "dashboards": {"value": [d.name for d in plan.dashboards]}},
    }
