"""AWS-native paths: the X-Ray SDK bridge against the X-Ray SDK itself, and a Lambda invocation's overhead.

1. **X-Ray SDK capture.** The same application code, written against the X-Ray SDK: a segment
   (``begin_segment``) holding 10 calls of an ``@xray_recorder.capture`` function, each putting
   an annotation. Ours: the code runs with pulsetrace's bridge active, so the calls are
   OpenTelemetry spans through pulsetrace's pipeline (tiered sampler at 100 %, export thread,
   X-Ray translation, UDP to a loopback socket). Peer: the X-Ray SDK's own recorder, sampling
   everything, serialising the segment and sending it over its UDP emitter to a loopback socket
   when it ends. Wall time per segment, ours including a flush of the pipeline at the end of each
   round (so the export thread's work is paid for). Goal ≤ 1×.
2. **Lambda, warm.** ``@pulsetrace.lambda_handler`` around a small API Gateway handler (parse the
   body, answer JSON) against the same handler bare, called in-process with a Lambda context: the
   invocation span, its attributes, the flush of spans (X-Ray UDP) and of the metrics (EMF) before
   returning. Reported, with the added time per invocation.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util._once import Once

from benchmarks.harness import Comparison, interleaved


def _reset_global() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


class _Sink:
    """A loopback UDP socket drained by a thread (the X-Ray daemon's port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65535)
                self.count += 1
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


ALL = {"tiers": {t: {"rate": 1.0, "reservoir": 0} for t in ("critical", "business", "general", "health")},
       "keep_errors": False, "slow_ms": 0}


def _request(recorder: Any, work: Any, calls: int) -> None:
    recorder.begin_segment("orders-api")
    for i in range(calls):
        work(i)
    recorder.end_segment()


def capture(rounds: int, n: int) -> Comparison:
    import aws_xray_sdk.core as xray_core
    from aws_xray_sdk.core.recorder import AWSXRayRecorder

    from pulsetrace.instrumentation.xray_sdk_bridge import activate
    from pulsetrace.runtime import build_agent
    from pulsetrace.validation import config_from_mapping

    sink = _Sink()
    cfg = config_from_mapping({"service": {"name": "orders-api"}, "tracing": {
        "exporters": ["xray-udp"], "xray": {"daemon_address": sink.address}, "sampling": ALL}}, env={})
    agent = build_agent(cfg)
    recorder = AWSXRayRecorder()
    recorder.configure(service="orders-api", daemon_address=sink.address, sampling=False,
                       context_missing="LOG_ERROR")

    @recorder.capture("load_order")
    def work(i: int) -> None:
        recorder.put_annotation("order_id", i)

    calls = 10

    def ours() -> float:
        undo = activate(xray_core, agent.provider, lambda: [])
        try:
            start = time.perf_counter()
            for _ in range(n):
                _request(recorder, work, calls)
            agent.provider.force_flush(30_000)
            return (time.perf_counter() - start) / n
        finally:
            undo()
            recorder.configure(sampling=False, daemon_address=sink.address)  # the SDK's own emitter again

    def peer() -> float:
        start = time.perf_counter()
        for _ in range(n):
            _request(recorder, work, calls)
        return (time.perf_counter() - start) / n

    try:
        o, p = interleaved(rounds, ours, peer)
    finally:
        agent.pipeline.shutdown(2.0)
        sink.close()
    return Comparison("X-Ray SDK capture: a segment with 10 captured calls", "SDK calls through the pulsetrace bridge",
                      "X-Ray SDK recorder + UDP emitter", "s", o, p, goal=("<=", 1.0),
                      note="ours includes the export thread's X-Ray encoding and UDP send (flushed each round)")


class _Context:
    function_name = "orders"
    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def lambda_warm(rounds: int, n: int) -> Comparison:
    from pulsetrace import runtime
    from pulsetrace.aws_lambda import lambda_config, lambda_handler
    from pulsetrace.validation import config_from_mapping

    sink = _Sink()
    env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in (*env, "_X_AMZN_TRACE_ID")}
    os.environ.update(env)
    os.environ["_X_AMZN_TRACE_ID"] = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    cfg = config_from_mapping({"tracing": {"exporters": ["xray-udp"], "xray": {"daemon_address": sink.address}},
                               "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{os.devnull}"}}},
                              env={}, source="bench.yaml")
    _reset_global()
    runtime.start(config=lambda_config(cfg, env), instrument=False)
    event = {"resource": "/orders", "path": "/orders", "httpMethod": "POST", "body": json.dumps({"sku": "A1", "qty": 2}),
             "requestContext": {"resourcePath": "/orders", "httpMethod": "POST"}}

    def bare(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        return {"statusCode": 201, "body": json.dumps({"order": order, "total": 499.0 * order["qty"]})}

    traced = lambda_handler(bare)
    ctx = _Context()

    def measure(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn(event, ctx)
        return (time.perf_counter() - start) / n

    try:
        o, p = interleaved(rounds, lambda: measure(traced), lambda: measure(bare))
    finally:
        runtime.shutdown(2.0)
        _reset_global()
        trace.set_tracer_provider(TracerProvider(shutdown_on_exit=False))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sink.close()
    import statistics

    added = (statistics.median(o) - statistics.median(p)) * 1e6
    return Comparison("Lambda warm invocation", "@pulsetrace.lambda_handler (span, flush to X-Ray UDP + EMF)",
                      "the bare handler", "s", o, p,
                      note=f"adds {added:.0f} µs per warm invocation (the flush before returning is most of it)")


def run(quick: bool) -> list[Comparison]:
    rounds, n = (3, 200) if quick else (9, 1_000)
    return [capture(rounds, n), lambda_warm(rounds, n)]
