"""Lambda functions under pulsetrace, run by AWS's runtime interface client (awslambdaric).

The function process is the real runtime client, started the way Lambda's bootstrap starts it,
against a local Runtime API (tests/lambda_runtime_api.py: AWS's emulator needs a Go toolchain this
machine does not have). Its spans go to a real UDP socket in place of the X-Ray daemon, its
metrics to its stdout as EMF. Both are read when the runtime asks for the next event, so what the
tests see there was sent before the invocation ended.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service_runner import wait_for
from tests.lambda_runtime_api import Invocation, RuntimeApi

APPS = Path(__file__).resolve().parent / "apps"
TRACE_ROOT = "1-5759e988-bd862e3fe1be46a994272793"
LAMBDA_SEGMENT = "53995c3f42cd8ad8"  # the AWS::Lambda::Function segment Lambda itself records


def api_gateway_event(body: str = "{}") -> dict[str, Any]:
    return {"resource": "/orders", "path": "/orders", "httpMethod": "POST", "headers": {"content-type": "json"},
            "requestContext": {"resourcePath": "/orders", "httpMethod": "POST", "stage": "prod"}, "body": body}


def sqs_event() -> dict[str, Any]:
    return {"Records": [{"messageId": "m1", "body": "{}", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders-queue"}]}


@dataclass
class Function:
    """One function process and what it sent, split at each request for the next event."""

    api: RuntimeApi
    proc: subprocess.Popen[bytes]
    udp: socket.socket
    #: For each ``next`` request (0 = the first, before any invocation): the X-Ray documents and
    #: stdout lines received up to that moment.
    at_next: list[tuple[list[dict[str, Any]], list[str]]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    _partial: bytes = b""

    def drain(self) -> None:
        while True:
            try:
                data = self.udp.recv(65535)
            except BlockingIOError:
                break
            header, _, body = data.partition(b"\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            self.documents.append(json.loads(body))
        assert self.proc.stdout is not None
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        self.stdout.extend(line.decode("utf-8", "replace") for line in lines)

    def on_next(self, index: int) -> None:
        self.drain()
        self.at_next.append((list(self.documents), list(self.stdout)))


def _start(tmp_path: Path, handler: str, *, wrapper: bool = False) -> Iterator[Function]:
    api = RuntimeApi()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_", "_X_AMZN"))}
    env.update({
        "AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_FUNCTION_NAME": "orders",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/03/[$LATEST]abc", "AWS_REGION": "us-east-1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{udp.getsockname()[1]}", "LAMBDA_TASK_ROOT": str(APPS),
        "_HANDLER": handler, "PYTHONUNBUFFERED": "1",
    })
    # What Lambda's bootstrap does: start the runtime client with the handler named in _HANDLER,
    # behind AWS_LAMBDA_EXEC_WRAPPER when the function sets one.
    command = ["sh", "-c", 'exec "$0" -m awslambdaric "$_HANDLER"', sys.executable]
    if wrapper:
        command = [str(files("pulsetrace.boot") / "lambda-exec-wrapper"), *command]
    proc = subprocess.Popen(command, cwd=APPS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETFL, fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETFL) | os.O_NONBLOCK)
    fn = Function(api=api, proc=proc, udp=udp)
    api.on_next = fn.on_next
    api.start()
    try:
        yield fn
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        api.stop()
        udp.close()
        assert b"Traceback" not in err or b"CardDeclined" in err, err.decode(errors="replace")


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[Function]:
    yield from _start(tmp_path, "lambda_orders.handler")


def _value(doc: Any, key: str) -> Any:
    """The value of ``key`` anywhere in an X-Ray document (annotations, metadata, blocks)."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for v in doc.values():
            found = _value(v, key)
            if found is not None:
                return found
    if isinstance(doc, list):
        for v in doc:
            found = _value(v, key)
            if found is not None:
                return found
    return None


def _invocation_segment(docs: list[dict[str, Any]], request_id: str) -> dict[str, Any] | None:
    for doc in docs:
        if _value(doc, "faas.invocation_id") == request_id:
            return doc
    return None


