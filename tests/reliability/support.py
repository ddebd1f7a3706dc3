"""Shared pieces of the reliability tests: the service under test, load, and what to read from /proc.

Everything runs on loopback. Latency is measured by ``wrk`` (its own process, HdrHistogram
percentiles), so the pytest process's own threads (receivers, sinks) never skew it.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.e2e_load import WrkResult, descendants, run_wrk
from tests.integration.service_runner import ROOT, Service, start_service, wait_for

APPS = Path(__file__).resolve().parent / "apps"
APP = "rel_app:app"


def start_rel_service(tmp: Path, config: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                      name: str = "rel", port: int | None = None) -> Service:
    """``pulsetrace run --config CONFIG -- uvicorn rel_app:app`` (see ``apps/rel_app.py``)."""
    full_env = {"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), **(env or {})}
    return start_service(tmp, config, APP, workers=workers, env=full_env, name=name, port=port)


def app_pids(svc: Service) -> list[int]:
    """The uvicorn processes under the supervisor (with ``--workers N``: the manager and its workers)."""
    return [p for p in descendants(svc.proc.pid) if p != svc.proc.pid]


def worker_pids(svc: Service, expected: int = 1, timeout: float = 20.0) -> list[int]:
    """The processes that serve requests: the only child, or the manager's children."""

    def find() -> list[int] | None:
        kids = app_pids(svc)
        if expected == 1:
            return kids[:1] if kids else None
        workers = [p for p in kids if ppid(p) != svc.proc.pid and _is_python(p)]
        return workers if len(workers) >= expected else None

    found = wait_for(find, timeout=timeout)
    assert found, f"no worker processes under {svc.proc.pid}:\n{svc.output()[-2000:]}"
    return list(found)


def ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _is_python(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # spawned multiprocessing helpers (the resource tracker) are Python too, but never serve
    return bool(cmd) and b"python" in cmd[0] and b"resource_tracker" not in b" ".join(cmd)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def p99_rounds(services: dict[str, str], *, rounds: int = 4, seconds: float = 2.0, path: str = "/hello",
               connections: int = 1, think_ms: int = 2) -> dict[str, list[WrkResult]]:
    """Interleaved wrk runs (order reversed on odd rounds) against each base URL; results per name.

    Steady load, not saturation: each connection waits ``think_ms`` between requests (wrk's
    ``delay()``), a few hundred requests a second, so the two shared cores keep headroom and
    a p99 shows what the agent does to a request rather than the run queue of a full machine.
    """
    import tempfile

    fd, name = tempfile.mkstemp(prefix="pulsetrace-wrk-delay-", suffix=".lua")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"delay = function() return {int(think_ms)} end\n")
    script = Path(name)
    out: dict[str, list[WrkResult]] = {n: [] for n in services}
    names = list(services)
    try:
        for i in range(rounds):
            for n in (names if i % 2 == 0 else list(reversed(names))):
                out[n].append(run_wrk(services[n] + path, seconds, connections=connections, timeout_s=5.0,
                                      script=script))
    finally:
        script.unlink(missing_ok=True)
    return out


def median_p99(results: list[WrkResult]) -> float:
    return statistics.median(r.p99_s for r in results)


def total_requests(results: list[WrkResult]) -> int:
    return sum(r.requests for r in results)


def status_json(store: Path) -> dict[str, Any]:
    """``pulsetrace status --json`` for this store, as a user would read it."""
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "status", "--json", "--store", str(store)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def dropped(store: Path) -> dict[str, int]:
    return dict(status_json(store).get("dropped") or {})


def get(url: str, timeout: float = 10.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)


@dataclass
class Traffic:
    """Client threads hitting paths round-robin until stopped, recording every outcome.

    Each request opens a new connection (no keep-alive), so a dead worker costs only the
    requests it had in flight. Outcomes are ``(t, path, status)``; status 0 is a
    transport error (refused, reset, timeout).
    """

    base: str
    paths: list[str]
    threads: int = 2
    timeout: float = 5.0
    outcomes: list[tuple[float, str, int]] = field(default_factory=list)
    #: ``(seq, status, body[:200])`` of every answered request; ``seq`` is sent as ``?seq=N``.
    answers: list[tuple[int, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def _next(self) -> tuple[int, str]:
        with self._lock:
            self._seq += 1
            return self._seq, self.paths[self._seq % len(self.paths)]

    def _run(self) -> None:
        while not self._stop.is_set():
            seq, path = self._next()
            sep = "&" if "?" in path else "?"
            status, body = 0, ""
            try:
                with httpx.Client(timeout=self.timeout, headers={"connection": "close"}) as client:
                    resp = client.get(f"{self.base}{path}{sep}seq={seq}")
                    status, body = resp.status_code, resp.text[:200]
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.outcomes.append((time.monotonic(), path, status))
                if status:
                    self.answers.append((seq, status, body))
            if status == 0:
                time.sleep(0.02)

    def start(self) -> Traffic:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(self.timeout + 2)

    def since(self, t0: float, path: str | None = None) -> list[int]:
        with self._lock:
            return [s for (t, p, s) in self.outcomes if t >= t0 and (path is None or p == path)]

    def between(self, t0: float, t1: float, path: str | None = None) -> list[int]:
        with self._lock:
            return [s for (t, p, s) in self.outcomes if t0 <= t < t1 and (path is None or p == path)]


@contextmanager
def traffic(base: str, paths: list[str], threads: int = 2) -> Iterator[Traffic]:
    t = Traffic(base, paths, threads=threads).start()
    try:
        yield t
    finally:
        t.stop()


class Blackhole:
    """A TCP endpoint that accepts connections and never reads from them (nor answers)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()


class UdpSink:
    """A bound UDP socket counting datagrams (the X-Ray daemon's port, for the tests)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            self.datagrams.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def sigterm_exit_seconds(svc: Service, timeout: float = 20.0) -> tuple[int, float]:
    """Send SIGTERM to the supervisor; (exit code, seconds until it exited)."""
    import signal

    started = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    code = svc.proc.wait(timeout)
    return code, time.monotonic() - started


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> tuple[Any, float]:
    """Like ``wait_for``, also returning how long it took."""
    started = time.monotonic()
    value = wait_for(predicate, timeout=timeout, interval=interval)
    return value, time.monotonic() - started


def agent_tracebacks(output: str) -> list[str]:
    """Tracebacks in a service's output that pass through pulsetrace's own packages.

    Libraries of the app log their own (asyncpg's pool logs one while PostgreSQL is
    down); those are the app's business. One through ``agent/``, ``instrumentation/``
    or ``healthchecks/`` means the agent raised somewhere it must not.
    """
    ours = (f"{ROOT}/agent/", f"{ROOT}/instrumentation/", f"{ROOT}/healthchecks/")
    blocks = output.split("Traceback (most recent call last):")[1:]
    return [b[:3000] for b in blocks if any(p in b for p in ours)]


def stop_tree(svc: Service, timeout: float = 10.0) -> int | None:
    """Stop the supervisor and everything under it, whatever state they are in.

    SIGTERM to the supervisor first (it forwards to the app); then SIGKILL to every
    process of the tree still there. SIGKILL to the supervisor alone would orphan the
    app and leave it running after the test.
    """
    import signal

    tree = descendants(svc.proc.pid)
    code: int | None = None
    if svc.proc.poll() is None:
        svc.proc.send_signal(signal.SIGTERM)
    try:
        code = svc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree + [p for p in descendants(svc.proc.pid) if p not in tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if code is None:
        code = svc.proc.wait(5)
    return code
