"""The CloudWatch alarm forwarder: its inline Lambda code run on CloudWatch alarm SNS events (metric and composite,
ALARM, OK, INSUFFICIENT_DATA) against the same receivers, secrets read from SSM and Secrets Manager (moto), and the
rendered template cfn-lint clean with no secret in it.

The samples in tests/alerts/samples/ follow the documented shape of CloudWatch's alarm notification (the SNS
``Message``) inside the Lambda SNS event envelope.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import yaml

from pulsetrace.alerts.alarm_lambda import sigv4_headers
from pulsetrace.alerts.forwarder import lambda_source
from pulsetrace.cli.main import main
from tests.alerts.receivers import DISCORD_TOKEN, HOOK_TOKEN, PD_KEY, SLACK_TOKEN, Mode, Receiver
from tests.servers import MotoServer

SAMPLES = Path(__file__).parent / "samples"
SECRETS = (DISCORD_TOKEN, SLACK_TOKEN, PD_KEY, HOOK_TOKEN)


def event(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def forwarder(tmp_path: Path, receivers: dict[str, Receiver], moto_server: MotoServer, aws_env: dict[str, str],
              monkeypatch: pytest.MonkeyPatch) -> Any:
    """The inline Lambda code loaded the way Lambda loads index.py, its channels' secrets in SSM / Secrets Manager."""
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=moto_server.url)
    sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_server.url)
    ssm.put_parameter(Name="/pulsetrace/shop-api/alerts/team", Type="SecureString", Value=receivers["team"].url,
                      Overwrite=True)
    ssm.put_parameter(Name="/pulsetrace/shop-api/alerts/oncall", Type="SecureString", Value=PD_KEY, Overwrite=True)
    ops_arn = sm.create_secret(Name=f"pulsetrace/ops-{id(receivers)}", SecretString=receivers["ops"].url)["ARN"]
    channels = [{"name": "team", "type": "discord", "secret": "/pulsetrace/shop-api/alerts/team"},
                {"name": "ops", "type": "slack", "secret": ops_arn},
                {"name": "oncall", "type": "pagerduty", "secret": "/pulsetrace/shop-api/alerts/oncall",
                 "url": receivers["oncall"].url}]
    monkeypatch.setenv("PULSETRACE_CHANNELS", json.dumps(channels))
    monkeypatch.setenv("PULSETRACE_ROUTES", json.dumps({"critical": ["oncall", "team"], "warning": ["ops", "team"],
                                                        "business": ["ops", "team"]}))
    monkeypatch.setenv("PULSETRACE_SERVICE", "shop-api")
    monkeypatch.setenv("PULSETRACE_ENVIRONMENT", "uat")
    monkeypatch.setenv("PULSETRACE_RUNBOOK_URL", "https://runbooks.example.test/{alarm}")
    # Loaded the way the Lambda runtime loads it: index.py imported as module ``index``.
    code_dir = tmp_path / "task"
    code_dir.mkdir()
    (code_dir / "index.py").write_text(lambda_source())
    spec = importlib.util.spec_from_file_location("index", code_dir / "index.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "index", module)
    spec.loader.exec_module(module)
    return vars(module)


CONTEXT = SimpleNamespace(get_remaining_time_in_millis=lambda: 20_000)


def test_metric_alarm_and_ok_reach_the_business_channels_coloured(forwarder: Any,
                                                                  receivers: dict[str, Receiver]) -> None:
    first = forwarder["handler"](event("metric_alarm.json"), CONTEXT)
    forwarder["handler"](event("metric_ok.json"), CONTEXT)
    assert set(first["delivered"].values()) == {"HTTP 200"}
    team, ops = receivers["team"].bodies(), receivers["ops"].bodies()
    assert [b["embeds"][0]["color"] for b in team] == [0x0099FF, 0x00DD00]
    assert "payment-create-failure-rate" in team[0]["embeds"][0]["title"]
    assert team[0]["embeds"][0]["url"].endswith("/pulsetrace-shop-api-uat-payment-create-failure-rate")
    fields = {f["name"]: f["value"] for f in team[0]["embeds"][0]["fields"]}
    assert fields["Metric"] == "PulseTrace/FailureRate" and fields["Threshold"] == "5"
    assert [b["attachments"][0]["color"] for b in ops] == ["#36a64f", "#36a64f"]
    assert not receivers["oncall"].requests  # business is not routed to PagerDuty
    assert all(r.errors == [] for r in receivers.values())


def test_composite_alarm_pages_and_its_ok_resolves_with_the_same_dedup_key(forwarder: Any,
                                                                          receivers: dict[str, Receiver]) -> None:
    forwarder["handler"](event("composite_alarm.json"), CONTEXT)
    forwarder["handler"](event("composite_ok.json"), CONTEXT)
    pd = receivers["oncall"].wait_for(2)
    assert [(e["event_action"], e["dedup_key"]) for e in pd] == [
        ("trigger", "cloudwatch:pulsetrace-shop-api-uat-db-fast-burn"),
        ("resolve", "cloudwatch:pulsetrace-shop-api-uat-db-fast-burn")]
    assert pd[0]["routing_key"] == PD_KEY and pd[0]["payload"]["severity"] == "critical"
    assert "AND ALARM" in pd[0]["payload"]["custom_details"]["Rule"]
    assert pd[0]["payload"]["custom_details"]["Triggered by"] == "pulsetrace-shop-api-uat-db-burn-1h"
    assert [b["embeds"][0]["color"] for b in receivers["team"].bodies()] == [0xFF0000, 0x00DD00]
    assert all(r.errors == [] for r in receivers.values())


def test_insufficient_data_is_its_own_notice_not_a_resolve(forwarder: Any, receivers: dict[str, Receiver]) -> None:
    forwarder["handler"](event("metric_insufficient_data.json"), CONTEXT)
    (body,) = receivers["ops"].bodies()
    assert "insufficient data" in body["text"] and body["attachments"][0]["color"] == "#36a64f"


def test_a_rate_limited_channel_is_retried_after_retry_after(forwarder: Any, receivers: dict[str, Receiver]) -> None:
    receivers["team"].script.append(Mode("429", retry_after=1))
    result = forwarder["handler"](event("composite_alarm.json"), CONTEXT)
    assert set(result["delivered"].values()) == {"HTTP 200", "HTTP 202"}
    assert receivers["team"].answered["429"] == 1 and len(receivers["team"].requests) == 1


def test_a_failing_channel_does_not_stop_the_others_and_logs_no_secret(
        forwarder: Any, receivers: dict[str, Receiver], capsys: pytest.CaptureFixture[str]) -> None:
    receivers["team"].default = Mode("500")
    result = forwarder["handler"](event("composite_alarm.json"), CONTEXT)
    out = capsys.readouterr().out
    assert result["delivered"]["cloudwatch:pulsetrace-shop-api-uat-db-fast-burn:firing:team"] == "HTTP 500"
    assert len(receivers["oncall"].requests) == 1
    for secret in SECRETS:
        assert secret not in out and secret not in json.dumps(result)


def test_sigv4_signature_matches_botocore() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b'{"Name": "/pulsetrace/x", "WithDecryption": true}'
    req = AWSRequest(method="POST", url="https://ssm.ap-south-1.amazonaws.com/", data=body, headers={
        "content-type": "application/x-amz-json-1.1", "x-amz-target": "AmazonSSM.GetParameter"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok"), "ssm",
              "ap-south-1").add_auth(req)
    when = datetime.datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    ours = sigv4_headers("ssm", "ap-south-1", "ssm.ap-south-1.amazonaws.com", "AmazonSSM.GetParameter", body,
                         "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok", now=when)
    assert ours["authorization"] == req.headers["Authorization"]


def test_rendered_template_has_the_forwarder_is_cfn_lint_clean_and_holds_no_secret(
        tmp_path: Path, receivers: dict[str, Receiver], capsys: pytest.CaptureFixture[str]) -> None:
    from tests.alerts.support import channels_for

    cfg = tmp_path / "pulsetrace.yaml"
    cfg.write_text(yaml.safe_dump({
        "service": {"name": "shop-api", "environment": "uat"},
        "health": {"probes": [{"name": "db", "type": "postgres", "dsn": "postgresql://a:b@127.0.0.1/x", "sla": 99.9}]},
        "alerts": {"channels": channels_for(receivers) + [{"name": "tiers", "type": "sns",
                                                           "topic_arn": "arn:aws:sns:us-east-1:123456789012:t"}],
                   "routes": [{"severity": ["critical"], "channels": ["oncall", "team", "tiers"]},
                              {"severity": ["warning", "business"], "channels": ["ops", "hook"]}]}}))
    out_file = tmp_path / "stack.json"
    assert main(["cloudwatch", "render", "--config", str(cfg), "--out", str(out_file)]) == 0
    text = out_file.read_text()
    for secret in (*SECRETS, "112233445566778899"):
        assert secret not in text
    template = json.loads(text)
    res = template["Resources"]
    fn = res["AlertForwarderFunction"]["Properties"]
    assert fn["Runtime"].startswith("python3") and "import boto3" not in fn["Code"]["ZipFile"]
    env = fn["Environment"]["Variables"]
    assert json.loads(env["PULSETRACE_ROUTES"]) == {"critical": ["oncall", "team"], "warning": ["ops", "hook"],
                                                     "business": ["ops", "hook"]}
    assert "${AlertSecretTeam}" in env["PULSETRACE_CHANNELS"]["Fn::Sub"] and "tiers" not in env["PULSETRACE_CHANNELS"]["Fn::Sub"]
    topics = [lid for lid, r in res.items() if r["Type"] == "AWS::SNS::Topic"]
    subs = [r for r in res.values() if r["Type"] == "AWS::SNS::Subscription"]
    assert len(subs) == len(topics) == 3
    venv = Path(sys.executable).parent / "cfn-lint"
    exe = str(venv) if venv.exists() else shutil.which("cfn-lint")
    assert exe, "cfn-lint is a dev dependency"
    lint = subprocess.run([exe, str(out_file)], capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_terraform_output_has_the_same_forwarder_every_reference_declared_and_no_secret(
        tmp_path: Path, receivers: dict[str, Receiver]) -> None:
    """Structure only: ``terraform validate`` needs the AWS and archive providers, which cannot be fetched here."""
    import re

    from tests.alerts.support import channels_for

    cfg = tmp_path / "pulsetrace.yaml"
    cfg.write_text(yaml.safe_dump({
        "service": {"name": "shop-api", "environment": "uat"},
        "health": {"probes": [{"name": "db", "type": "postgres", "dsn": "postgresql://a:b@127.0.0.1/x", "sla": 99.9}]},
        "alerts": {"channels": channels_for(receivers), "runbook_url": "https://r.example.test/%{x}/{alarm}",
                   "routes": [{"severity": ["critical"], "channels": ["oncall", "team"]},
                              {"severity": ["warning", "business"], "channels": ["ops", "hook"]}]}}))
    out_file = tmp_path / "alarms.tf.json"
    assert main(["cloudwatch", "render", "--config", str(cfg), "--format", "terraform", "--out", str(out_file)]) == 0
    text = out_file.read_text()
    for secret in (*SECRETS, "112233445566778899"):
        assert secret not in text
    doc = json.loads(text)
    res, data = doc["resource"], doc["data"]
    fn = res["aws_lambda_function"]["alert_forwarder"]
    assert fn["runtime"].startswith("python3") and len(fn["function_name"]) <= 64
    assert data["archive_file"]["alert_forwarder"]["source_content"] == lambda_source()  # nothing to escape in it
    assert fn["environment"]["variables"]["PULSETRACE_RUNBOOK_URL"] == "https://r.example.test/%%{x}/{alarm}"
    assert set(res["aws_sns_topic_subscription"]) == {f"alert_forwarder_{t}" for t in res["aws_sns_topic"]}
    assert doc["terraform"]["required_providers"]["archive"]["source"] == "hashicorp/archive"
    declared = {f"{kind}.{name}" for kind, items in res.items() for name in items}
    declared |= {f"data.{kind}.{name}" for kind, items in data.items() for name in items}
    declared |= {f"var.{name}" for name in doc.get("variable", {})} | {"path.module"}
    refs = set()
    for m in re.finditer(r"(?<!\$)\$\{([^}]+)\}", text):
        parts = m.group(1).split(".")
        refs.add(".".join(parts[:3] if parts[0] == "data" else parts[:2]))
    assert refs and refs <= declared, refs - declared
