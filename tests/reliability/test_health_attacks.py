"""Attacks on a real ``pulsetrace serve``: while each runs, the ALB's ``/health`` and the container's
``/health/live`` keep answering 200, quickly, and the service keeps its memory and its logs.

The sidecar runs in its own process with a critical HTTP probe against a loopback gateway and a
push-fed RFID fleet. Each attack is ``tests/reliability/apps/health_attacker.py`` in a process of
its own, bounded in time; meanwhile ``apps/health_checker.py`` plays the ALB: a fresh connection
per check, ``/health`` and ``/health/live`` in turn, every answer timed. In production the
attacker is on another machine and the agent has its container's CPU; on this shared 2-core
machine the attacker runs at a lower scheduling priority (nice 10) and the sidecar and the
checker at a higher one (-10, where allowed), so that what is measured is the server's
behaviour under attack, not which process the kernel ran. What each test holds:

- every check answered 200, and the p99 of at least :data:`MIN_SAMPLES` checks within
  :data:`P99_BOUND_S` (the issue's promise; many samples, so one scheduling hiccup of a busy
  2-core machine cannot decide it);
- the probes saw nothing: no transition, no downtime in the SLA (HTTP load must never turn a
  healthy service into a 503);
- the server's RSS grew by less than :data:`RSS_GROWTH_CAP_MB` during the attack;
- no traceback on stderr, and bad requests logged at most a few lines per 10 s (rate-limited).

Speed is not asserted beyond the promise itself; the throughput numbers live in benchmarks/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.healthchecks.support import Gateway
from tests.integration.service_runner import ROOT, wait_for
from tests.reliability.apps.health_checker import check
from tests.reliability.support import rss_mb

ATTACKER = Path(__file__).resolve().parent / "apps" / "health_attacker.py"
CHECKER = Path(__file__).resolve().parent / "apps" / "health_checker.py"
P99_BOUND_S = 0.050
MIN_SAMPLES = 300
RSS_GROWTH_CAP_MB = 48.0
ATTACK_S = 8.0
MAX_CONNECTIONS = 256


@dataclass
class Sidecar:
    port: int
    proc: subprocess.Popen[bytes]
    stderr: Path
    gateway: Gateway

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def details(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health/details HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    doc: dict[str, Any] = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return doc


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    tmp = tmp_path_factory.mktemp("health-attacks")
    gateway = Gateway()
    port = free_port()
    config = tmp / "pulsetrace.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp / "store")},
        "health": {"listen": f"127.0.0.1:{port}", "max_connections": MAX_CONNECTIONS, "failure_threshold": 1,
                   "probes": [
                       {"name": "pay", "type": "http", "url": gateway.url + "/status", "interval": "1s",
                        "timeout": "0.9s", "critical": True, "sla": 99.9},
                       {"name": "fleet", "type": "rfid", "source": {"push": "true"}, "interval": "1s",
                        "timeout": "0.9s", "max_age": "120s", "sla": 99.0},
                   ]},
    }))
    stderr = tmp / "serve.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pulsetrace", "serve", "--config", str(config)], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    side = Sidecar(port, proc, stderr, gateway)
    _priority(proc.pid, -10)
    try:
        assert wait_for(lambda: check(port, "/health")[0] == 200, timeout=30), side.stderr_text()[-2000:]
        yield side
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        gateway.close()


def _priority(pid: int, value: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, value)
    except OSError:  # not allowed to raise priority here (not root): run as we are
        pass


def run_attack(side: Sidecar, mode: str, connections: int) -> dict[str, Any]:
    """Attack for ATTACK_S while the checker plays the ALB; asserts the promise and returns the numbers."""
    before = rss_mb(side.proc.pid)
    stderr_before = side.stderr_text()
    pay_before = details(side.port)["probes"]["pay"]
    attacker = subprocess.Popen([sys.executable, str(ATTACKER), mode, str(side.port), str(ATTACK_S), str(connections)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _priority(attacker.pid, 10)
    checker = subprocess.Popen([sys.executable, str(CHECKER), str(side.port), str(ATTACK_S), str(MIN_SAMPLES)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _priority(checker.pid, -10)
    peak = before
    deadline = time.monotonic() + ATTACK_S + 90
    while checker.poll() is None and time.monotonic() < deadline:
        peak = max(peak, rss_mb(side.proc.pid))
        time.sleep(0.2)  # sampling the RSS while the checker runs; the loop ends with the checker
    checked, checker_err = checker.communicate(timeout=30)
    out, err = attacker.communicate(timeout=30)
    report = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    peak = max(peak, rss_mb(side.proc.pid))
    samples = json.loads(checked.decode())["samples"]

    failed = [(p, s) for p, s, _ in samples if s != 200]
    latencies = [t for _, _, t in samples]
    assert not failed, f"{mode}: {len(failed)} of {len(samples)} checks were not 200: {failed[:10]}"
    assert len(samples) >= MIN_SAMPLES, checker_err.decode()[-500:]
    assert p99(latencies) <= P99_BOUND_S, (mode, p99(latencies), sorted(latencies)[-10:], report)
    assert peak - before < RSS_GROWTH_CAP_MB, (mode, before, peak)
    new_err = side.stderr_text()[len(stderr_before):]
    assert "Traceback" not in new_err, new_err[-3000:]
    pay = details(side.port)["probes"]["pay"]
    assert pay["status"] == "UP" and pay["transitions"] == pay_before["transitions"], pay
    assert pay["sla"]["windows"]["1h"]["downtime_s"] == 0
    return {"mode": mode, "samples": len(samples), "p99_ms": round(p99(latencies) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2), "rss_before": before, "rss_peak": peak,
            "attacker": report, "stderr": new_err, "attacker_stderr": err.decode()[-500:]}


def test_idle_connections_held_above_the_cap_cannot_lock_the_alb_out(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "hold", 2 * MAX_CONNECTIONS + 100)
    # The attacker held (and re-dialled) more connections than the cap: the server let the oldest go.
    assert result["attacker"]["connections"] > MAX_CONNECTIONS, result


def test_slowloris_connections_time_out_and_never_starve_health(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "slowloris", 300)
    assert result["attacker"]["connections"] >= 300, result


def test_a_pipelined_flood_that_never_reads_is_not_read_either_and_memory_stays_flat(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "pipeline-noread", 4)
    # Thousands were written; the server read only what one answer at a time allowed.
    assert result["attacker"]["requests"] >= 4 * 500, result


def test_a_pipelined_flood_that_reads_is_answered_behind_health(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "pipeline-read", 1)  # one connection, as in the red-team report
    assert result["attacker"]["responses"] > 1000, result  # it was served, just not ahead of /health


def test_malformed_and_oversized_requests_get_4xx_and_a_few_log_lines(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "malformed", 8)
    assert result["attacker"]["responses"] > 100, result  # each got its 4xx (or 503 when evicted)
    lines = [line for line in result["stderr"].splitlines() if "bad request" in line or "dropped" in line
             or "not logged" in line]
    # At most 10 lines per 10 s, plus the summary of what was left out: not one line per request.
    assert len(lines) <= 2 * 10 + 4, (len(lines), result["attacker"], lines[-5:])
    assert all(len(line) < 300 for line in lines)


def test_a_heartbeat_flood_over_a_large_fleet_keeps_the_probes_and_health_up(sidecar: Sidecar) -> None:
    result = run_attack(sidecar, "heartbeats", 4)
    assert result["attacker"]["responses"] > 20, result  # 1,500 beats a batch over 12,000 ids: evicting
    fleet = wait_for(lambda: (lambda f: f if f["measurements"].get("readers_total", 0) >= 9000 else None)(
        details(sidecar.port)["probes"]["fleet"]), timeout=15)
    assert fleet and fleet["status"] == "UP", fleet
    assert fleet["measurements"]["readers_total"] <= 10_000  # bounded: the longest unheard were evicted
    assert fleet["sla"]["windows"]["1h"]["downtime_s"] == 0
