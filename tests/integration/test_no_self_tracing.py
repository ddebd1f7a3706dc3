"""The agent never traces its own I/O (issue #10), with every exporter and every background worker at once.

Two real processes under ``pulsetrace run``, sharing one configuration's destinations:

- the app: uvicorn serving a Starlette route that calls a loopback HTTP service (httpx)
  and Redis, so those instrumentations are active in the process where the agent's
  metrics flusher sends PutMetricData (``metrics.cloudwatch.mode: api``) and its
  exporters send spans: the local store, OTLP/HTTP to a real receiver, ``xray-udp`` to a
  real UDP socket, ``xray-api`` (PutTraceSegments) and CloudWatch to moto in server
  mode, and the console;
- a sidecar: ``pulsetrace serve`` itself wrapped by ``pulsetrace run`` (so asyncpg, redis,
  httpx and botocore are instrumented in it), probing a real PostgreSQL, a Redis of its
  own and an HTTP endpoint on 127.0.0.2 every second, publishing the health metrics
  with PutMetricData and exporting its spans to the same destinations.

The agent instruments ``requests`` too (the OTLP/HTTP exporter's transport), so an
export thread that were not suppressed would record its own POSTs to the receiver.

Once moto holds several rounds of metrics from both processes and the probes are UP,
both are stopped (so every span is flushed), and every destination must hold exactly
the traces of the app's requests, none of the agent's own calls, and the service map
(local and X-Ray) must show no CloudWatch, X-Ray, OTLP or probe node.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from pulsetrace.views.servicemap import fetch_xray_documents
from tests.agent.exporters.test_xray_udp import UdpDaemon
from tests.integration.service_runner import (
    APPS,
    ROOT,
    Service,
    all_spans,
    start_service,
    wait_for,
    write_config,
)
from tests.otlp_fixtures import otlp_receiver  # noqa: F401 - a pytest fixture
from tests.otlp_receiver import OtlpReceiver
from tests.servers import AWS_TEST_ENV, MotoServer, PostgresServer, RedisServer, free_port, wait_port

#: Generous: the machine may be busy (two cores shared with other work).
DEADLINE_S = 120.0
REQUESTS = 5

APP = '''
"""The app: one route that uses httpx (a loopback service) and Redis, and says its trace id."""
import os

import httpx
import redis.asyncio as aredis
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def work(request: Request) -> JSONResponse:
    async with httpx.AsyncClient() as client:
        down = await client.get(os.environ["DOWNSTREAM_URL"] + "/inner")
    cache = aredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await cache.set("selftrace:last", "1")
        await cache.get("selftrace:last")
    finally:
        await cache.aclose()
    trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    return JSONResponse({"downstream": down.status_code, "trace_id": trace_id})


app = Starlette(routes=[Route("/work", work)])
'''

#: What a span about the agent's own I/O mentions (names, attributes, X-Ray documents).
SELF_IO_MARKERS = ("PutMetricData", "PutTraceSegments", "CloudWatch", "monitoring", "XRay", "/v1/traces",
                   "127.0.0.2", "SELECT 1", "postgresql", "PING", "INFO")


class Loopback:
    """A small HTTP server answering 200 to any GET (the app's downstream, or the HTTP probe's target)."""

    def __init__(self, host: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"test-loopback-{host}", daemon=True)
        self.thread.start()
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def downstream() -> Iterator[Loopback]:
    server = Loopback("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def probe_target() -> Iterator[Loopback]:
    server = Loopback("127.0.0.2")  # its own address, so a traced probe would be a node of its own
    yield server
    server.close()


@pytest.fixture
def udp_daemon() -> Iterator[UdpDaemon]:
    daemon = UdpDaemon()
    yield daemon
    daemon.close()


def _hex_trace_id(xray_id: str) -> str:
    return xray_id.replace("1-", "", 1).replace("-", "")


def _xray_label(doc: dict[str, Any]) -> str:
    """A segment document in short: its name and its subsegments' names."""
    subs = [str(sub.get("name")) for sub in doc.get("subsegments", ())]
    return f"{doc.get('name')}" + (f" [{', '.join(subs)}]" if subs else "")


def _self_io(text: str) -> list[str]:
    return [m for m in SELF_IO_MARKERS if m in text]


def _cloudwatch(moto: MotoServer) -> Any:
    return boto3.session.Session().client("cloudwatch", region_name="us-east-1", endpoint_url=moto.url)


def _sample_count(moto: MotoServer, namespace: str, metric: str, dims: dict[str, str]) -> float:
    now = dt.datetime.now(dt.UTC)
    points = _cloudwatch(moto).get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - dt.timedelta(minutes=30), EndTime=now + dt.timedelta(minutes=5), Period=3600,
        Statistics=["SampleCount"])["Datapoints"]
    return sum(float(p["SampleCount"]) for p in points)


