"""``pulsetrace alert test``, ``pulsetrace alerts`` and ``config validate`` with alerts, against real receivers and moto SNS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pulsetrace.alerts.book import AlertBook
from pulsetrace.alerts.engine import AlertEngine
from pulsetrace.cli.main import main
from pulsetrace.store import LocalStore
from tests.alerts.receivers import DISCORD_TOKEN, HOOK_TOKEN, PD_KEY, SLACK_TOKEN, Mode, Receiver
from tests.alerts.support import alert, channels_for
from tests.servers import MotoServer

SECRETS = (DISCORD_TOKEN, SLACK_TOKEN, PD_KEY, HOOK_TOKEN, "112233445566778899")


def write(tmp: Path, receivers: dict[str, Receiver], extra_channels: list[dict[str, Any]] | None = None,
          **alerts: Any) -> Path:
    channels = channels_for(receivers) + (extra_channels or [])
    doc = {"service": {"name": "shop-api", "environment": "uat"}, "store": {"path": str(tmp / "store")},
           "alerts": {"channels": channels, "routes": [{"channels": [c["name"] for c in channels]}], **alerts}}
    path = tmp / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_alert_test_sends_a_coloured_alert_and_its_resolution_to_every_channel(
        tmp_path: Path, receivers: dict[str, Receiver], moto_server: MotoServer, aws_env: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto_server.url)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server.url)
    topic = sns.create_topic(Name="shop-critical")["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts-copy")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    cfg = write(tmp_path, receivers, [{"name": "tiers", "type": "sns", "topic_arn": topic,
                                       "endpoint_url": moto_server.url}])
    code, out, err = run(capsys, "alert", "test", "--config", str(cfg))
    assert code == 0, out + err
    for name in ("team", "ops", "oncall", "hook", "tiers"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert "firing ok" in line and "resolved ok" in line
    assert "HTTP 202" in out  # PagerDuty's answer is shown
    for rec in receivers.values():
        assert len(rec.requests) == 2 and rec.errors == []
    assert [b["embeds"][0]["color"] for b in receivers["team"].bodies()] == [0xFF0000, 0x00DD00]
    assert [b["attachments"][0]["color"] for b in receivers["ops"].bodies()] == ["#8B0000", "#36a64f"]
    pd = receivers["oncall"].bodies()
    assert pd[0]["event_action"] == "trigger" and pd[1]["event_action"] == "resolve"
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"] and pd[0]["dedup_key"].startswith("test:")
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    envelopes = [json.loads(m["Body"]) for m in got]
    assert len(envelopes) == 2
    for env in envelopes:
        assert len(env["Subject"]) < 100 and env["Subject"].isascii()
        assert json.loads(env["Message"])["key"] == pd[0]["dedup_key"]
    assert_no_secret(out, err)


def test_alert_test_one_channel_and_severity(tmp_path: Path, receivers: dict[str, Receiver],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, receivers)
    code, out, _ = run(capsys, "alert", "test", "--config", str(cfg), "--channel", "team", "--severity", "warning")
    assert code == 0
    assert [b["embeds"][0]["color"] for b in receivers["team"].bodies()] == [0xFF9900, 0x00DD00]
    assert all(not r.requests for n, r in receivers.items() if n != "team")


def test_alert_test_exits_1_and_says_why_when_a_channel_fails(tmp_path: Path, receivers: dict[str, Receiver],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    receivers["ops"].default = Mode("500")
    cfg = write(tmp_path, receivers)
    code, out, err = run(capsys, "alert", "test", "--config", str(cfg), "--timeout", "3")
    assert code == 1
    ops = next(ln for ln in out.splitlines() if ln.startswith("ops"))
    assert "FAILED (HTTP 500)" in ops
    assert "firing ok" in next(ln for ln in out.splitlines() if ln.startswith("team"))
    assert_no_secret(out, err)


def test_alert_test_unknown_channel_is_a_usage_error(tmp_path: Path, receivers: dict[str, Receiver],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "alert", "test", "--config", str(write(tmp_path, receivers)), "--channel", "nope")
    assert code == 2 and "no channel named 'nope'" in err and "team" in err


def test_config_validate_masks_every_channel_secret(tmp_path: Path, receivers: dict[str, Receiver],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config", "validate", str(write(tmp_path, receivers)))
    assert code == 0, err
    assert_no_secret(out, err)
    shown = yaml.safe_load(out)["alerts"]["channels"]
    assert shown[0]["url"].endswith("/****") and shown[2]["routing_key"] == "****"
    assert shown[3]["headers"] == {"X-Token": "****"}


@pytest.mark.parametrize(("alerts", "line"), [
    ({"channels": [{"name": "a", "type": "discord"}], "routes": [{"channels": ["a"]}]},
     "alerts.channels[0].url: is required for a discord channel"),
    ({"channels": [{"name": "a", "type": "pagerduty"}], "routes": [{"channels": ["a"]}]},
     "alerts.channels[0].routing_key: is required for a pagerduty channel"),
    ({"channels": [{"name": "a", "type": "discrod", "url": "https://x.test/h"}]},
     "alerts.channels[0].type: unknown value, did you mean 'discord'?"),
    ({"channels": [{"name": "a", "type": "slack", "url": "https://x.test/h"}], "routes": [{"channels": ["b"]}]},
     "alerts.routes[0].channels[0]: unknown channel (got 'b', expected one of a)"),
    ({"routes": [{"severity": ["urgent"], "channels": []}]}, "alerts.routes[0].severity[0]: unknown value"),
    ({"silences": [{"match": {"probe": "db"}, "starts": "tomorrow"}]}, "alerts.silences[0].starts: not an ISO 8601 time"),
    ({"silences": [{"match": {"host": "db"}}]}, "alerts.silences[0].match.host: unknown key"),
    ({"group_wait": "soon"}, "alerts.group_wait: not a duration"),
])
def test_bad_alerts_config_is_one_line_per_problem_exit_2(tmp_path: Path, alerts: dict[str, Any], line: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"alerts": alerts}))
    code, out, err = run(capsys, "config", "validate", str(path))
    assert code == 2 and out == ""
    assert any(ln.startswith(line) for ln in err.splitlines()), err


def test_bad_webhook_url_problem_never_echoes_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"alerts": {"channels": [{"name": "a", "type": "slack",
                                                             "url": f"hooks.slack.com/services/T/B/{SLACK_TOKEN}"}],
                                               "routes": [{"channels": ["a"]}]}}))
    code, _, err = run(capsys, "config", "validate", str(path))
    assert code == 2 and "alerts.channels[0].url: not an http(s) URL" in err
    assert_no_secret(err)


def test_alerts_lists_open_alerts_from_the_store_and_the_silences(tmp_path: Path, receivers: dict[str, Receiver],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write(tmp_path, receivers, silences=[
        {"match": {"probe": "rfid"}, "starts": "2020-01-01T00:00:00Z", "ends": "2999-01-01T00:00:00Z",
         "comment": "reader firmware"},
        {"match": {"probe": "old"}, "ends": "2020-01-02T00:00:00Z"}])
    from pulsetrace.validation import load_config

    cfg = load_config(cfg_path)
    engine = AlertEngine(cfg.alerts)
    a = alert("critical")
    engine.observe({a.key: a}, ("probe:",), a.started)
    engine.due(a.started + 60)
    AlertBook(LocalStore(cfg.store.path)).save(engine.open.values())
    code, out, _ = run(capsys, "alerts", "--json", "--config", str(cfg_path))
    report = json.loads(out)
    assert code == 0
    assert report["alerts"] == [{"key": "probe:db", "severity": "critical", "title": "db is DOWN", "source": "probe:db",
                                 "started": a.started, "value": "DOWN", "threshold": "UP",
                                 "channels": ["team", "ops", "oncall", "hook"], "state": "firing", "flaps": 0,
                                 "silenced": False}]
    assert report["silences"] == [{"match": {"probe": "rfid"}, "starts": "2020-01-01T00:00:00Z",
                                   "ends": "2999-01-01T00:00:00Z", "comment": "reader firmware", "active": True}]
    code, out, _ = run(capsys, "alerts", "--config", str(cfg_path))
    assert "CRITICAL  firing     db is DOWN" in out and "silence   active     probe=rfid" in out
