"""Every exporter's destination down, under ``pulsetrace run`` with traffic: what users are promised.

For each destination (OTLP port closed; an OTLP endpoint that accepts TCP and never
reads; the X-Ray daemon's UDP port closed; the X-Ray API and the CloudWatch API at a
closed port; the CloudWatch agent's EMF TCP port accepting and never reading) a service with the destination down is compared with the same service
whose destination is up, both serving the same route at the same time:

- request latency: steady load (``wrk -c1`` with 2 ms between requests, a few hundred
  requests a second, so the two shared cores keep headroom), 4 interleaved rounds of
  1.5 s per service (≥ 400 requests in all, in practice ~2,000); the median of the
  rounds' p99 with the destination down is within 1.2× of the healthy one's plus an
  absolute slack of 5 ms (a 3 ms p99 moves by a few ms when another process runs on a
  shared core), far below what a blocking exporter costs (its timeout: 2 s for OTLP);
- the loss is counted and visible: ``pulsetrace status --json`` (the store's
  ``agent_counters``) shows ``spans_dropped`` with ``export_failed:<exporter>`` or
  ``backlog:<exporter>``, and the local store, configured alongside, still receives
  every span (one exporter's outage does not stop the others);
- recovery with no restart: when the destination comes back on the same port, spans
  of new requests arrive there;
- with the destination down again, SIGTERM-to-exit stays under 2.5 s (the agent's
  ``shutdown_timeout`` of 1.5 s plus the app's own shutdown and interpreter exit).

Memory under an outage is in ``test_exporter_memory.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.integration.service_runner import Service, all_spans, wait_for, write_config
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.support import (
    stop_tree,
    agent_tracebacks,
    Blackhole,
    UdpSink,
    dropped,
    median_p99,
    p99_rounds,
    start_rel_service,
    total_requests,
)
from tests.servers import AWS_TEST_ENV, free_port

P99_FACTOR = 1.2
# 1.2x plus an absolute 15 ms: on a shared 2-core CI box a p99 of a few hundred requests moves by
# ~10 ms between two healthy runs; an exporter blocking the request path costs 100 ms and more.
P99_SLACK_S = 0.015
EXIT_BOUND_S = 2.5
#: moto (5.x) answers 500 to the gzip-compressed bodies botocore sends for PutMetricData over
#: 10 KB (CloudWatch itself takes them): after an outage the buffered data is that large, so
#: the services here send uncompressed bodies. Nothing else changes.
AWS_ENV = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": "", "AWS_DISABLE_REQUEST_COMPRESSION": "true"}


class MotoOnPort:
    """moto in server mode, in its own process, on a given port (the AWS APIs "coming back" where they were).

    Its own process: an in-process moto shares the pytest process's GIL with the other
    servers of the test, and under load its answers stalled for minutes.
    """

    def __init__(self, port: int) -> None:
        from tests.servers import wait_port

        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, 30)
        except TimeoutError:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            # Generous: moto (pure Python, one process) parses the agent's buffered
                            # PutMetricData bodies after an outage, and on a busy 2-core machine a
                            # read of ours can wait behind them for several seconds.
                            config=Config(connect_timeout=2, read_timeout=20, retries={"max_attempts": 1}))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Destination:
    """How one kind of destination is configured, made to fail, brought back and observed."""

    name: str
    exporter: str
    #: The config extras pointing the agent at ``port``.
    config: Callable[[int], dict[str, Any]]
    #: Makes ``port`` fail the way this fault does; returns something with ``close()`` (or None).
    break_: Callable[[int], Any]
    #: Serves ``port`` for real; returns the server (with ``close()``).
    serve: Callable[[int], Any]
    #: Whether data sent after ``marker`` reached the served destination.
    arrived: Callable[[Any, Path, str], bool]
    #: The drop reasons that prove the loss was counted.
    drop_reasons: tuple[str, ...]
    #: For metric destinations (no span drop reasons): whether failed sends must show during the outage.
    #: An EMF TCP peer that never reads fails no write for a long while: the kernel's socket buffers
    #: take megabytes first, so nothing is lost (nor counted) within the test's traffic.
    send_failures_counted: bool = True


def _otlp_config(port: int) -> dict[str, Any]:
    return {"tracing": {"exporters": ["otlp", "local"], "otlp": {"endpoint": f"http://127.0.0.1:{port}"}}}


def _otlp_serve(port: int) -> Any:
    receiver = OtlpReceiver(port).start()
    receiver.close = receiver.stop  # type: ignore[attr-defined]
    return receiver


def _otlp_arrived(receiver: Any, store: Path, marker: str) -> bool:
    return any(marker in str(s.attributes.get("url.query", "")) for s in receiver.spans())


def _udp_config(port: int) -> dict[str, Any]:
    return {"tracing": {"exporters": ["xray-udp", "local"], "xray": {"daemon_address": f"127.0.0.1:{port}"}}}


def _udp_arrived(sink: Any, store: Path, marker: str) -> bool:
    return any(marker.encode() in d for d in sink.datagrams)


def _marker_trace_ids(store: Path, marker: str) -> list[str]:
    return [s.trace_id for s in all_spans(store) if s.kind == "server" and marker in str(s.attributes.get("url.query"))]


def _xray_api_config(port: int) -> dict[str, Any]:
    return {"tracing": {"exporters": ["xray-api", "local"],
                        "xray": {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1"}}}


def _xray_api_arrived(moto: MotoOnPort, store: Path, marker: str) -> bool:
    from pulsetrace.xray.segments import xray_trace_id
    from tests.integration.test_xray_transport import stored_documents

    ids = [xray_trace_id(t) for t in _marker_trace_ids(store, marker)]
    return bool(ids) and bool(stored_documents(moto.client("xray"), ids))


def _cloudwatch_config(port: int) -> dict[str, Any]:
    return {"tracing": {"exporters": ["local"]},
            "metrics": {"cloudwatch": {"mode": "api", "endpoint_url": f"http://127.0.0.1:{port}",
                                       "region": "us-east-1", "interval": "1s", "timeout": "1s"}}}


def _cloudwatch_arrived(moto: MotoOnPort, store: Path, marker: str) -> bool:
    metrics = moto.client("cloudwatch").list_metrics(Namespace="PulseTrace")["Metrics"]
    return bool(metrics)


def _emf_tcp_config(port: int) -> dict[str, Any]:
    return {"tracing": {"exporters": ["local"]},
            "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"tcp://127.0.0.1:{port}",
                                       "interval": "1s", "timeout": "1s"}}}


def _emf_tcp_serve(port: int) -> Any:
    from tests.agent.metrics.test_emf_outputs import TcpCollector

    collector = TcpCollector(port)
    collector.close = collector.stop  # type: ignore[attr-defined]
    return collector


def _emf_tcp_arrived(collector: Any, store: Path, marker: str) -> bool:
    return any(b"_aws" in line for line in list(collector.lines))


DESTINATIONS = [
    Destination("otlp-port-closed", "otlp", _otlp_config, lambda port: None, _otlp_serve, _otlp_arrived,
                ("export_failed:otlp", "backlog:otlp")),
    Destination("otlp-accepts-never-reads", "otlp", _otlp_config, Blackhole, _otlp_serve, _otlp_arrived,
                ("export_failed:otlp", "backlog:otlp")),
    Destination("xray-daemon-port-closed", "xray-udp", _udp_config, lambda port: None, UdpSink, _udp_arrived,
                ("export_failed:xray-udp",)),
    Destination("xray-api-unreachable", "xray-api", _xray_api_config, lambda port: None, MotoOnPort,
                _xray_api_arrived, ("export_failed:xray-api", "backlog:xray-api")),
    Destination("cloudwatch-api-unreachable", "cloudwatch", _cloudwatch_config, lambda port: None, MotoOnPort,
                _cloudwatch_arrived, ()),
    Destination("emf-tcp-accepts-never-reads", "emf", _emf_tcp_config, Blackhole, _emf_tcp_serve, _emf_tcp_arrived,
                (), send_failures_counted=False),
]


def _safely(check: Callable[[Any, Path, str], bool], dest: Any, store: Path, marker: str,
            errors: list[str]) -> bool:
    try:
        return check(dest, store, marker)
    except Exception as exc:  # the destination still starting (moto answering 5xx, a timeout): not yet
        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        return False


def _close(thing: Any) -> None:
    if thing is not None:
        thing.close()


@pytest.fixture
def services(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    dest: Destination = request.param
    healthy_port, dead_port = free_port(), free_port()
    healthy_dest = dest.serve(healthy_port)
    broken = dest.break_(dead_port)
    made: list[Service] = []
    try:
        h_store, f_store = tmp_path / "healthy-store", tmp_path / "fault-store"
        h_cfg = write_config(tmp_path / "healthy.yaml", h_store, extra=dest.config(healthy_port))
        f_cfg = write_config(tmp_path / "fault.yaml", f_store, extra=dest.config(dead_port))
        made.append(start_rel_service(tmp_path, h_cfg, name="healthy", env=AWS_ENV))
        made.append(start_rel_service(tmp_path, f_cfg, name="fault", env=AWS_ENV))
        yield {"dest": dest, "healthy": made[0], "fault": made[1], "fault_store": f_store, "healthy_store": h_store,
               "dead_port": dead_port, "broken": broken}
    finally:
        for svc in made:
            stop_tree(svc)
        _close(healthy_dest)


def _hit(svc: Service, marker: str, n: int = 20) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            assert client.get(f"{svc.url}/hello?m={marker}&i={i}").status_code == 200


_PARAMS = [pytest.param(d, id=d.name) for d in DESTINATIONS]


@pytest.mark.parametrize("services", _PARAMS, indirect=True)
def test_destination_down_costs_no_latency_is_counted_recovers_and_exits_fast(services: dict[str, Any]) -> None:
    dest: Destination = services["dest"]
    healthy: Service = services["healthy"]
    fault: Service = services["fault"]
    f_store: Path = services["fault_store"]
    port: int = services["dead_port"]
    _hit(healthy, "warm", 50)
    _hit(fault, "warm", 50)

    # 1. latency: the outage must not reach the request path
    results = p99_rounds({"healthy": healthy.url, "fault": fault.url}, rounds=4, seconds=1.5)
    for name, runs in results.items():
        assert total_requests(runs) >= 400, (name, runs)
        assert all(r.non_2xx == 0 and r.errors == 0 for r in runs), (name, runs)
    h_p99, f_p99 = median_p99(results["healthy"]), median_p99(results["fault"])
    assert f_p99 <= h_p99 * P99_FACTOR + P99_SLACK_S, (
        f"p99 with {dest.name}: {f_p99 * 1e3:.2f} ms vs healthy {h_p99 * 1e3:.2f} ms")

    # 2. the loss is counted and visible to the operator; the local store is unaffected
    if dest.drop_reasons:
        counted = wait_for(lambda: {r: n for r, n in dropped(f_store).items() if r in dest.drop_reasons}, timeout=20)
        assert counted, (dropped(f_store), fault.output()[-2000:])
    elif dest.send_failures_counted:  # CloudWatch: metric data, not spans, are lost; the publisher counts its failed sends
        from pulsetrace.store import LocalStore

        def failures() -> float:
            s = LocalStore(f_store, create=False)
            try:
                return sum(v for (n, _r), v in s.counters().items() if n == "metrics_send_failures")
            finally:
                s.close()

        assert wait_for(failures, timeout=20), fault.output()[-2000:]
    marker = uuid.uuid4().hex[:12]
    _hit(fault, marker)
    assert wait_for(lambda: len([s for s in all_spans(f_store) if marker in str(s.attributes.get("url.query"))])
                    == 20, timeout=20), "the local exporter stopped receiving spans during the outage"

    # 3. the destination comes back on the same port: new data arrives without a restart
    _close(services["broken"])
    services["broken"] = None
    restored = dest.serve(port)
    try:
        marker = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 60
        arrived = False
        errors: list[str] = []
        while time.monotonic() < deadline and not arrived:
            _hit(fault, marker, 5)
            arrived = bool(wait_for(lambda: _safely(dest.arrived, restored, f_store, marker, errors), timeout=5))
        assert arrived, (f"nothing reached the restored {dest.name} destination; checks failed with "
                         f"{errors[-3:]}\n{fault.output()[-2000:]}")
    finally:
        _close(restored)

    # 4. down again (the same fault), with data in flight: SIGTERM to exit stays bounded
    services["broken"] = dest.break_(port)
    _hit(fault, "before-exit", 50)
    started = time.monotonic()
    fault.proc.send_signal(signal.SIGTERM)
    code = fault.proc.wait(20)
    elapsed = time.monotonic() - started
    _close(services["broken"])
    assert code in (0, 128 + signal.SIGTERM), fault.output()[-2000:]
    assert elapsed < EXIT_BOUND_S, f"exit took {elapsed:.2f} s with {dest.name}"
    assert not agent_tracebacks(fault.output()), agent_tracebacks(fault.output())


def test_with_only_an_otlp_exporter_drops_are_still_visible_in_pulsetrace_status(tmp_path: Path) -> None:
    """An operator whose only exporter is OTLP must still see that the collector is losing spans."""
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, extra={
        "tracing": {"exporters": ["otlp"], "otlp": {"endpoint": f"http://127.0.0.1:{free_port()}"}}})
    svc = start_rel_service(tmp_path, cfg)
    try:
        _hit(svc, "otlp-only", 30)
        reasons = wait_for(lambda: dropped(store), timeout=10)
        assert reasons and any(r.endswith(":otlp") for r in reasons), (
            f"`pulsetrace status --json` shows no drops for an otlp-only agent whose collector is down: {reasons}")
    finally:
        stop_tree(svc)