def _emf(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("{") and '"_aws"' in line:
            out.append(json.loads(line))
    return out


def test_each_invocation_is_flushed_before_the_next_is_asked_for_under_lambdas_own_segment(
        orders: Function) -> None:
    first = orders.api.invoke(Invocation(api_gateway_event(),
                                         trace_header=f"Root={TRACE_ROOT};Parent={LAMBDA_SEGMENT};Sampled=1"))
    assert first.done.wait(60), "the first invocation never completed"
    second = orders.api.invoke(Invocation(sqs_event(), trace_header=(
        "Root=1-5759e988-00000000000000000000aaaa;Parent=1111222233334444;Sampled=1")))
    assert second.done.wait(60)
    assert wait_for(lambda: len(orders.at_next) >= 3, timeout=30)
    assert first.response == {"statusCode": 201, "body": '{"order": 42}'}  # the handler's answer, untouched

    docs_before_second, stdout_before_second = orders.at_next[1]
    segment = _invocation_segment(docs_before_second, first.request_id)
    assert segment is not None, f"invocation 1 not flushed before the next event was asked for: {docs_before_second}"
    # The function's span hangs under Lambda's own segment: same trace, parent = Lambda's segment id.
    assert segment["trace_id"] == TRACE_ROOT and segment["parent_id"] == LAMBDA_SEGMENT
    assert segment["origin"] == "AWS::Lambda::Function" and segment["name"] == "orders"
    assert _value(segment, "faas.coldstart") is True
    assert _value(segment, "faas.trigger") == "http" and _value(segment, "aws.lambda.trigger") == "api-gateway"
    assert segment["annotations"]["business_operation"] == "order.create"  # searchable in the X-Ray console
    assert segment["http"]["response"]["status"] == 201
    assert [s["name"] for s in segment["subsegments"]] == ["order.validate"]  # the handler's own spans inside
    emf = _emf(stdout_before_second)
    assert emf, f"no EMF on stdout before the next event: {stdout_before_second}"
    assert any(d.get("Operation") == "order.create" for d in emf), emf

    docs_before_third, _ = orders.at_next[2]
    seg2 = _invocation_segment(docs_before_third, second.request_id)
    assert seg2 is not None
    assert seg2["trace_id"] == "1-5759e988-00000000000000000000aaaa" and seg2["parent_id"] == "1111222233334444"
    assert _value(seg2, "faas.coldstart") is False, "cold start only on the sandbox's first invocation"
    assert _value(seg2, "aws.lambda.trigger") == "sqs" and _value(seg2, "messaging.destination.name") == "orders-queue"


def test_an_exception_is_reported_as_a_fault_and_reaches_lambda_unchanged(orders: Function) -> None:
    failed = orders.api.invoke(Invocation(api_gateway_event("decline"),
                                          trace_header=f"Root={TRACE_ROOT};Parent={LAMBDA_SEGMENT};Sampled=1"))
    assert failed.done.wait(60)
    assert failed.error is not None
    assert failed.error["errorType"] == "CardDeclined"
    assert failed.error["errorMessage"] == "card declined for order 42"
    assert any("raise CardDeclined" in line for line in failed.error.get("stackTrace", [])), failed.error
    assert wait_for(lambda: len(orders.at_next) >= 2, timeout=30)
    segment = _invocation_segment(orders.at_next[1][0], failed.request_id)
    assert segment is not None, "the failed invocation was not flushed before the next event"
    assert segment.get("fault") is True
    exceptions = segment["cause"]["exceptions"]
    assert exceptions[0]["type"].endswith("CardDeclined") and "card declined" in exceptions[0]["message"]


def test_a_trace_lambda_did_not_sample_is_not_sent(orders: Function) -> None:
    inv = orders.api.invoke(Invocation(api_gateway_event(), trace_header=(
        f"Root={TRACE_ROOT};Parent={LAMBDA_SEGMENT};Sampled=0")))
    assert inv.done.wait(60) and inv.response["statusCode"] == 201
    assert wait_for(lambda: len(orders.at_next) >= 2, timeout=30)
    assert _invocation_segment(orders.at_next[1][0], inv.request_id) is None
    assert _emf(orders.at_next[1][1]), "the metrics count every invocation, sampled or not"


def test_the_exec_wrapper_traces_an_undecorated_handler(tmp_path: Path) -> None:
    for fn in _start(tmp_path, "lambda_orders.plain", wrapper=True):
        inv = fn.api.invoke(Invocation(sqs_event(), trace_header=f"Root={TRACE_ROOT};Parent={LAMBDA_SEGMENT};Sampled=1"))
        assert inv.done.wait(60) and inv.response == {"statusCode": 200, "body": "plain"}
        assert wait_for(lambda: len(fn.at_next) >= 2, timeout=30)
        segment = _invocation_segment(fn.at_next[1][0], inv.request_id)
        assert segment is not None and segment["parent_id"] == LAMBDA_SEGMENT
        assert _value(segment, "faas.coldstart") is True
