"""An X-Ray SDK application under ``pulsetrace run``: one trace per request, the SDK's calls inside it.

The app (tests/integration/apps/xray_sdk_flask.py) is Flask served by gunicorn, written against the
AWS X-Ray SDK only. pulsetrace exports to the local store and, as X-Ray documents, to a real UDP
socket (the daemon's port); the SDK is configured to send to a second UDP socket, which must stay
silent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_runner import APPS, ROOT, all_spans, wait_for, write_config
from tests.servers import free_port, wait_port

pytest.importorskip("flask")
pytest.importorskip("gunicorn")


class Daemon:
    """A UDP socket keeping every X-Ray document it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65535))
            except (TimeoutError, OSError):
                continue

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(d.partition(b"\n")[2]) for d in list(self.datagrams)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _run(tmp_path: Path, app: str) -> Iterator[tuple[str, Path, Daemon, Daemon, Path]]:
    ours, sdks = Daemon(), Daemon()
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, service="orders-api", exporters=["local", "xray-udp"],
                       extra={"tracing": {"xray": {"daemon_address": ours.address}}})
    port = free_port()
    log = tmp_path / "app.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_XRAY", "PULSETRACE_", "OTEL_", "DJANGO_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), "SDK_DAEMON_ADDRESS": sdks.address})
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--",
                             sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", app],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}", store, ours, sdks, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        ours.close()
        sdks.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path, Daemon, Daemon, Path]]:
    yield from _run(tmp_path, "xray_sdk_flask:app")


@pytest.fixture(params=["xray_sdk_flask:app", "xray_sdk_django:application"], ids=["flask", "django"])
def any_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, Daemon, Daemon, Path]]:
    if request.param.startswith("xray_sdk_django"):
        pytest.importorskip("django")
    yield from _run(tmp_path, request.param)


def _trace(store: Path, trace_id: str, count: int) -> list[Any]:
    return wait_for(lambda: (s := [x for x in all_spans(store) if x.trace_id == trace_id]) and len(s) >= count and s,
                    timeout=30) or []


def _otel_id(xray_trace_id: str) -> str:
    return xray_trace_id[2:].replace("-", "")


def test_a_request_is_one_trace_with_the_sdk_calls_as_spans_in_place_and_the_sdk_sends_nothing(
        any_service: tuple[str, Path, Daemon, Daemon, Path]) -> None:
    url, store, ours, sdks, log = any_service
    r = httpx.get(f"{url}/orders/7", timeout=10)
    assert r.status_code == 200, log.read_text()
    body = r.json()
    assert body["total"] == 499.0 and body["sampled"] is True
    trace_id = _otel_id(body["trace_id"])  # current_segment() reflects the OpenTelemetry context
    spans = _trace(store, trace_id, 4)
    assert spans, "\n".join(repr((s.trace_id[-6:], s.name, s.kind, s.span_id, s.parent_span_id, s.scope)) for s in all_spans(store))
    servers = [s for s in spans if s.kind == "server"]
    assert len(servers) == 1, "XRayMiddleware must not add a second server span"
    server = servers[0]
    assert server.span_id == body["segment_id"]
    by_name = {s.name: s for s in spans}
    assert by_name["load_order"].parent_span_id == server.span_id           # capture
    assert by_name["price"].parent_span_id == server.span_id                # in_subsegment
    sql = [s for s in spans if s.parent_span_id == by_name["load_order"].span_id]
    # Recorded once, by whichever instrumentation owns sqlite3 (pulsetrace's when it has one, else the
    # SDK's patch through the bridge), inside the captured function.
    assert len(sql) == 1, "the sqlite3 query is one span inside load_order"
    assert server.attributes["order_id"] == "7"                             # put_annotation
    assert by_name["price"].attributes["currency"] == "INR"
    assert json.loads(by_name["price"].attributes["shop.cart"]) == {"items": 2, "coupon": None}  # put_metadata

    # The X-Ray documents pulsetrace sent: annotations indexed where the SDK put them.
    docs = wait_for(lambda: [d for d in ours.documents() if d.get("trace_id") == body["trace_id"]], timeout=30)
    assert docs, ours.documents()
    segment = next(d for d in docs if d.get("id") == body["segment_id"])
    assert segment["annotations"]["order_id"] == "7"
    subs = {s["name"]: s for s in segment.get("subsegments", [])}
    assert subs["price"]["annotations"]["currency"] == "INR"
    assert "load_order" in subs
    assert sdks.datagrams == [], "the X-Ray SDK's own emitter sent something"


def test_a_background_worker_segment_is_a_root_span_of_its_own_trace(
        service: tuple[str, Path, Daemon, Daemon, Path]) -> None:
    url, store, ours, sdks, log = service
    assert httpx.post(f"{url}/jobs", timeout=15).status_code == 202
    roots = wait_for(lambda: [s for s in all_spans(store) if s.name == "nightly-report"], timeout=30)
    assert roots, log.read_text()
    root = roots[0]
    assert root.parent_span_id is None and root.attributes["job"] == "report"
    children = _trace(store, root.trace_id, 2)
    assert any(s.name == "load_order" and s.parent_span_id == root.span_id for s in children)
    request = [s for s in all_spans(store) if s.kind == "server" and s.name != "nightly-report"]
    assert request, "the /jobs request has its own server span"
    assert all(s.trace_id != root.trace_id for s in request), "the job is not part of the request's trace"
    assert sdks.datagrams == []


def test_an_exception_in_a_captured_function_is_a_fault_on_its_span(
        service: tuple[str, Path, Daemon, Daemon, Path]) -> None:
    url, store, ours, sdks, log = service
    assert httpx.get(f"{url}/fail", timeout=10).status_code == 500
    charge = wait_for(lambda: [s for s in all_spans(store) if s.name == "charge"], timeout=30)
    assert charge, log.read_text()
    assert charge[0].status == "error"
    assert any(e["name"] == "exception" and e["attributes"]["exception.type"] == "RuntimeError"
               for e in charge[0].events)
