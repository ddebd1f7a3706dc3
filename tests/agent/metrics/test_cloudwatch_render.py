"""Alarms and dashboards as code: the plan, the CloudFormation template (checked by cfn-lint), the dashboard."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulsetrace.cli.main import main
from pulsetrace.config.schema import Config
from pulsetrace.metrics.datum import base_dimensions
from pulsetrace.healthchecks.snapshot import snapshot_from_dict
from pulsetrace.metrics.health_metrics import HealthMetricsSource
from pulsetrace.metrics.render import Plan, build_plan, cloudformation, dashboard_body
from pulsetrace.metrics.request_metrics import Recorder
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping

CONFIG: dict[str, Any] = {
    "service": {"name": "shop-api", "environment": "uat"},
    "health": {"probes": [
        {"name": "db", "type": "postgres", "dsn": "postgresql://app:pg-s3cret-Pw9@127.0.0.1/shop", "sla": 99.9,
         "critical": True, "impact": {"revenue_per_minute": 120, "users": 5000}},
        {"name": "cache", "type": "redis", "url": "redis://127.0.0.1:6379/0", "sla": 99.5},
        {"name": "ledger", "type": "http", "url": "https://ledger.test/status", "sla": 100},
    ]},
    "metrics": {"cloudwatch": {"mode": "api", "namespace": "Koneksi/Application",
                               "failure_alarms": {"payment.create": 5, "auth.login": 10}}},
}


def cfg() -> Config:
    return config_from_mapping(CONFIG, {})


def test_each_probe_gets_an_availability_alarm_at_its_sla_target() -> None:
    plan = build_plan(cfg())
    alarms = {a.name: a for a in plan.metric_alarms}
    db = alarms["pulsetrace-shop-api-uat-db-availability"]
    assert db.params["MetricName"] == "Availability" and db.params["Threshold"] == 99.9
    assert db.params["ComparisonOperator"] == "LessThanThreshold"
    assert {d["Name"]: d["Value"] for d in db.params["Dimensions"]} == {
        "Service": "shop-api", "Environment": "uat", "Probe": "db", "Window": "30d"}
    assert db.tier == "warning"
    assert alarms["pulsetrace-shop-api-uat-cache-availability"].params["Threshold"] == 99.5


def test_burn_rate_composites_follow_the_multi_window_table() -> None:
    plan = build_plan(cfg())
    comps = {c.name: c for c in plan.composite_alarms}
    fast = comps["pulsetrace-shop-api-uat-db-fast-burn"]
    assert fast.tier == "critical"
    assert fast.rule == ('ALARM("pulsetrace-shop-api-uat-db-burn-1h-x14.4") AND '
                         'ALARM("pulsetrace-shop-api-uat-db-burn-5m-x14.4")')
    slow = comps["pulsetrace-shop-api-uat-db-slow-burn"]
    assert slow.tier == "warning"
    assert slow.rule == ('(ALARM("pulsetrace-shop-api-uat-db-burn-6h-x6") AND '
                         'ALARM("pulsetrace-shop-api-uat-db-burn-30m-x6")) OR '
                         '(ALARM("pulsetrace-shop-api-uat-db-burn-3d-x1") AND '
                         'ALARM("pulsetrace-shop-api-uat-db-burn-6h-x1"))')
    children = {a.name: a for a in plan.metric_alarms if a.tier is None}
    assert set(fast.children) | set(slow.children) <= set(children)
    # Windows the SLA tracker reports use its BurnRate; the short ones are metric math on ProbeUp.
    one_hour = children["pulsetrace-shop-api-uat-db-burn-1h-x14.4"].params
    assert one_hour["MetricName"] == "BurnRate" and one_hour["Threshold"] == 14.4
    five = children["pulsetrace-shop-api-uat-db-burn-5m-x14.4"].params
    (expr,) = [m for m in five["Metrics"] if "Expression" in m]
    (up,) = [m for m in five["Metrics"] if "MetricStat" in m]
    assert expr["Expression"] == "(1 - up) / 0.001"
    assert up["MetricStat"]["Metric"]["MetricName"] == "ProbeUp" and up["MetricStat"]["Period"] == 300
    thirty = children["pulsetrace-shop-api-uat-db-burn-30m-x6"].params
    assert [m for m in thirty["Metrics"] if "MetricStat" in m][0]["MetricStat"]["Period"] == 1800
    # A 100 % target has no budget: no burn-rate alarms for it (and no division by zero).
    assert not any("ledger" in c.name for c in plan.composite_alarms)


def test_failure_rate_alarms_on_business_operations_use_metric_math_with_a_volume_guard() -> None:
    plan = build_plan(cfg())
    alarm = {a.name: a for a in plan.metric_alarms}["pulsetrace-shop-api-uat-payment.create-failure-rate"]
    assert alarm.tier == "business" and alarm.params["Threshold"] == 5
    exprs = [m["Expression"] for m in alarm.params["Metrics"] if "Expression" in m]
    assert exprs == ["IF(req >= 20, 100 * (err + flt) / req, 0)"]
    stats = {m["Id"]: m["MetricStat"] for m in alarm.params["Metrics"] if "MetricStat" in m}
    assert {k: v["Metric"]["MetricName"] for k, v in stats.items()} == {"req": "Requests", "err": "Errors",
                                                                       "flt": "Faults"}
    assert all(v["Period"] == 300 and v["Stat"] == "Sum" for v in stats.values())
    assert {d["Name"]: d["Value"] for d in stats["req"]["Metric"]["Dimensions"]}["Operation"] == "payment.create"


def emitted_series(config: Config) -> set[tuple[str, frozenset[str]]]:
    """(metric name, dimension names) of everything the agent emits for traffic and a full snapshot."""
    rec = Recorder(config, SelfMetrics())
    for op in ("payment.create", "auth.login", "order.create", "rfid.verify", "GET /x"):
        rec.record(op, "", 5.0, False, False)
    data = rec.collect(time.time())
    health = HealthMetricsSource(base_dimensions(config))
    now = time.time()
    window = {"availability": 99.0, "budget_remaining": 0.5}
    health.on_snapshot(snapshot_from_dict({"status": "UP", "probes": {p.name: {
        "status": "UP", "latency_ms": 3.0, "last_checked": now,
        "sla": {"windows": {w: window for w in ("1h", "24h", "7d", "30d")},
                "burn_rates": {"1h": 0.1, "6h": 0.1, "3d": 0.1}},
        "impact": {"revenue_at_risk": 0.0, "users_affected": 0}} for p in config.health.probes}}))
    data += health.collect(now)
    return {(d.name, frozenset(n for n, _ in d.dimensions)) for d in data}


def referenced_series(plan: Plan) -> set[tuple[str, frozenset[str]]]:
    out = set()
    for alarm in plan.metric_alarms:
        if "MetricName" in alarm.params:
            out.add((alarm.params["MetricName"], frozenset(d["Name"] for d in alarm.params["Dimensions"])))
        for m in alarm.params.get("Metrics", []):
            if "MetricStat" in m:
                metric = m["MetricStat"]["Metric"]
                out.add((metric["MetricName"], frozenset(d["Name"] for d in metric["Dimensions"])))
    return out


def test_every_alarm_watches_a_series_the_agent_really_emits() -> None:
    config = cfg()
    missing = referenced_series(build_plan(config)) - emitted_series(config)
    assert not missing


def test_every_dashboard_metric_is_one_the_agent_emits() -> None:
    config = cfg()
    emitted = emitted_series(config)
    body = json.loads(dashboard_body(build_plan(config), "ap-south-1"))
    seen = 0
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        assert widget["properties"]["region"] == "ap-south-1"
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):  # a SEARCH over Operation, or over the business metrics
                assert row[0]["expression"].startswith("SEARCH('{Koneksi/Application")
                assert 'Service="shop-api" Environment="uat"' in row[0]["expression"]
                continue
            ns, name, *rest = row
            assert ns == "Koneksi/Application"
            dims = [x for x in rest if not isinstance(x, dict)]
            key = (name, frozenset(dims[0::2]))
            if "none" not in dims:
                assert key in emitted, key
            seen += 1
    assert seen > 10
    titles = [w["properties"].get("title") for w in body["widgets"] if w["type"] == "metric"]
    for op in ("payment.create", "order.create", "rfid.verify", "auth.login"):
        assert op in titles
    assert "Revenue at risk" in titles and "Probe latency p99 (ms)" in titles


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfn") / "alarms.json"
    path.write_text(json.dumps(cloudformation(build_plan(cfg())), indent=2))
    return path


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cfn-lint")
    assert exe, "cfn-lint is a dev dependency"
    return subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)


def test_the_template_passes_cfn_lint_and_a_broken_one_does_not(template: Path, tmp_path: Path) -> None:
    result = cfn_lint(template)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = json.loads(template.read_text())
    alarm = next(r for r in broken["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm")
    alarm["Properties"]["ComparisonOperator"] = "Bigger"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert cfn_lint(tmp_path / "broken.json").returncode != 0


def test_the_template_wires_topics_composites_and_the_dashboard(template: Path) -> None:
    doc = json.loads(template.read_text())
    res = doc["Resources"]
    topics = {r["Properties"]["TopicName"] for r in res.values() if r["Type"] == "AWS::SNS::Topic"}
    assert topics == {f"pulsetrace-shop-api-uat-{t}" for t in ("critical", "warning", "business")}
    names = {r["Properties"]["AlarmName"]: lid for lid, r in res.items()
             if r["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")}
    expected = {"fast-burn": "TopicCritical", "slow-burn": "TopicWarning", "area-payment": "TopicBusiness",
                "area-auth": "TopicBusiness", "system": "TopicCritical"}
    composites = 0
    for lid, r in res.items():
        if r["Type"] == "AWS::CloudWatch::CompositeAlarm":
            composites += 1
            for child in r["Properties"]["AlarmRule"].split('"')[1::2]:
                assert names[child] in r["DependsOn"]
            kind = next(k for k in expected if r["Properties"]["AlarmName"].endswith(k))
            assert r["Properties"]["AlarmActions"] == [{"Ref": expected[kind]}], kind
    assert composites == 2 * 2 + 2 + 1  # burn composites of the two probes with a budget, two areas, the system
    dashes = [r for r in res.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert sorted(d["Properties"]["DashboardName"] for d in dashes) == [
        "pulsetrace-shop-api-uat", "pulsetrace-shop-api-uat-dependencies", "pulsetrace-shop-api-uat-executive"]
    for dash in dashes:
        body = dash["Properties"]["DashboardBody"]["Fn::Sub"]
        assert "${AWS::Region}" in body
        assert json.loads(body.replace("${AWS::Region}", "eu-west-1"))["widgets"]
    assert "pg-s3cret-Pw9" not in template.read_text()


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_render_command_writes_the_template_and_the_dashboard_json(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, CONFIG)
    out = tmp_path / "t.json"
    assert main(["cloudwatch", "render", "--config", str(config), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["AWSTemplateFormatVersion"] == "2010-09-09"
    assert main(["cloudwatch", "render", "--config", str(config), "--format", "dashboard-json",
                 "--region", "ap-south-1"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["widgets"][1]["properties"]["region"] == "ap-south-1"


def test_render_with_a_bad_configuration_is_one_line_per_problem_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {"metrics": {"cloudwatch": {"namespace": "AWS/EC2", "failure_alarms": {"payment.create": 500}}}}
    config = write_config(tmp_path, bad)
    assert main(["cloudwatch", "render", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "metrics.cloudwatch.failure_alarms.payment.create: too large" in err
    assert "Traceback" not in err
    config = write_config(tmp_path, {"metrics": {"cloudwatch": {"namespace": "AWS/EC2"}}})
    assert main(["cloudwatch", "render", "--config", str(config)]) == 2
    assert "metrics.cloudwatch.namespace: not a custom CloudWatch namespace" in capsys.readouterr().err


def test_render_to_an_unwritable_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, CONFIG)
    assert main(["cloudwatch", "render", "--config", str(config), "--out", str(tmp_path / "no" / "t.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulsetrace: cannot write") and err.count("\n") == 1
