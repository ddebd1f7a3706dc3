"""The Lambda handler wrapper in-process: triggers, Lambda's defaults, and never failing an invocation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pulsetrace
from pulsetrace.aws_lambda import lambda_config, trigger_attributes
from pulsetrace.config.schema import CloudWatchConfig, Config, MetricsConfig, StoreConfig, TracingConfig

LAMBDA_ENV = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "ap-south-1",
              "AWS_LAMBDA_FUNCTION_VERSION": "7", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}


@pytest.mark.parametrize(("event", "expected"), [
    ({"httpMethod": "GET", "path": "/orders/7", "resource": "/orders/{id}", "requestContext": {"resourcePath": "/x"}},
     {"faas.trigger": "http", "aws.lambda.trigger": "api-gateway", "http.request.method": "GET",
      "url.path": "/orders/7", "http.route": "/orders/{id}"}),
    ({"routeKey": "POST /orders", "rawPath": "/orders", "requestContext": {"http": {"method": "POST", "path": "/orders"},
                                                                           "domainName": "abc.execute-api.x"}},
     {"faas.trigger": "http", "aws.lambda.trigger": "api-gateway", "http.request.method": "POST",
      "url.path": "/orders", "http.route": "/orders"}),
    ({"requestContext": {"http": {"method": "GET", "path": "/"}, "domainName": "abc.lambda-url.us-east-1.on.aws"}},
     {"faas.trigger": "http", "aws.lambda.trigger": "function-url", "http.request.method": "GET", "url.path": "/"}),
    ({"httpMethod": "GET", "path": "/h", "requestContext": {"elb": {"targetGroupArn": "arn"}}},
     {"faas.trigger": "http", "aws.lambda.trigger": "alb", "http.request.method": "GET", "url.path": "/h"}),
    ({"Records": [{"eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:r:1:q1"}, {"eventSource": "aws:sqs"}]},
     {"faas.trigger": "pubsub", "aws.lambda.trigger": "sqs", "messaging.system": "aws_sqs",
      "messaging.operation.type": "process", "messaging.destination.name": "q1", "messaging.batch.message_count": 2}),
    ({"Records": [{"EventSource": "aws:sns", "Sns": {"TopicArn": "arn:aws:sns:r:1:orders"}}]},
     {"faas.trigger": "pubsub", "aws.lambda.trigger": "sns", "messaging.system": "aws_sns",
      "messaging.operation.type": "process", "messaging.destination.name": "orders"}),
    ({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
     {"faas.trigger": "timer", "aws.lambda.trigger": "schedule"}),
    ({"source": "shop.orders", "detail-type": "OrderPlaced", "detail": {}},
     {"faas.trigger": "pubsub", "aws.lambda.trigger": "eventbridge", "aws.eventbridge.source": "shop.orders",
      "aws.eventbridge.detail_type": "OrderPlaced"}),
    ({"Records": [{"eventSource": "aws:s3"}]}, {"faas.trigger": "datasource", "aws.lambda.trigger": "s3"}),
    ({"anything": 1}, {"faas.trigger": "other"}),
    ("a string event", {"faas.trigger": "other"}),
])
def test_the_trigger_is_recognised_from_the_event_shape(event: Any, expected: dict[str, Any]) -> None:
    assert trigger_attributes(event) == expected


def test_without_a_config_file_lambda_gets_xray_udp_emf_on_stdout_and_its_function_name() -> None:
    cfg = lambda_config(Config(), LAMBDA_ENV)
    assert cfg.tracing.exporters == ["xray-udp"]
    assert cfg.metrics.cloudwatch.mode == "emf" and cfg.metrics.cloudwatch.emf_output == "stdout"
    assert cfg.service.name == "orders" and not cfg.health.enabled
    assert cfg.resource_attributes["cloud.platform"] == "aws_lambda"
    assert cfg.resource_attributes["faas.max_memory"] == str(512 * 1024 * 1024)


def test_a_config_file_keeps_its_exporters_and_a_relative_store_moves_under_tmp() -> None:
    cfg = Config(tracing=TracingConfig(exporters=["local", "otlp"]), store=StoreConfig(path=".pulsetrace"),
                 source="pulsetrace.yaml")
    out = lambda_config(cfg, LAMBDA_ENV)
    assert out.tracing.exporters == ["local", "otlp"] and out.store.path == "/tmp/.pulsetrace"
    assert out.metrics.cloudwatch.mode == "off"  # off stays off


@pytest.mark.parametrize(("mode", "output"), [("api", "stdout"), ("emf", "tcp://127.0.0.1:25888")])
def test_in_lambda_metrics_are_emf_on_stdout_never_api_calls(mode: str, output: str) -> None:
    cfg = Config(metrics=MetricsConfig(cloudwatch=CloudWatchConfig(mode=mode, emf_output=output)),  # type: ignore[arg-type]
                 source="pulsetrace.yaml")
    out = lambda_config(cfg, LAMBDA_ENV)
    assert (out.metrics.cloudwatch.mode, out.metrics.cloudwatch.emf_output) == ("emf", "stdout")


class Context:
    aws_request_id = "req-1"
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:orders"

    def get_remaining_time_in_millis(self) -> int:
        return 3000


def test_a_telemetry_failure_never_fails_the_invocation_and_the_handlers_exception_is_the_same_object(
        clean_agent: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.1:9")  # nobody listens: UDP drops
    boom = ValueError("the handler's own")

    @pulsetrace.lambda_handler
    def handler(event: Any, context: Any) -> Any:
        if event.get("fail"):
            raise boom
        return {"statusCode": 200}

    from pulsetrace import runtime

    agent = runtime.current()
    assert agent is not None

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("exporter on fire")

    monkeypatch.setattr(agent.provider, "force_flush", broken)
    assert handler({}, Context()) == {"statusCode": 200}
    with pytest.raises(ValueError) as raised:
        handler({"fail": True}, Context())
    assert raised.value is boom
    assert pulsetrace.lambda_handler(handler) is handler, "wrapping twice traces once"


def test_check_runs_every_probe_once_on_demand(tmp_path: Path) -> None:
    config = tmp_path / "pulsetrace.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'store'}}}\n"
        "health:\n  probes:\n"
        "    - {name: nowhere, type: http, url: 'http://127.0.0.1:9/status', timeout: 1s, critical: true}\n")
    details = pulsetrace.check(str(config))
    assert details["status"] == "DOWN"
    assert details["probes"]["nowhere"]["status"] == "DOWN"
