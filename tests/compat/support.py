"""The compatibility suite's harness: a real application under ``pulsetrace run``, and what it stored.

Each test module writes its application into a temporary folder as a user would, starts it
once per server (module-scoped fixtures), sends real HTTP requests and reads the local store.
A request is found by its unique path; everything it caused must be in one trace whose root
is the server span.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pulsetrace.store import StoredSpan
from tests.integration.service_runner import ROOT, all_spans, wait_for, write_config
from tests.servers import free_port, wait_port

BIN = Path(sys.executable).parent
#: The issue's bar: the whole process tree gone this long after SIGTERM.
EXIT_DEADLINE_S = 2.5


@dataclass
class RunningApp:
    proc: subprocess.Popen[bytes]
    port: int
    store: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop_and_time(self) -> float:
        """SIGTERM to ``pulsetrace run``; seconds until it exited (killed after 15 s)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return float("inf")
        return time.monotonic() - started


def start_app(tmp: Path, name: str, command: list[str], *, port: int, cwd: Path,
              env: dict[str, str] | None = None, config_extra: dict[str, Any] | None = None,
              wrapper: list[str] | None = None, wait: bool = True, store: Path | None = None) -> RunningApp:
    """``pulsetrace run --config C -- COMMAND`` (or ``wrapper + COMMAND``) with a local store of its own
    (or ``store``, shared with another service of the same test)."""
    store = store or tmp / f"store-{name}"
    config = write_config(tmp / f"pulsetrace-{name}.yaml", store, service=name, extra=config_extra)
    log = tmp / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_"))}
    full_env.update({"PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)]), "PYTHONUNBUFFERED": "1",
                     "PULSETRACE_CONFIG": str(config), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    full_env.update(env or {})
    prefix = wrapper if wrapper is not None else [str(BIN / "pulsetrace"), "run", "--config", str(config), "--"]
    proc = subprocess.Popen([*prefix, *command], cwd=cwd, env=full_env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    app = RunningApp(proc, port, store, log)
    if wait:
        try:
            wait_port(port, 60)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"{name} did not start:\n{app.output()}") from None
    return app


def stop_app(app: RunningApp) -> float:
    """Stop ``app`` (whatever happened in the test) and return how long it took."""
    if app.proc.poll() is not None:
        return 0.0
    took = app.stop_and_time()
    try:
        os.killpg(app.proc.pid, signal.SIGKILL)  # nothing of the tree may outlive the test
    except (ProcessLookupError, PermissionError):
        pass
    return took


def get(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def request_trace(store: Path, path: str, *, timeout: float = 20.0, settle: float = 0.5) -> list[StoredSpan]:
    """Every span of the one trace whose server span served ``path`` (asserts there is exactly one)."""

    def server_spans() -> list[StoredSpan]:
        return [s for s in all_spans(store) if s.kind == "server" and s.attributes.get("url.path") == path]

    assert wait_for(server_spans, timeout), f"no server span for {path}"
    time.sleep(settle)  # the request's client spans end before its server span; let the exporter catch up
    servers = server_spans()
    assert len(servers) == 1, f"{path}: {len(servers)} server spans: {[s.name for s in servers]}"
    trace_id = servers[0].trace_id
    return [s for s in all_spans(store) if s.trace_id == trace_id]


def check_one_trace(spans: list[StoredSpan], *, name: str, route: str) -> StoredSpan:
    """The server span is the root, named for the route; every other span descends from it."""
    roots = [s for s in spans if s.parent_span_id is None]
    assert len(roots) == 1, [(s.name, s.kind, s.parent_span_id) for s in spans]
    root = roots[0]
    assert root.kind == "server", (root.name, root.kind)
    assert root.name == name, root.name
    assert root.attributes.get("http.route") == route, root.attributes
    assert [s.name for s in spans if s.kind == "server"] == [root.name], "a second server span in the trace"
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        seen = span
        while seen.parent_span_id is not None:
            assert seen.parent_span_id in by_id, f"{span.name}: parent outside the trace"
            seen = by_id[seen.parent_span_id]
        assert seen is root
    return root


def children_of_kind(spans: list[StoredSpan], kind: str) -> list[StoredSpan]:
    return [s for s in spans if s.kind == kind]


def exception_events(span: StoredSpan) -> list[dict[str, Any]]:
    return [e for e in span.events if e.get("name") == "exception"]


class LoopbackService:
    """A tiny HTTP dependency on loopback (the downstream service a view calls)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.dumps({"ok": True, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="loopback-service", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def loopback_service() -> Iterator[LoopbackService]:
    svc = LoopbackService()
    yield svc
    svc.close()
