"""`pulsetrace run` on real services: uvicorn with 2 workers, httpx, asyncpg, redis, a downstream service."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.service_runner import (
    APPS,
    ROOT,
    all_spans,
    start_service,
    trace_spans,
    wait_for,
    write_config,
)
from tests.servers import PostgresServer, RedisServer, free_port


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_one_request_gives_one_trace_across_workers_db_cache_and_downstream(
        tmp_path: Path, store: Path, postgres_server: PostgresServer, redis_server: RedisServer) -> None:
    back_cfg = write_config(tmp_path / "back.yaml", store, service="inventory")
    front_cfg = write_config(tmp_path / "front.yaml", store, service="shop-api")
    back = start_service(tmp_path, back_cfg, "svc_back:app", name="back")
    front = start_service(tmp_path, front_cfg, "svc_front:app", workers=2, name="front", env={
        "DOWNSTREAM_URL": back.url, "DB_DSN": postgres_server.dsn, "REDIS_URL": redis_server.url})
    try:
        r = httpx.get(front.url + "/work", timeout=20)
        assert r.status_code == 200, front.output()
        assert r.json() == {"downstream": 200, "db": 42, "cache": "1"}

        def front_root() -> list[object]:
            return [s for s in all_spans(store) if s.service == "shop-api" and s.kind == "server"]

        roots = wait_for(front_root)
        assert roots and len(roots) == 1, front.output()
        root = roots[0]
        assert root.parent_span_id is None
        assert root.name == "GET /work"

        def complete() -> list[object] | None:
            spans = trace_spans(store, root.trace_id)
            return spans if any(s.service == "inventory" for s in spans) and len(spans) >= 5 else None

        spans = wait_for(complete) or trace_spans(store, root.trace_id)
        by_system = {s.attributes.get("db.system"): s for s in spans if s.attributes.get("db.system")}
        assert {"postgresql", "redis"} <= set(by_system), [(s.name, s.attributes) for s in spans]
        for system in ("postgresql", "redis"):
            assert by_system[system].parent_span_id == root.span_id
            assert by_system[system].kind == "client"
        http_client = [s for s in spans if s.kind == "client" and "db.system" not in s.attributes]
        assert len(http_client) == 1 and http_client[0].parent_span_id == root.span_id
        downstream = [s for s in spans if s.service == "inventory"]
        assert len(downstream) == 1
        assert downstream[0].kind == "server" and downstream[0].parent_span_id == http_client[0].span_id
        assert downstream[0].remote_parent
        assert {s.trace_id for s in spans} == {root.trace_id}
        # What X-Ray needs to draw one node per database: system, name, address, sanitized statement, peer.service.
        pg = by_system["postgresql"].attributes
        assert pg.get("db.name") == "shop" or pg.get("db.namespace") == "shop"
        assert pg.get("peer.service") == "shop@127.0.0.1"
        assert pg.get("server.address") == "127.0.0.1" and pg.get("server.port") == postgres_server.port
        assert "41" not in str(pg.get("db.statement")), pg  # literals replaced by '?'
        assert by_system["redis"].attributes.get("peer.service", "").startswith("redis@127.0.0.1")
        # the password in the DSN never reaches the store
        assert postgres_server.password not in (store / "spans.db").read_bytes().decode("latin-1")
    finally:
        front.stop()
        back.stop()


@pytest.mark.parametrize("header,expect_trace,expect_parent", [
    ("X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
     "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"),
    ("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
     "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
])
def test_incoming_trace_headers_are_continued(tmp_path: Path, store: Path, header: str, expect_trace: str,
                                              expect_parent: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", store)
    svc = start_service(tmp_path, cfg, "svc_front:app")
    try:
        name, value = header.split(": ", 1)
        assert httpx.get(svc.url + "/hello", headers={name: value}, timeout=10).status_code == 200
        spans = wait_for(lambda: trace_spans(store, expect_trace))
        assert spans, svc.output()
        assert spans[0].parent_span_id == expect_parent and spans[0].remote_parent
    finally:
        svc.stop()


MALFORMED = [
    ("traceparent", "00-zzzz-not-hex-01"),
    ("traceparent", "00-00000000000000000000000000000000-0000000000000000-01"),
    ("traceparent", "ff" * 5000),
    ("x-amzn-trace-id", "Root=1-xyz;Parent=;Sampled=7"),
    ("x-amzn-trace-id", "Root=" + "1" * 9000),
    ("x-amzn-trace-id", ";;;==;"),
]


def test_malformed_trace_headers_start_a_fresh_trace_and_the_request_succeeds(tmp_path: Path, store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store)
    svc = start_service(tmp_path, cfg, "svc_front:app")
    try:
        for name, value in MALFORMED:
            r = httpx.get(svc.url + "/hello", headers={name: value}, timeout=10)
            assert r.status_code == 200
        roots = wait_for(lambda: [s for s in all_spans(store) if s.kind == "server"]
                         if len(all_spans(store)) >= len(MALFORMED) else None)
        assert roots and len(roots) == len(MALFORMED), svc.output()
        for span in roots:
            assert span.parent_span_id is None  # a fresh trace each time
        assert len({s.trace_id for s in roots}) == len(MALFORMED)
    finally:
        svc.stop()


def test_sigterm_stops_the_child_and_finished_requests_are_stored(tmp_path: Path, store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store, extra={"tracing": {"export_interval": 5.0}})
    svc = start_service(tmp_path, cfg, "svc_front:app", workers=2)
    for _ in range(20):
        assert httpx.get(svc.url + "/hello", timeout=10).status_code == 200
    started = time.monotonic()
    code = svc.stop(signal.SIGTERM)
    elapsed = time.monotonic() - started
    # uvicorn exits 0 on SIGTERM; the wrapper passes the child's code on
    assert code == 0, svc.output()
    assert elapsed < 10
    stored = [s for s in all_spans(store) if s.name == "GET /hello"]
    assert len(stored) == 20, svc.output()


def _latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            t = time.perf_counter()
            assert client.get(url).status_code == 200
            out.append(time.perf_counter() - t)
    return out


def test_dead_otlp_endpoint_does_not_slow_requests_and_exit_stays_bounded(tmp_path: Path, store: Path) -> None:
    dead_port = free_port()  # nothing listens there
    local_cfg = write_config(tmp_path / "local.yaml", store)
    otlp_cfg = write_config(tmp_path / "otlp.yaml", store, exporters=["otlp"],
                            extra={"tracing": {"otlp": {"endpoint": f"http://127.0.0.1:{dead_port}"},
                                               "export_interval": 0.05, "batch_size": 8}})
    local = start_service(tmp_path, local_cfg, "svc_front:app", name="local")
    dead = start_service(tmp_path, otlp_cfg, "svc_front:app", name="dead")
    try:
        for _ in range(30):  # warm both up
            httpx.get(local.url + "/hello")
            httpx.get(dead.url + "/hello")
        local_l: list[float] = []
        dead_l: list[float] = []
        for _ in range(4):  # interleaved rounds so machine noise hits both
            local_l += _latencies(local.url + "/hello", 50)
            dead_l += _latencies(dead.url + "/hello", 50)
        # generous bound: the point is "not blocked on the exporter" (that would be +100 ms or more)
        assert statistics.median(dead_l) < statistics.median(local_l) * 1.5 + 0.002
        assert max(dead_l) < 1.0
    finally:
        local.stop()
        dead.proc.send_signal(signal.SIGTERM)
        # measure from the moment the child (uvicorn) is gone to the wrapper's exit
        started = time.monotonic()
        code = dead.proc.wait(20)
        # single-worker uvicorn re-raises SIGTERM after its graceful shutdown: the wrapper reports 128+15
        assert code in (0, 128 + signal.SIGTERM)
        assert time.monotonic() - started < 2.0 + 1.0  # uvicorn's own shutdown + our bounded flush


def test_wrapper_passes_the_exit_code_and_signals_of_a_plain_python_child(tmp_path: Path, store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--", sys.executable,
                           "-c", "import sys; sys.exit(3)"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 3, done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--", sys.executable,
                             "-c", "import time; print('ready', flush=True); time.sleep(60)"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM


def test_command_not_found_is_one_line_and_exit_127(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PULSETRACE_STORE": str(tmp_path / "s")}
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "run", "--", "no-such-command-xyz"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 127
    assert done.stderr.strip().count("\n") == 0 and "no-such-command-xyz" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_module_child_spans_reach_the_store(tmp_path: Path, store: Path) -> None:
    (tmp_path / "myservice").mkdir()
    (tmp_path / "myservice" / "__init__.py").write_text("")
    (tmp_path / "myservice" / "__main__.py").write_text(
        "import httpx, sys\n"
        "from opentelemetry import trace\n"
        "with trace.get_tracer('job').start_as_current_span('nightly.job'):\n"
        "    try:\n"
        "        httpx.get(sys.argv[1], timeout=2)\n"
        "    except httpx.HTTPError:\n"
        "        pass\n")
    cfg = write_config(tmp_path / "c.yaml", store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--", sys.executable, "-m",
                           "myservice", f"http://127.0.0.1:{free_port()}/"], env=env, capture_output=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spans = all_spans(store)
    names = {s.name for s in spans}
    assert "nightly.job" in names and any(s.kind == "client" for s in spans), spans


def test_opentelemetry_instrument_uses_pulsetrace_configuration(tmp_path: Path, store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), "PULSETRACE_CONFIG": str(cfg),
           # with opentelemetry-distro installed as well, choose ours (as its docs say to)
           "OTEL_PYTHON_DISTRO": "pulsetrace"}
    log = tmp_path / "oi.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, "-m", "uvicorn", "svc_front:app", "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        from tests.servers import wait_port

        wait_port(port, 30)
        assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10).status_code == 200
        spans = wait_for(lambda: [s for s in all_spans(store) if s.name == "GET /hello"])
        assert spans, log.read_text()
        assert spans[0].service == "shop-api"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn needs fork")
def test_gunicorn_with_uvicorn_workers_is_instrumented(tmp_path: Path, store: Path) -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn.workers")
    cfg = write_config(tmp_path / "c.yaml", store)
    port = free_port()
    log = tmp_path / "g.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--", sys.executable,
                             "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b",
                             f"127.0.0.1:{port}", "svc_front:app"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        from tests.servers import wait_port

        wait_port(port, 30)
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10).status_code == 200
        spans = wait_for(lambda: [s for s in all_spans(store) if s.name == "GET /hello"]
                         if len(all_spans(store)) >= 10 else None)
        assert spans and len(spans) == 10, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_gunicorn_sync_workers_serving_wsgi_are_instrumented(tmp_path: Path, store: Path) -> None:
    pytest.importorskip("gunicorn")
    cfg = write_config(tmp_path / "c.yaml", store)
    port = free_port()
    log = tmp_path / "w.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--", sys.executable,
                             "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "svc_wsgi:app"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        from tests.servers import wait_port

        wait_port(port, 30)
        assert httpx.get(f"http://127.0.0.1:{port}/orders/17", timeout=10).text == "hello wsgi"
        assert httpx.get(f"http://127.0.0.1:{port}/fail", timeout=10).status_code == 500
        spans = wait_for(lambda: all_spans(store) if len(all_spans(store)) >= 2 else None)
        assert spans, log.read_text()
        by_name = {s.name: s for s in spans}
        assert set(by_name) == {"GET /orders/{id}", "GET /fail"}
        assert by_name["GET /fail"].status == "error" and by_name["GET /orders/{id}"].kind == "server"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_behind_a_load_balancer_the_span_records_the_real_client(tmp_path: Path, store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store)
    svc = start_service(tmp_path, cfg, "svc_front:app")  # uvicorn trusts proxy headers from 127.0.0.1
    try:
        r = httpx.get(svc.url + "/hello", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
                      timeout=10)
        assert r.status_code == 200
        spans = wait_for(lambda: [s for s in all_spans(store) if s.name == "GET /hello"])
        assert spans, svc.output()
        assert spans[0].attributes["client.address"] == "203.0.113.9"
        assert spans[0].attributes["url.scheme"] == "https"
    finally:
        svc.stop()


def test_sigterm_to_a_plain_python_child_flushes_its_spans_then_ends_it_by_sigterm(tmp_path: Path,
                                                                                  store: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", store, extra={"tracing": {"export_interval": 30.0}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ("from opentelemetry import trace\n"
              "import time\n"
              "with trace.get_tracer('job').start_as_current_span('batch.step'):\n"
              "    pass\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "run", "--no-health", "--config", str(cfg), "--",
                             sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM  # the default action is kept: killed by SIGTERM
    assert time.monotonic() - started < 2.5
    # the export interval (30 s) never came: the span is there because the handler flushed it
    assert [s.name for s in all_spans(store)] == ["batch.step"]


def test_opentelemetry_instrument_leaves_our_libraries_to_pulsetrace(tmp_path: Path, store: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{path: '{store}'}}\ntracing:\n  instrumentations:\n    disabled: [redis]\n")
    env = {**os.environ, "PULSETRACE_CONFIG": str(cfg), "OTEL_PYTHON_DISTRO": "pulsetrace"}
    code = ("import sys\n"
            "print('httpx' in sys.modules, 'redis' in sys.modules)\n"
            "import redis, httpx\n"
            "from opentelemetry.instrumentation.redis import RedisInstrumentor\n"
            "from pulsetrace.instrumentation import auto\n"
            "print(RedisInstrumentor().is_instrumented_by_opentelemetry, sorted(auto.active()))\n")
    done = subprocess.run([str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # nothing imported eagerly; redis disabled by our config is not instrumented by upstream either
    first, second = done.stdout.split("\n")[:2]
    assert first == "False False", done.stdout
    assert second.startswith("False [") and "'httpx'" in second and "'redis'" not in second, done.stdout
