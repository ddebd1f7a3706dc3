"""``pulsetrace cloudwatch apply`` against moto in server mode: topics, alarms and dashboard, idempotent.

moto 5.2 does not implement PutCompositeAlarm (it answers 500), so composite alarms
are checked in two ways: ``apply`` reports each as failed in one line with exit 1
while everything else is created, and ``--no-composite`` applies the rest with exit 0.
Their definitions are checked against the rendered template (and cfn-lint) in
``tests/agent/metrics/test_cloudwatch_render.py``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pulsetrace.cli.main import main
from pulsetrace.metrics.render import build_plan
from pulsetrace.validation import load_config
from tests.servers import MotoServer, free_port


def write(tmp_path: Path, service: str) -> Path:
    path = tmp_path / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump({
        "service": {"name": service, "environment": "uat"},
        "health": {"probes": [
            {"name": "db", "type": "postgres", "dsn": "postgresql://app:pg-s3cret-Pw9@127.0.0.1/shop", "sla": 99.9},
            {"name": "cache", "type": "redis", "url": "redis://127.0.0.1:6379/0", "sla": 99.5}]},
        "metrics": {"cloudwatch": {"mode": "api"}},
    }))
    return path


def clients(moto: MotoServer) -> tuple[Any, Any]:
    session = boto3.session.Session(region_name="us-east-1")
    return (session.client("cloudwatch", endpoint_url=moto.url), session.client("sns", endpoint_url=moto.url))


def alarms_of(cw: Any, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix):
        for alarm in page["MetricAlarms"]:
            found[alarm["AlarmName"]] = alarm
    return found


def test_apply_creates_topics_alarms_and_dashboard_and_is_idempotent(
        tmp_path: Path, aws_env: dict[str, str], moto_server: MotoServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    service = f"shop-{uuid.uuid4().hex[:6]}"
    config = write(tmp_path, service)
    plan = build_plan(load_config(config))
    prefix = f"pulsetrace-{service}-uat"
    cw, sns = clients(moto_server)
    for run in range(2):
        assert main(["cloudwatch", "apply", "--config", str(config), "--no-composite"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"{len(plan.metric_alarms) + 3 + len(plan.dashboards)} applied, 0 failed (us-east-1)" in out
        alarms = alarms_of(cw, prefix)
        assert set(alarms) == {a.name for a in plan.metric_alarms}, run
        topics = [t["TopicArn"] for t in sns.list_topics()["Topics"] if prefix in t["TopicArn"]]
        assert sorted(t.rsplit(":", 1)[1] for t in topics) == sorted(f"{prefix}-{t}" for t in
                                                                    ("business", "critical", "warning"))
    availability = alarms[f"{prefix}-db-availability"]
    assert availability["Threshold"] == 99.9 and availability["ComparisonOperator"] == "LessThanThreshold"
    assert availability["AlarmActions"] == [t for t in topics if t.endswith("-warning")]
    failure = alarms[f"{prefix}-payment.create-failure-rate"]
    assert [m["Expression"] for m in failure["Metrics"] if "Expression" in m] == [
        "IF(req >= 20, 100 * (err + flt) / req, 0)"]
    burn = alarms[f"{prefix}-db-burn-5m-x14.4"]
    assert burn.get("AlarmActions", []) == []  # children notify through their composite only
    body = json.loads(cw.get_dashboard(DashboardName=prefix)["DashboardBody"])
    assert body["widgets"] and all(w["properties"].get("region", "us-east-1") == "us-east-1" for w in body["widgets"])
    assert "pg-s3cret-Pw9" not in json.dumps(alarms, default=str)


def test_apply_reports_each_composite_alarm_moto_cannot_create_and_exits_1(
        tmp_path: Path, aws_env: dict[str, str], moto_server: MotoServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    service = f"shop-{uuid.uuid4().hex[:6]}"
    config = write(tmp_path, service)
    plan = build_plan(load_config(config))
    assert main(["cloudwatch", "apply", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("FAIL")]
    assert len(failed) == len(plan.composite_alarms) == 6  # 2 burn composites per probe, an area, the system
    assert all("composite-alarm" in line for line in failed)
    assert "--no-composite" in captured.err and "Traceback" not in captured.err
    cw, _ = clients(moto_server)
    assert set(alarms_of(cw, f"pulsetrace-{service}-uat")) == {a.name for a in plan.metric_alarms}


def test_apply_with_the_endpoint_down_is_one_line_and_exit_1(tmp_path: Path, aws_env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    config = write(tmp_path, "shop")
    assert main(["cloudwatch", "apply", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulsetrace: cannot reach AWS (us-east-1)") and err.count("\n") == 1


def test_apply_with_every_alarm_and_resource_key_creates_alarms_and_three_dashboards_idempotently(
        tmp_path: Path, aws_env: dict[str, str], moto_server: MotoServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.agent.metrics.test_cloudwatch_alarms import EVERY_KEY

    service = f"shop-{uuid.uuid4().hex[:6]}"
    data = json.loads(json.dumps(EVERY_KEY))
    data["service"]["name"] = service
    config = tmp_path / "pulsetrace.yaml"
    config.write_text(yaml.safe_dump(data))
    plan = build_plan(load_config(str(config)))
    prefix = f"pulsetrace-{service}-prod"
    cw, _ = clients(moto_server)
    for run in range(2):
        assert main(["cloudwatch", "apply", "--config", str(config), "--no-composite"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"{len(plan.metric_alarms) + 3 + 3} applied, 0 failed (us-east-1)" in out
        alarms = alarms_of(cw, prefix)
        assert set(alarms) == {a.name for a in plan.metric_alarms}, run
    boards = {d["DashboardName"] for d in cw.list_dashboards(DashboardNamePrefix=prefix)["DashboardEntries"]}
    assert boards == {prefix, f"{prefix}-executive", f"{prefix}-dependencies"}
    rds = alarms[f"{prefix}-rds-connections"]
    assert (rds["Namespace"], rds["MetricName"], rds["Threshold"]) == ("AWS/RDS", "DatabaseConnections", 160)
    latency = alarms[f"{prefix}-POST-payments-latency"]
    assert latency["ExtendedStatistic"] == "p95" and latency["AlarmDescription"].endswith(
        f"Runbook: https://runbooks.example.test/{prefix}-POST-payments-latency")
    assert "pg-s3cret-Pw9" not in json.dumps(alarms, default=str)
