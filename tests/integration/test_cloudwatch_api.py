"""``metrics.cloudwatch.mode: api``: PutMetricData against moto in server mode (a real HTTP peer).

moto stores what it is sent and answers GetMetricStatistics from it, so sums, sample
counts and averages are checked end to end. moto never throttles, so a throttling
peer is a small loopback HTTP proxy in front of it that answers the first requests
with CloudWatch's ``Throttling`` error (in whichever wire protocol botocore chose)
and forwards the rest to moto: the client, retries and data path are all real.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config as BotoConfig

from pulsetrace.config.schema import Config
from pulsetrace.metrics.cloudwatch_api import MAX_DATA_PER_CALL, MAX_PAYLOAD_BYTES, PutMetricDataSink
from pulsetrace.metrics.datum import MetricDatum, value_datum
from pulsetrace.healthchecks.snapshot import snapshot_from_dict
from pulsetrace.metrics.health_metrics import publish_health
from pulsetrace.metrics.publisher import MetricsPublisher
from pulsetrace.metrics.request_metrics import build_recorder
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping
from tests.servers import AWS_TEST_ENV, MotoServer, free_port

DIMS = (("Service", "shop-api"), ("Environment", "uat"))


def api_cfg(endpoint: str, namespace: str, **cloudwatch: Any) -> Config:
    return config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                                "metrics": {"cloudwatch": {"mode": "api", "namespace": namespace,
                                                           "endpoint_url": endpoint, "region": "us-east-1",
                                                           **cloudwatch}}}, {})


def client(endpoint: str, **config: Any) -> Any:
    return boto3.session.Session().client("cloudwatch", region_name="us-east-1", endpoint_url=endpoint,
                                          config=BotoConfig(**config))


def stats(endpoint: str, namespace: str, metric: str, dims: dict[str, str], *statistics: str) -> dict[str, float]:
    now = dt.datetime.now(dt.timezone.utc)
    points = client(endpoint).get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - dt.timedelta(minutes=30), EndTime=now + dt.timedelta(minutes=5), Period=3600,
        Statistics=list(statistics))["Datapoints"]
    out: dict[str, float] = {}
    for p in points:
        for s in statistics:
            out[s] = out.get(s, 0.0) + float(p[s]) if s in ("Sum", "SampleCount") else float(p[s])
    return out


@pytest.fixture
def namespace() -> str:
    return f"PulseTraceTest/{uuid.uuid4().hex[:8]}"


def base(**extra: str) -> dict[str, str]:
    return {"Service": "shop-api", "Environment": "uat", **extra}


def test_known_traffic_gives_the_expected_sums_and_averages(aws_env: dict[str, str], moto_server: MotoServer,
                                                            namespace: str) -> None:
    metrics = SelfMetrics()
    cfg = api_cfg(moto_server.url, namespace)
    rec = build_recorder(cfg, metrics)
    assert rec is not None and rec.publisher is not None
    latencies = [5.0 + (i % 40) * 2.5 for i in range(300)]
    for i, ms in enumerate(latencies):
        rec.record("POST /payments", "", ms, error=i < 30, fault=False)
    for _ in range(12):
        rec.record("payment.create", "critical", 40.0, error=False, fault=True)
    now = time.time()
    publish_health(snapshot_from_dict(
        {"status": "UP", "probes": {"db": {"status": "UP", "latency_ms": 3.5, "last_checked": now,
                                           "sla": {"windows": {"30d": {"availability": 99.95,
                                                                       "budget_remaining": 0.5}}}}}}),
                   rec.publisher, cfg)
    assert rec.flush(10.0), metrics.counters()
    op = base(Operation="POST /payments")
    assert stats(moto_server.url, namespace, "Requests", op, "Sum") == {"Sum": 300}
    assert stats(moto_server.url, namespace, "Errors", op, "Sum") == {"Sum": 30}
    assert stats(moto_server.url, namespace, "Faults", op, "Sum") == {"Sum": 0}
    lat = stats(moto_server.url, namespace, "Latency", op, "SampleCount", "Average", "Sum")
    assert lat["SampleCount"] == 300
    assert lat["Sum"] == pytest.approx(sum(latencies), rel=1e-6)
    assert lat["Average"] == pytest.approx(sum(latencies) / 300, rel=1e-6)
    assert stats(moto_server.url, namespace, "Faults", base(Operation="payment.create"), "Sum") == {"Sum": 12}
    assert stats(moto_server.url, namespace, "Requests", base(Tier="critical"), "Sum") == {"Sum": 312}
    # (The service-wide series is not checked here: moto matches dimensions as a subset, CloudWatch exactly.)
    assert stats(moto_server.url, namespace, "Availability", base(Probe="db", Window="30d"), "Minimum") == {
        "Minimum": pytest.approx(99.95)}
    assert stats(moto_server.url, namespace, "ProbeUp", base(Probe="db"), "Average") == {"Average": 1.0}
    assert metrics.counter("metrics_dropped") == 0
    assert metrics.counter("metrics_published", "api") > 0
    rec.shutdown(2.0)


def test_a_5000_datum_flush_is_split_into_compliant_calls(aws_env: dict[str, str], moto_server: MotoServer,
                                                          namespace: str) -> None:
    # botocore gzips large PutMetricData bodies and moto's server fails to read them back, so this
    # client sends them plain (which is also the size the 1 MB limit is checked against here).
    cw = client(moto_server.url, disable_request_compression=True)
    calls: list[dict[str, int]] = []

    def on_params(params: dict[str, Any], **_: Any) -> None:
        data = params["MetricData"]
        calls.append({"data": len(data), "dims": max(len(d["Dimensions"]) for d in data),
                      "values": max(len(d.get("Values", ())) for d in data)})

    def on_send(request: Any, **_: Any) -> None:
        calls[-1]["bytes"] = len(request.body or b"")

    cw.meta.events.register("provide-client-params.cloudwatch.PutMetricData", on_params)
    cw.meta.events.register("before-send.cloudwatch.PutMetricData", on_send)
    metrics = SelfMetrics()
    sink = PutMetricDataSink(api_cfg(moto_server.url, namespace), metrics, client=cw)
    now = time.time()
    data: list[MetricDatum] = [value_datum(f"Count{i}", "Count", DIMS + (("Operation", f"op{i % 40}"),), now, i)
                               for i in range(4600)]
    # Wide distributions: 400 × 150 values reach the payload limit before the 1,000-datum limit.
    for i in range(400):
        values = tuple(float(v) + i / 1000 for v in range(1, 151))
        data.append(MetricDatum(f"Dist{i}", "Milliseconds", DIMS, now, count=150.0, total=sum(values),
                                minimum=values[0], maximum=values[-1], values=values, counts=(1.0,) * 150))
    assert len(data) == 5000
    started = time.monotonic()
    left = sink.send(data, time.monotonic() + 120)
    elapsed = time.monotonic() - started
    assert list(left) == []
    assert sum(c["data"] for c in calls) == 5000
    assert len(calls) >= 10, (calls, elapsed)
    assert any(c["data"] == MAX_DATA_PER_CALL for c in calls)  # the count limit binds for small data
    # The size limit cuts the wide ones (estimated for the query protocol, the most verbose encoding).
    wide = [c for c in calls if c["values"] == 150]
    assert len(wide) >= 6 and all(c["data"] <= 700 for c in wide)
    for c in calls:
        assert c["data"] <= MAX_DATA_PER_CALL
        assert c["bytes"] <= MAX_PAYLOAD_BYTES, c
        assert c["dims"] <= 30 and c["values"] <= 150
    assert metrics.counter("metrics_published", "api") == 5000
    # moto's list_metrics is too slow for this many data points: sample the first and last of each kind.
    assert stats(moto_server.url, namespace, "Count0", base(Operation="op0"), "Sum") == {"Sum": 0}
    assert stats(moto_server.url, namespace, "Count4599", base(Operation="op39"), "Sum") == {"Sum": 4599}
    assert stats(moto_server.url, namespace, "Dist0", base(), "SampleCount") == {"SampleCount": 150}
    assert stats(moto_server.url, namespace, "Dist399", base(), "SampleCount") == {"SampleCount": 150}


# -- a throttling peer --------------------------------------------------------------------------------------------


def _cbor_text(s: str) -> bytes:
    raw = s.encode()
    head = bytes([0x60 + len(raw)]) if len(raw) < 24 else bytes([0x78, len(raw)])
    return head + raw


class ThrottlingProxy:
    """Answers the first ``throttle`` requests with ``Throttling``, forwards the others to moto.

    ``delay`` holds each forwarded request that long before moto sees it (a slow endpoint).
    """

    def __init__(self, upstream: str, throttle: int, port: int = 0) -> None:
        self.throttle = throttle
        self.delay = 0.0
        self.throttled = 0
        self.forwarded = 0
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.throttle > 0:
                    proxy.throttle -= 1
                    proxy.throttled += 1
                    self._throttle()
                    return
                time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                proxy.forwarded += 1
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _throttle(self) -> None:
                # The error in the protocol the request used (botocore picks CBOR, JSON or query).
                if self.headers.get("smithy-protocol") == "rpc-v2-cbor":
                    body = (b"\xa2" + _cbor_text("__type") + _cbor_text("com.amazonaws.cloudwatch#Throttling")
                            + _cbor_text("message") + _cbor_text("Rate exceeded"))
                    ctype = "application/cbor"
                elif self.headers.get("X-Amz-Target"):
                    body = b'{"__type":"Throttling","message":"Rate exceeded"}'
                    ctype = "application/x-amz-json-1.0"
                else:
                    body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                            b"<Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>")
                    ctype = "text/xml"
                self.send_response(400)
                self.send_header("Content-Type", ctype)
                self.send_header("x-amzn-query-error", "Throttling;Sender")
                self.send_header("smithy-protocol", "rpc-v2-cbor")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[ThrottlingProxy]:
    p = ThrottlingProxy(moto_server.url, throttle=0)
    yield p
    p.stop()


def test_throttling_is_retried_with_backoff_and_nothing_is_lost(aws_env: dict[str, str], moto_server: MotoServer,
                                                               proxy: ThrottlingProxy, namespace: str) -> None:
    proxy.throttle = 2
    metrics = SelfMetrics()
    rec = build_recorder(api_cfg(proxy.url, namespace), metrics)
    assert rec is not None
    for i in range(300):
        rec.record("POST /payments", "", 10.0, i < 30, False)
    assert rec.flush(10.0)
    assert proxy.throttled == 2 and proxy.forwarded >= 1
    assert metrics.counter("metrics_retries", "throttled") == 2
    assert metrics.counter("metrics_dropped") == 0
    op = base(Operation="POST /payments")
    assert stats(moto_server.url, namespace, "Requests", op, "Sum") == {"Sum": 300}
    assert stats(moto_server.url, namespace, "Errors", op, "Sum") == {"Sum": 30}
    rec.shutdown(1.0)


def test_throttled_past_the_flush_deadline_the_data_wait_for_the_next_flush(
        aws_env: dict[str, str], moto_server: MotoServer, proxy: ThrottlingProxy, namespace: str) -> None:
    metrics = SelfMetrics()
    rec = build_recorder(api_cfg(proxy.url, namespace), metrics)
    assert rec is not None and rec.publisher is not None
    # The first call creates the client (importing boto3) within its flush's deadline: done here, so
    # that the short flush below is cut short by throttling, not by that.
    assert rec.flush(10.0)
    proxy.throttle = 1000
    for _ in range(50):
        rec.record("GET /catalog", "", 3.0, False, False)
    started = time.monotonic()
    assert rec.flush(1.5) is False
    assert time.monotonic() - started < 1.5 + 1.0
    assert rec.publisher.pending() > 0
    assert metrics.counter("metrics_send_failures", "throttled") == 1
    proxy.throttle = 0
    for _ in range(25):
        rec.record("GET /catalog", "", 3.0, False, False)
    assert rec.flush(10.0)
    assert stats(moto_server.url, namespace, "Requests", base(Operation="GET /catalog"), "Sum") == {"Sum": 75}
    assert metrics.counter("metrics_dropped") == 0
    rec.shutdown(1.0)


def test_with_the_endpoint_down_the_buffer_stays_bounded_drops_are_counted_and_the_rest_arrives_later(
        aws_env: dict[str, str], moto_server: MotoServer, namespace: str) -> None:
    port = free_port()
    metrics = SelfMetrics()
    cfg = api_cfg(f"http://127.0.0.1:{port}", namespace, max_buffer=100, timeout="500ms")
    # The buffered batch is large enough for botocore to gzip it, which moto's server cannot read: the sink
    # gets a client that sends plain bodies (everything else is what build_publisher would build).
    plain = client(f"http://127.0.0.1:{port}", disable_request_compression=True, connect_timeout=0.5,
                   read_timeout=2, retries={"total_max_attempts": 1})
    publisher = MetricsPublisher(PutMetricDataSink(cfg, metrics, client=plain), metrics, interval=60,
                                 max_buffer=cfg.metrics.cloudwatch.max_buffer)
    now = time.time()
    for round_ in range(3):
        publisher.offer([value_datum(f"M{i}", "Count", DIMS, now, round_ + 1) for i in range(60)])
        started = time.monotonic()
        assert publisher.flush(5.0) is False
        assert time.monotonic() - started < 3.0
        assert publisher.pending() <= 100
    assert publisher.pending() == 100
    assert metrics.counter("metrics_dropped", "buffer_full") == 80
    # One call found the endpoint down; the publisher then backs off (one interval, jittered) and the
    # next two flushes only collect: a dead endpoint is not dialled every flush by every process.
    assert metrics.counter("metrics_send_failures", "unreachable") == 1
    assert metrics.counter("metrics_api_calls") == 1
    assert metrics.counter("metrics_backoffs") == 1
    assert 30.0 <= publisher.backoff() <= 60.0
    back = ThrottlingProxy(moto_server.url, throttle=0, port=port)  # the endpoint comes back
    try:
        # An explicit flush (shutdown, a Lambda invocation's end) does not wait out the back-off: a
        # 20-datum probe goes first, then the rest.
        assert publisher.flush(10.0, force=True)
        assert publisher.backoff() == 0.0
        assert metrics.counter("metrics_api_calls") >= 3
        # The newest 100 survived: M20..M59 of round 2 and all of round 3.
        assert stats(moto_server.url, namespace, "M59", base(), "Sum", "SampleCount") == {"Sum": 5, "SampleCount": 2}
        assert stats(moto_server.url, namespace, "M0", base(), "Sum") == {"Sum": 3}
    finally:
        publisher.shutdown(0.5)
        back.stop()


class NeverReads:
    """A TCP endpoint that accepts connections and never reads a byte nor answers (a wedged load balancer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        for c in self.held:
            c.close()


def test_shutdown_against_an_endpoint_that_never_answers_keeps_to_its_deadline(
        monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    stuck = NeverReads()
    monkeypatch.setenv("AWS_ENDPOINT_URL", stuck.url)
    metrics = SelfMetrics()
    try:
        # The per-call I/O timeout (1.5 s) is longer than the shutdown budget: the budget must win.
        rec = build_recorder(api_cfg(stuck.url, namespace, timeout="1.5s"), metrics)
        assert rec is not None and rec.publisher is not None
        rec.start()
        # A first flush creates the client (importing boto3 can take longer than the budget on a busy
        # machine) and meets the endpoint: it gives up at botocore's read timeout.
        assert rec.flush(5.0) is False
        assert stuck.held and metrics.counter("metrics_send_failures", "unreachable") == 1
        for i in range(40):
            rec.record("POST /payments", "", 12.0, i % 10 == 0, False)
        started = time.monotonic()
        rec.shutdown(0.75)
        took = time.monotonic() - started
        assert took < 0.75 + 0.5, f"shutdown(0.75) took {took:.2f} s"
        assert metrics.counter("metrics_send_failures", "timeout") == 1
        assert metrics.counter("metrics_published") == 0
        assert metrics.counter("metrics_dropped", "shutdown") > 0
        assert rec.publisher.pending() == metrics.counter("metrics_dropped", "shutdown")
    finally:
        stuck.stop()


def test_a_call_abandoned_at_the_deadline_that_went_through_later_is_not_sent_twice(
        aws_env: dict[str, str], moto_server: MotoServer, proxy: ThrottlingProxy, namespace: str) -> None:
    metrics = SelfMetrics()
    rec = build_recorder(api_cfg(proxy.url, namespace, timeout="5s"), metrics)
    assert rec is not None and rec.publisher is not None
    assert rec.flush(10.0)  # the client exists (boto3 imported) before the slow call
    proxy.delay = 1.0
    for _ in range(40):
        rec.record("GET /slow", "", 3.0, False, False)
    started = time.monotonic()
    assert rec.flush(0.4) is False  # abandoned while the proxy holds it; moto gets it a moment later
    assert time.monotonic() - started < 0.4 + 0.3
    assert metrics.counter("metrics_send_failures", "timeout") == 1
    proxy.delay = 0.0
    rec.record("GET /slow", "", 3.0, False, False)
    assert rec.flush(10.0)
    assert stats(moto_server.url, namespace, "Requests", base(Operation="GET /slow"), "Sum") == {"Sum": 41}
    assert rec.publisher.pending() == 0
    rec.shutdown(1.0)
