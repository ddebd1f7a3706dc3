"""Alarms from configuration (latency, service-wide faults, error counts, health score, business areas, the
system, runbooks), the AWS resources around the service, three dashboards, and the Terraform rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulsetrace.cli.main import main
from pulsetrace.config.schema import Config
from pulsetrace.healthchecks.score import health_score
from pulsetrace.healthchecks.snapshot import snapshot_from_dict
from pulsetrace.metrics.render import build_plan, cloudformation
from pulsetrace.metrics.terraform import terraform
from pulsetrace.validation import config_from_mapping

#: A configuration that uses every alarm, dashboard and resource key.
EVERY_KEY: dict[str, Any] = {
    "service": {"name": "shop-api", "environment": "prod"},
    "health": {"probes": [
        {"name": "db", "type": "postgres", "dsn": "postgresql://app:pg-s3cret-Pw9@127.0.0.1/shop", "sla": 99.9,
         "critical": True},
        {"name": "payments-gateway", "type": "http", "url": "https://pay.test/status", "sla": 99.8},
    ]},
    "metrics": {
        "cloudwatch": {
            "mode": "emf", "namespace": "Shop/App",
            "failure_alarms": {"payment.create": 5},
            "latency_alarms": {"POST /payments": 1000, "payment.create": 500},
            "latency_percentile": "p95", "alarm_period": "1m", "evaluation_periods": 5, "datapoints_to_alarm": 3,
            "fault_rate_alarm": 2, "fault_count_alarm": 50, "error_count_alarms": {"payment.create": 10},
            "runbook_url": "https://runbooks.example.test/{alarm}",
            "runbooks": {"db": "https://runbooks.example.test/database"},
            "health_score_alarm": 85,
            "areas": {"payment": ["payment.create", "POST /payments", "payments-gateway"]},
            "dashboard_metrics": ["Revenue", "UserRegistrations"],
        },
        "aws_resources": {
            "alb": {"load_balancer": "app/shop-alb/50dc6c495c0c9188",
                    "target_group": "targetgroup/shop/73e2d6bc24d8a067"},
            "rds": {"instance": "shop-db", "max_connections": 200},
            "ecs": {"cluster": "shop", "service": "shop-api"},
            "elasticache": {"cluster": "shop-cache", "evictions": 100},
            "lambda": {"functions": ["shop-worker", "shop-mailer"], "duration_ms": 10000},
            "apigateway": {"api_name": "shop", "stage": "prod"},
            "tier": "critical",
        },
    },
}
STEM = "pulsetrace-shop-api-prod"


def cfg(data: dict[str, Any] | None = None) -> Config:
    return config_from_mapping(data or EVERY_KEY, {})


def alarms() -> dict[str, Any]:
    return {a.name: a for a in build_plan(cfg()).metric_alarms}


def test_latency_alarms_watch_the_chosen_percentile_with_periods_and_datapoints() -> None:
    alarm = alarms()[f"{STEM}-POST-payments-latency"]
    p = alarm.params
    assert (p["Namespace"], p["MetricName"], p["ExtendedStatistic"], p["Threshold"]) == (
        "Shop/App", "Latency", "p95", 1000)
    assert {d["Name"]: d["Value"] for d in p["Dimensions"]} == {
        "Service": "shop-api", "Environment": "prod", "Operation": "POST /payments"}
    assert (p["Period"], p["EvaluationPeriods"], p["DatapointsToAlarm"]) == (60, 5, 3)
    assert "Statistic" not in p and alarm.tier == "warning"


def test_service_wide_fault_rate_and_count_and_the_health_score() -> None:
    found = alarms()
    rate = found[f"{STEM}-fault-rate"]
    assert [m["Expression"] for m in rate.params["Metrics"] if "Expression" in m] == [
        "IF(req >= 20, 100 * flt / req, 0)"]
    assert {d["Name"] for m in rate.params["Metrics"] if "MetricStat" in m
            for d in m["MetricStat"]["Metric"]["Dimensions"]} == {"Service", "Environment"}
    assert rate.params["Threshold"] == 2 and rate.tier == "critical"
    count = found[f"{STEM}-fault-count"].params
    assert (count["MetricName"], count["Statistic"], count["Period"], count["Threshold"]) == ("Faults", "Sum", 300, 50)
    score = found[f"{STEM}-health-score"]
    assert (score.params["MetricName"], score.params["ComparisonOperator"], score.params["Threshold"]) == (
        "HealthScore", "LessThanThreshold", 85)
    errors = found[f"{STEM}-payment.create-error-count"].params
    assert errors["Threshold"] == 10 and errors["Metrics"][-1]["Expression"] == "FILL(err, 0) + FILL(flt, 0)"


def test_runbook_links_end_every_description_by_subject_or_by_template() -> None:
    plan = build_plan(cfg())
    for alarm in [*plan.metric_alarms, *plan.composite_alarms]:
        assert re.search(r" Runbook: https://runbooks\.example\.test/\S+$", alarm.description), alarm.name
        assert len(alarm.description) <= 1024
    found = alarms()
    assert found[f"{STEM}-db-availability"].description.endswith("Runbook: https://runbooks.example.test/database")
    assert found[f"{STEM}-fault-rate"].description.endswith(f"Runbook: https://runbooks.example.test/{STEM}-fault-rate")


def test_a_business_area_and_the_system_get_composite_alarms() -> None:
    plan = build_plan(cfg())
    comps = {c.name: c for c in plan.composite_alarms}
    area = comps[f"{STEM}-area-payment"]
    assert set(area.children) == {f"{STEM}-payment.create-failure-rate", f"{STEM}-payment.create-latency",
                                  f"{STEM}-POST-payments-latency", f"{STEM}-payment.create-error-count",
                                  f"{STEM}-payments-gateway-availability", f"{STEM}-payments-gateway-fast-burn",
                                  f"{STEM}-payments-gateway-slow-burn"}
    assert area.tier == "critical"  # the gateway's fast burn pages, so the area does
    system = comps[f"{STEM}-system"]
    assert {f"{STEM}-health-down", f"{STEM}-health-score", f"{STEM}-fault-rate", f"{STEM}-db-fast-burn",
            f"{STEM}-alb-5xx-rate"} <= set(system.children)
    assert all(f'ALARM("{c}")' in system.rule for c in system.children)


def test_without_configured_areas_an_area_is_the_first_word_of_alarmed_business_operations() -> None:
    data = json.loads(json.dumps(EVERY_KEY))
    del data["metrics"]["cloudwatch"]["areas"]
    data["health"]["probes"][1]["name"] = "payment-gw"
    comps = {c.name: c for c in build_plan(cfg(data)).composite_alarms}
    area = comps[f"{STEM}-area-payment"]
    assert f"{STEM}-payment-gw-availability" in area.children and f"{STEM}-POST-payments-latency" not in area.children


@pytest.mark.parametrize(("name", "namespace", "metric", "dims", "stat", "threshold"), [
    ("alb-5xx-rate", "AWS/ApplicationELB", None, None, None, 5.0),
    ("alb-unhealthy-hosts", "AWS/ApplicationELB", "UnHealthyHostCount",
     {"TargetGroup": "targetgroup/shop/73e2d6bc24d8a067", "LoadBalancer": "app/shop-alb/50dc6c495c0c9188"},
     "Maximum", 1),
    ("alb-latency", "AWS/ApplicationELB", "TargetResponseTime", {"LoadBalancer": "app/shop-alb/50dc6c495c0c9188"},
     "p99", 2.0),
    ("rds-connections", "AWS/RDS", "DatabaseConnections", {"DBInstanceIdentifier": "shop-db"}, "Maximum", 160.0),
    ("rds-cpu", "AWS/RDS", "CPUUtilization", {"DBInstanceIdentifier": "shop-db"}, "Average", 80.0),
    ("rds-free-storage", "AWS/RDS", "FreeStorageSpace", {"DBInstanceIdentifier": "shop-db"}, "Minimum", 5 * 1024 ** 3),
    ("ecs-cpu", "AWS/ECS", "CPUUtilization", {"ClusterName": "shop", "ServiceName": "shop-api"}, "Average", 80.0),
    ("ecs-memory", "AWS/ECS", "MemoryUtilization", {"ClusterName": "shop", "ServiceName": "shop-api"}, "Average", 90),
    ("elasticache-memory", "AWS/ElastiCache", "DatabaseMemoryUsagePercentage", {"CacheClusterId": "shop-cache"},
     "Average", 80.0),
    ("elasticache-evictions", "AWS/ElastiCache", "Evictions", {"CacheClusterId": "shop-cache"}, "Sum", 100),
    ("lambda-shop-worker-duration", "AWS/Lambda", "Duration", {"FunctionName": "shop-worker"}, "p99", 10000.0),
    ("lambda-shop-mailer-errors", "AWS/Lambda", "Errors", {"FunctionName": "shop-mailer"}, "Sum", 0),
    ("lambda-shop-worker-throttles", "AWS/Lambda", "Throttles", {"FunctionName": "shop-worker"}, "Sum", 0),
    ("apigateway-5xx-rate", "AWS/ApiGateway", "5XXError", {"ApiName": "shop", "Stage": "prod"}, "Average", 0.05),
    ("apigateway-latency", "AWS/ApiGateway", "Latency", {"ApiName": "shop", "Stage": "prod"}, "p99", 1000.0),
])
def test_aws_resource_alarms_use_the_aws_metrics_dimensions_and_design_thresholds(
        name: str, namespace: str, metric: str | None, dims: dict[str, str] | None, stat: str | None,
        threshold: float) -> None:
    alarm = alarms()[f"{STEM}-{name}"]
    p = alarm.params
    assert alarm.tier == "critical" and p["Threshold"] == threshold
    if metric is None:  # metric math
        stats = [m["MetricStat"]["Metric"] for m in p["Metrics"] if "MetricStat" in m]
        assert {s["Namespace"] for s in stats} == {namespace}
        return
    assert (p["Namespace"], p["MetricName"]) == (namespace, metric)
    assert {d["Name"]: d["Value"] for d in p["Dimensions"]} == dims
    assert p.get("Statistic", p.get("ExtendedStatistic")) == stat


def test_ecs_cpu_needs_three_consecutive_periods_and_every_threshold_can_be_overridden() -> None:
    p = alarms()[f"{STEM}-ecs-cpu"].params
    assert (p["EvaluationPeriods"], p["DatapointsToAlarm"]) == (3, 3)
    data = json.loads(json.dumps(EVERY_KEY))
    data["metrics"]["aws_resources"]["ecs"] |= {"cpu_percent": 70, "cpu_periods": 5}
    data["metrics"]["aws_resources"]["rds"] = {"cluster": "shop-aurora", "connections_percent": 50}
    found = {a.name: a for a in build_plan(cfg(data)).metric_alarms}
    p = found[f"{STEM}-ecs-cpu"].params
    assert (p["Threshold"], p["EvaluationPeriods"]) == (70, 5)
    rds = found[f"{STEM}-rds-connections"].params
    assert rds["Dimensions"] == [{"Name": "DBClusterIdentifier", "Value": "shop-aurora"}] and rds["Threshold"] == 50
    assert f"{STEM}-rds-free-storage" not in found  # a cluster has no FreeStorageSpace


def test_three_dashboards_executive_and_dependencies_widgets() -> None:
    plan = build_plan(cfg())
    boards = {d.name: d.body for d in plan.dashboards}
    assert list(boards) == [STEM, f"{STEM}-executive", f"{STEM}-dependencies"]
    titles = {name: [w["properties"].get("title", "") for w in body["widgets"] if w["type"] == "metric"]
              for name, body in boards.items()}
    assert {"Health score (0-100)", "Revenue at risk (now)", "db: target 99.9 %",
            "Business operations per minute", "Business operations success rate (%)",
            "Revenue (sum per 5 minutes)"} <= set(titles[f"{STEM}-executive"])
    dep = titles[f"{STEM}-dependencies"]
    for t in ("ALB requests and 5XX", "RDS connections", "ECS CPU and memory (%)", "ElastiCache evictions",
              "Lambda duration p99 (ms)", "API Gateway latency p99 (ms)", "Probe latency p99 (ms)"):
        assert t in dep
    assert "Business metrics (pulsetrace.metric, sum per 5 minutes)" in titles[STEM]
    for body in boards.values():  # no two widgets overlap
        cells = set()
        for w in body["widgets"]:
            mine = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
            assert not cells & mine, w
            cells |= mine


def test_health_score_weighs_critical_probes_and_sla_compliance() -> None:
    up = {"status": "UP", "critical": False}
    assert health_score(snapshot_from_dict({"probes": {"a": up, "b": up}})) == 100
    assert health_score(snapshot_from_dict({"probes": {}})) is None
    assert health_score(snapshot_from_dict({"probes": {"a": {"status": "UNKNOWN"}}})) is None
    sla_ok = {"target": 99.9, "windows": {"30d": {"availability": 99.95, "budget_remaining": 0.5}}}
    down_critical = {"status": "DOWN", "critical": True, "sla": sla_ok}
    # (3 * 30 + 200) / 5
    assert health_score(snapshot_from_dict({"probes": {"db": down_critical, "a": up, "b": up}})) == 58.0
    spent = {"target": 99.9, "windows": {"30d": {"availability": 99.0, "budget_remaining": -0.4}}}
    assert health_score(snapshot_from_dict({"probes": {"a": {"status": "UP", "sla": spent}}})) == 70.0
    degraded = {"status": "DEGRADED", "critical": True}
    # (3 * 60 + 200) / 5
    assert health_score(snapshot_from_dict({"probes": {"db": degraded, "a": up, "b": up}})) == 76.0


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cfn-lint")
    assert exe, "cfn-lint is a dev dependency"
    return subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=180)


def test_a_template_using_every_new_key_passes_cfn_lint(tmp_path: Path) -> None:
    path = tmp_path / "every-key.json"
    path.write_text(json.dumps(cloudformation(build_plan(cfg())), indent=2))
    result = cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pg-s3cret-Pw9" not in path.read_text()


# -- Terraform ----------------------------------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def check_terraform(doc: dict[str, Any]) -> None:
    """The structure the hashicorp/aws provider's resources take, in Terraform's JSON syntax."""
    assert doc["terraform"]["required_providers"]["aws"]["source"] == "hashicorp/aws"
    res = doc["resource"]
    assert set(res) <= {"aws_sns_topic", "aws_cloudwatch_metric_alarm", "aws_cloudwatch_composite_alarm",
                        "aws_cloudwatch_dashboard"}
    declared = {f"{kind}.{name}" for kind, items in res.items() for name in items}
    for kind, items in res.items():
        for name, body in items.items():
            assert _IDENT.match(name), name
            for ref in re.findall(r"\$\{([^}]+)\}", json.dumps(body)):
                head = ".".join(ref.split(".")[:2])
                assert head in declared or ref == "data.aws_region.current.name", ref
    for alarm in res.get("aws_cloudwatch_metric_alarm", {}).values():
        assert {"alarm_name", "comparison_operator", "evaluation_periods", "threshold"} <= set(alarm)
        if "metric_query" in alarm:
            assert not {"metric_name", "namespace", "statistic"} & set(alarm)
            assert sum(q["return_data"] for q in alarm["metric_query"]) == 1
            for q in alarm["metric_query"]:
                assert ("expression" in q) != ("metric" in q)
                for m in q.get("metric", []):
                    assert {"metric_name", "namespace", "period", "stat", "dimensions"} == set(m)
        else:
            assert {"metric_name", "namespace", "period"} <= set(alarm)
            assert ("statistic" in alarm) != ("extended_statistic" in alarm)
    for comp in res.get("aws_cloudwatch_composite_alarm", {}).values():
        assert {"alarm_name", "alarm_rule"} <= set(comp)
        assert all(d in declared for d in comp["depends_on"])
    for board in res["aws_cloudwatch_dashboard"].values():
        body = board["dashboard_body"].replace("${data.aws_region.current.name}", "eu-west-1")
        assert "${" not in body.replace("$${", "")
        assert json.loads(body.replace("$${", "${"))["widgets"]


def names_in_cloudformation(template: dict[str, Any]) -> set[tuple[str, str]]:
    kinds = {"AWS::SNS::Topic": ("topic", "TopicName"), "AWS::CloudWatch::Alarm": ("alarm", "AlarmName"),
             "AWS::CloudWatch::CompositeAlarm": ("composite", "AlarmName"),
             "AWS::CloudWatch::Dashboard": ("dashboard", "DashboardName")}
    return {(kinds[r["Type"]][0], r["Properties"][kinds[r["Type"]][1]]) for r in template["Resources"].values()}


def names_in_terraform(doc: dict[str, Any]) -> set[tuple[str, str]]:
    kinds = {"aws_sns_topic": ("topic", "name"), "aws_cloudwatch_metric_alarm": ("alarm", "alarm_name"),
             "aws_cloudwatch_composite_alarm": ("composite", "alarm_name"),
             "aws_cloudwatch_dashboard": ("dashboard", "dashboard_name")}
    return {(kinds[k][0], body[kinds[k][1]]) for k, items in doc["resource"].items() for body in items.values()}


@pytest.mark.parametrize("data", [EVERY_KEY, {"service": {"name": "tiny"}}], ids=["every-key", "defaults"])
def test_terraform_has_the_documented_structure_and_the_same_resources_as_cloudformation(
        data: dict[str, Any]) -> None:
    plan = build_plan(cfg(data))
    doc = terraform(plan)
    check_terraform(doc)
    assert names_in_terraform(doc) == names_in_cloudformation(cloudformation(plan))
    cfn = {r["Properties"]["AlarmName"]: r["Properties"] for r in cloudformation(plan)["Resources"].values()
           if r["Type"] == "AWS::CloudWatch::Alarm"}
    for alarm in doc["resource"].get("aws_cloudwatch_metric_alarm", {}).values():
        mine = cfn[alarm["alarm_name"]]
        assert alarm["threshold"] == mine["Threshold"]
        assert alarm.get("extended_statistic") == mine.get("ExtendedStatistic")
        assert alarm.get("dimensions", {}) == {d["Name"]: d["Value"] for d in mine.get("Dimensions", [])}


def test_render_format_terraform_writes_a_tf_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pulsetrace.yaml"
    config.write_text(yaml.safe_dump(EVERY_KEY))
    out = tmp_path / "alarms.tf.json"
    assert main(["cloudwatch", "render", "--config", str(config), "--format", "terraform", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    check_terraform(doc)
    assert "pg-s3cret-Pw9" not in out.read_text()
    assert len(doc["resource"]["aws_cloudwatch_dashboard"]) == 3