def _probes_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/details", timeout=5) as resp:
            details = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    probes = details.get("probes", {})
    return len(probes) == 3 and all(p.get("status") == "UP" for p in probes.values())


def _start_sidecar(tmp: Path, config: Path, env: dict[str, str], health_port: int) -> Service:
    """``pulsetrace run --no-health -- pulsetrace serve``: the probes in a process the agent instruments."""
    log = tmp / "sidecar.log"
    cli = [sys.executable, "-m", "pulsetrace.cli.main"]
    proc = subprocess.Popen([*cli, "run", "--no-health", "--config", str(config), "--",
                             *cli, "serve", "--config", str(config)],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_port(health_port, 60)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"sidecar did not start:\n{log.read_text(errors='replace')}") from None
    return Service(proc=proc, port=health_port, log=log, env=env)


def _console_spans(*logs: str) -> list[dict[str, Any]]:
    spans = []
    for text in logs:
        for line in text.splitlines():
            if line.startswith("{") and '"span_id"' in line:
                try:
                    spans.append(json.loads(line))
                except ValueError:
                    continue
    return spans


def _servicemap(config: Path, env: dict[str, str], tmp: Path, *source: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "servicemap", "--config", str(config),
                          "--json", *source], env=env, cwd=tmp, capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_agent_never_traces_its_own_io(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str], moto_server: MotoServer,
        otlp_receiver: OtlpReceiver, udp_daemon: UdpDaemon,  # noqa: F811 - otlp_receiver is the fixture
        postgres_server: PostgresServer, redis_server: RedisServer, redis_own: RedisServer,
        downstream: Loopback, probe_target: Loopback) -> None:
    for name in ("AWS_XRAY_DAEMON_ADDRESS", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "PULSETRACE_STORE"):
        monkeypatch.delenv(name, raising=False)  # they would win over the configuration
    # moto is shared by the session: what earlier tests sent to it (their X-Ray segments, delayed ones
    # included) must not be taken for ours, so this test starts from an empty moto.
    moto_server.reset()
    started = time.time() - 1
    tag = uuid.uuid4().hex[:8]
    service = f"selftrace-{tag}"
    sidecar_service = f"selftrace-{tag}-sidecar"
    namespace = f"PulseTraceSelfTrace/{tag}"
    store = tmp_path / "store"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "selftrace_app.py").write_text(APP)

    exporters = ["local", "otlp", "xray-udp", "xray-api", "console"]
    tracing = {"otlp": {"endpoint": otlp_receiver.endpoint, "timeout": "5s"},
               "xray": {"daemon_address": udp_daemon.address, "region": "us-east-1", "endpoint_url": moto_server.url}}
    cloudwatch = {"cloudwatch": {"mode": "api", "namespace": namespace, "interval": "1s", "region": "us-east-1",
                                 "endpoint_url": moto_server.url, "timeout": "5s"}}
    probes = [
        {"name": "db", "type": "postgres", "dsn": postgres_server.dsn, "interval": "1s", "timeout": "1s"},
        {"name": "cache", "type": "redis", "url": redis_own.url, "interval": "1s", "timeout": "1s"},
        {"name": "gateway", "type": "http", "url": probe_target.url + "/status", "interval": "1s", "timeout": "1s"},
    ]
    app_cfg = write_config(tmp_path / "app.yaml", store, service=service, exporters=exporters,
                           extra={"tracing": tracing, "metrics": cloudwatch, "health": {"probes": probes}})
    sidecar_port = free_port()
    sidecar_cfg = write_config(tmp_path / "sidecar.yaml", store, service=sidecar_service, exporters=exporters,
                               health_port=sidecar_port,
                               extra={"tracing": tracing, "metrics": cloudwatch, "health": {"probes": probes}})
    env = {**AWS_TEST_ENV, "PYTHONPATH": os.pathsep.join([str(app_dir), str(APPS), str(ROOT)]),
           "DOWNSTREAM_URL": downstream.url, "REDIS_URL": redis_server.url}
    full_env = {**os.environ, **env}

    sidecar = _start_sidecar(tmp_path, sidecar_cfg, full_env, sidecar_port)
    app: Service | None = None
    try:
        app = start_service(tmp_path, app_cfg, "selftrace_app:app", name="app", env=env)
        trace_ids: set[str] = set()
        for _ in range(REQUESTS):
            r = httpx.get(app.url + "/work", timeout=30)
            assert r.status_code == 200, app.output()
            trace_ids.add(r.json()["trace_id"])

        # Let the flushers and the probes run a few rounds: moto holds three flushes at least of each
        # process's agent (its queue-depth gauge is sent once per flush), the app's request metrics,
        # three results at least of the sidecar's probes, and every probe is UP.
        def progress() -> tuple[float, float, float, float, bool]:
            return (_sample_count(moto_server, namespace, "ExportQueueDepth", {"Service": service}),
                    _sample_count(moto_server, namespace, "ExportQueueDepth", {"Service": sidecar_service}),
                    _sample_count(moto_server, namespace, "Requests", {"Service": service}),
                    _sample_count(moto_server, namespace, "ProbeUp", {"Service": sidecar_service, "Probe": "db"}),
                    _probes_up(sidecar_port))

        def rounds_done() -> bool:
            app_flushes, sidecar_flushes, requests, probe_results, up = progress()
            return app_flushes >= 3 and sidecar_flushes >= 3 and requests > 0 and probe_results >= 3 and up

        if not wait_for(rounds_done, timeout=DEADLINE_S, interval=0.5):
            pytest.fail(f"(app flushes, sidecar flushes, Requests, ProbeUp results, probes UP) = {progress()}\n"
                        f"app:\n{app.output()[-4000:]}\nsidecar:\n{sidecar.output()[-4000:]}")
        # The app's traces are on their way (every destination is checked for them after the stop).
        assert wait_for(lambda: {s.trace_id for s in otlp_receiver.spans()} >= trace_ids, timeout=DEADLINE_S)
    finally:
        codes = [p.stop() for p in (app, sidecar) if p is not None]  # SIGTERM: each flushes what it holds
    assert all(code in (0, 143) for code in codes), (codes, app.output() if app else "", sidecar.output())
    app_log, sidecar_log = app.output(), sidecar.output()

    # -- every destination holds the app's traces and nothing else -------------------------------------------
    # name -> [(trace id, what the span is about, the whole span as text)]
    destinations: dict[str, list[tuple[str, str, str]]] = {}
    destinations["local store"] = [(s.trace_id, f"{s.service}: {s.name}", json.dumps([s.name, s.attributes]))
                                   for s in all_spans(store)]
    destinations["otlp"] = [(s.trace_id, f"{s.service}: {s.name}", json.dumps([s.name, s.attributes], default=str))
                            for s in otlp_receiver.spans()]
    destinations["console"] = [(str(s["trace_id"]), f"{s['service']}: {s['name']}", json.dumps(s))
                               for s in _console_spans(app_log, sidecar_log)]
    destinations["xray-udp"] = [(_hex_trace_id(d["trace_id"]), _xray_label(d), json.dumps(d))
                                for d in udp_daemon.settle()]
    xray = boto3.client("xray", endpoint_url=moto_server.url, region_name="us-east-1")
    documents = [json.loads(d) for d in fetch_xray_documents(xray, started, time.time() + 1)]
    # moto's store is shared by the session: this test's documents are those that started after it did.
    destinations["xray-api (moto)"] = [(_hex_trace_id(d["trace_id"]), _xray_label(d), json.dumps(d))
                                       for d in documents if float(d.get("start_time", 0)) >= started]
    for name, spans in destinations.items():
        foreign = collections.Counter(label for tid, label, _ in spans if tid not in trace_ids)
        assert not foreign, f"{name} holds spans that are not the app's requests: {dict(foreign)}"
        about_us = [text for _, _, text in spans if _self_io(text)]
        assert not about_us, f"{name} holds spans about the agent's own I/O:\n" + "\n".join(about_us[:10])
        assert {tid for tid, _, _ in spans} == trace_ids, f"{name} misses some of the app's traces"

    # -- the service map: the app and what it calls, nothing of the agent's -------------------------------------
    redis_node = f"cache:redis@127.0.0.1:{redis_server.port}"
    downstream_node = "http:" + downstream.url.removeprefix("http://")  # host:port
    local = _servicemap(app_cfg, full_env, tmp_path)
    assert {n["id"] for n in local["nodes"]} == {"client", f"service:{service}", downstream_node, redis_node}, local
    # (moto's X-Ray is shared by the session: look back only as far as this test goes.)
    since = f"{int(time.time() - started) + 2}s"
    remote = _servicemap(app_cfg, full_env, tmp_path, "--source", "xray", "--since", since)
    ours = {n["id"] for n in remote["nodes"]}
    assert {f"service:{service}", downstream_node, redis_node} <= ours, remote
    leaked = [n for n in ours if _self_io(n) or sidecar_service in n or n.endswith(f":{redis_own.port}")
              or "database" in n or "aws:" in n]
    assert not leaked, remote
