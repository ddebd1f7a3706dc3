"""EMF leaving the process: a real TCP listener (the CloudWatch agent's endpoint), UDP, a file, stdout.

Every document captured must pass the EMF specification checks of ``test_emf_spec`` and
carry exactly the traffic recorded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.config.schema import Config
from pulsetrace.metrics.datum import value_datum
from pulsetrace.metrics.publisher import build_publisher
from pulsetrace.metrics.request_metrics import Recorder, build_recorder
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping
from tests.agent.metrics.test_emf_spec import validate_emf
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
DIMS = (("Service", "shop-api"), ("Environment", "uat"))


def emf_cfg(output: str, **cloudwatch: Any) -> Config:
    return config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                                "metrics": {"cloudwatch": {"mode": "emf", "emf_output": output, "timeout": "1s",
                                                           **cloudwatch}}}, {})


class TcpCollector:
    """A TCP listener reading newline-delimited documents, like the CloudWatch agent's EMF port."""

    def __init__(self, port: int = 0, close_after: int | None = None, read: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not read:  # set before listen() so accepted connections advertise a small window from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        self.connections = 0
        self.close_after = close_after
        self.read = read
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            if not self.read:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self._held.append(conn)  # accept and never read: the peer's sends eventually block
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.lines.append(line)
                # the agent restarts after what it has read: close this connection (complete lines kept)
                if self.close_after is not None and len(self.lines) >= self.close_after:
                    self.close_after = None
                    return

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._held:
            c.close()
        self.thread.join(2)


@pytest.fixture
def collector() -> Iterator[TcpCollector]:
    c = TcpCollector()
    yield c
    c.stop()


def wait_until(pred: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    return pred()


def totals(docs: list[dict[str, Any]], metric: str, **dims: str) -> float:
    """Sum of ``metric`` over documents whose dimension set is exactly Service, Environment + ``dims``."""
    want = {"Service", "Environment", *dims}
    total = 0.0
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if any(set(ds) == want for ds in directive["Dimensions"]) and all(doc.get(k) == v for k, v in
                                                                              dims.items()):
                if any(m["Name"] == metric for m in directive["Metrics"]):
                    value = doc[metric]
                    total += value["Count"] if isinstance(value, dict) else value
    return total


def traffic(rec: Recorder, n: int = 300, failures: int = 30) -> None:
    for i in range(n):
        rec.record("POST /payments", "", 10.0 + i % 7, i < failures, False)


def test_documents_over_tcp_are_valid_emf_and_count_the_traffic(collector: TcpCollector) -> None:
    rec = build_recorder(emf_cfg(f"tcp://127.0.0.1:{collector.port}"), SelfMetrics())
    assert rec is not None
    traffic(rec)
    assert rec.flush(5.0)
    docs = wait_until(lambda: len(collector.lines) >= 3 and collector.docs())
    for doc in docs:
        assert validate_emf(doc) == [], doc
    assert totals(docs, "Requests", Operation="POST /payments") == 300
    assert totals(docs, "Errors", Operation="POST /payments") == 30
    assert totals(docs, "Faults", Operation="POST /payments") == 0
    assert totals(docs, "Latency", Operation="POST /payments") == 300
    assert totals(docs, "Requests", Tier="critical") == 300
    assert all(doc["_aws"]["LogGroupName"] == "shop-api-metrics" for doc in docs)
    rec.shutdown(1.0)


def test_tcp_reconnects_when_the_agent_closes_the_connection(collector: TcpCollector) -> None:
    collector.close_after = 1
    metrics = SelfMetrics()
    rec = build_recorder(emf_cfg(f"tcp://127.0.0.1:{collector.port}"), metrics)
    assert rec is not None
    traffic(rec, 10, 0)
    assert rec.flush(5.0)
    wait_until(lambda: collector.close_after is None)
    time.sleep(0.2)  # the close reaches us
    traffic(rec, 20, 0)
    rec.flush(5.0)
    docs = wait_until(lambda: totals(collector.docs(), "Requests", Operation="POST /payments") >= 30 and
                      collector.docs())
    assert totals(docs, "Requests", Operation="POST /payments") == 30
    assert collector.connections == 2
    rec.shutdown(1.0)


def test_tcp_endpoint_down_keeps_the_data_until_it_is_back() -> None:
    port = free_port()
    metrics = SelfMetrics()
    rec = build_recorder(emf_cfg(f"tcp://127.0.0.1:{port}"), metrics)
    assert rec is not None and rec.publisher is not None
    traffic(rec, 50, 5)
    assert rec.flush(3.0) is False
    assert rec.publisher.pending() > 0
    assert metrics.counter("metrics_send_failures", "emf_tcp") >= 1
    back = TcpCollector(port=port)
    try:
        assert rec.flush(3.0)
        docs = wait_until(lambda: totals(back.docs(), "Requests", Operation="POST /payments") >= 50 and back.docs())
        assert totals(docs, "Requests", Operation="POST /payments") == 50
        assert totals(docs, "Errors", Operation="POST /payments") == 5
    finally:
        rec.shutdown(0.5)
        back.stop()


def test_a_peer_that_never_reads_delays_only_the_flusher_never_record() -> None:
    stuck = TcpCollector(read=False)
    try:
        rec = build_recorder(emf_cfg(f"tcp://127.0.0.1:{stuck.port}", timeout="300ms"), SelfMetrics())
        assert rec is not None
        for i in range(400):  # enough distinct operations to fill the socket buffers
            rec.record(f"op.{i}", "general", 1.0, False, False)
        flusher = threading.Thread(target=rec.flush, args=(2.0,))
        flusher.start()
        started = time.perf_counter()
        for _ in range(20_000):
            rec.record("POST /payments", "", 1.0, False, False)
        per_call = (time.perf_counter() - started) / 20_000
        assert per_call < 50e-6, per_call  # generous: ~1 µs here, on 2 shared cores
        flusher.join(5)
        assert not flusher.is_alive()
        started = time.monotonic()
        rec.shutdown(0.5)
        assert time.monotonic() - started < 2.0
    finally:
        stuck.stop()


def test_udp_datagrams_are_one_valid_document_each() -> None:
    recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    recv.bind(("127.0.0.1", 0))
    recv.settimeout(2.0)
    try:
        rec = build_recorder(emf_cfg(f"udp://127.0.0.1:{recv.getsockname()[1]}"), SelfMetrics())
        assert rec is not None
        traffic(rec, 120, 12)
        rec.flush(2.0)
        docs = []
        while True:
            try:
                data = recv.recv(70_000)
            except TimeoutError:
                break
            assert data.endswith(b"\n") and data.count(b"\n") == 1
            docs.append(json.loads(data))
            if totals(docs, "Requests") and totals(docs, "Requests", Operation="POST /payments"):
                if len(docs) >= 3:
                    break
        assert all(validate_emf(d) == [] for d in docs)
        assert totals(docs, "Requests", Operation="POST /payments") == 120
        assert totals(docs, "Errors", Operation="POST /payments") == 12
        rec.shutdown(0.5)
    finally:
        recv.close()


def test_file_output_appends_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "emf.log"
    rec = build_recorder(emf_cfg(f"file:{path}"), SelfMetrics())
    assert rec is not None
    traffic(rec, 40, 4)
    rec.flush(2.0)
    traffic(rec, 60, 6)
    rec.shutdown(2.0)  # the final flush
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(validate_emf(d) == [] for d in docs)
    assert totals(docs, "Requests", Operation="POST /payments") == 100
    assert totals(docs, "Errors", Operation="POST /payments") == 10
    assert "LogGroupName" not in docs[0]["_aws"]


def test_stdout_of_a_real_process_carries_valid_documents_between_its_prints() -> None:
    script = textwrap.dedent("""
        import threading
        from pulsetrace.validation import config_from_mapping
        from pulsetrace.selfmetrics import SelfMetrics
        from pulsetrace.metrics.request_metrics import build_recorder

        cfg = config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                                   "metrics": {"cloudwatch": {"mode": "emf", "emf_output": "stdout",
                                                              "interval": "1s"}}}, {})
        rec = build_recorder(cfg, SelfMetrics())
        rec.start()

        def app_prints():
            for i in range(200):
                print(f"app line {i}")

        t = threading.Thread(target=app_prints)
        t.start()
        for i in range(300):
            rec.record("POST /payments", "", 12.5, i % 10 == 0, i % 100 == 0)
        t.join()
        rec.shutdown(2.0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert sum(1 for line in lines if line.startswith("app line")) == 200
    assert docs and all(validate_emf(d) == [] for d in docs)
    assert totals(docs, "Requests", Operation="POST /payments") == 300
    assert totals(docs, "Errors", Operation="POST /payments") == 27  # 30 failures, 3 of them faults
    assert totals(docs, "Faults", Operation="POST /payments") == 3
    assert "LogGroupName" not in docs[0]["_aws"]


def test_shutdown_against_a_peer_that_never_reads_keeps_to_its_deadline() -> None:
    stuck = TcpCollector(read=False)
    metrics = SelfMetrics()
    try:
        # A per-send timeout (2 s) longer than the shutdown budget: the budget must win.
        publisher = build_publisher(emf_cfg(f"tcp://127.0.0.1:{stuck.port}", timeout="2s", max_buffer=100_000),
                                    metrics, self_metrics=False)
        assert publisher is not None
        publisher.start()
        now = time.time()
        # ~1.1 kB documents that are cheap to encode, ~5.5 MB in all: more than loopback socket buffers hold
        # (~2.8 MB here with a peer that never reads).
        pad = "x" * 1000
        data = [value_datum("Requests", "Count", DIMS + (("Operation", f"{pad}-{i}"),), now, i) for i in range(5000)]
        publisher.offer(data)
        assert publisher.flush(3.0) is False  # connected, the socket buffers full, the rest left pending
        assert wait_until(lambda: stuck.connections >= 1, 2.0)
        assert publisher.pending() > 0
        publisher.offer(data[:10])
        started = time.monotonic()
        publisher.shutdown(0.75)
        took = time.monotonic() - started
        assert took < 0.75 + 0.5, f"shutdown(0.75) took {took:.2f} s"
        assert metrics.counter("metrics_dropped", "shutdown") > 0
        assert publisher.pending() == metrics.counter("metrics_dropped", "shutdown")
    finally:
        stuck.stop()
