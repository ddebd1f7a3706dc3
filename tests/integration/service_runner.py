"""Start real services under ``pulsetrace run`` for integration tests, and read what they stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pulsetrace.store import LocalStore, StoredSpan
from tests.servers import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"

ALL_SAMPLED = {"tiers": {t: {"rate": 1.0, "reservoir": 0} for t in ("critical", "business", "general", "health")}}


def write_config(path: Path, store: Path, *, service: str = "shop-api", exporters: list[str] | None = None,
                 sampling: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 health_port: int | None = None) -> Path:
    cfg: dict[str, Any] = {
        "service": {"name": service, "environment": "test"},
        "store": {"path": str(store)},
        "tracing": {"exporters": exporters or ["local"], "export_interval": 0.1,
                    "sampling": sampling if sampling is not None else ALL_SAMPLED},
        "health": {"listen": f"127.0.0.1:{health_port or free_port()}"},
    }
    for key, value in (extra or {}).items():
        section = cfg.setdefault(key, {})
        if isinstance(section, dict) and isinstance(value, dict):
            section.update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_service(tmp: Path, config: Path, app: str, *, workers: int = 1, env: dict[str, str] | None = None,
                  wrapper: list[str] | None = None, port: int | None = None, name: str = "svc") -> Service:
    """``pulsetrace run -- uvicorn APP --port P [--workers N]`` with the test apps importable."""
    port = port or free_port()
    log = tmp / f"{name}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), **(env or {})}
    cmd = wrapper if wrapper is not None else [sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(config), "--"]
    cmd = [*cmd, sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_port(port, 30)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"service did not start:\n{log.read_text(errors='replace')}") from None
    return Service(proc=proc, port=port, log=log, env=full_env)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    return last


def trace_spans(store: Path, trace_id: str) -> list[StoredSpan]:
    s = LocalStore(store, create=False)
    if not s.exists():
        return []
    try:
        return s.trace_spans(trace_id)
    finally:
        s.close()


def all_spans(store: Path) -> list[StoredSpan]:
    s = LocalStore(store, create=False)
    if not s.exists():
        return []
    try:
        return s.spans_since(0)
    finally:
        s.close()
