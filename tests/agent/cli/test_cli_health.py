"""``pulsetrace check``, ``sla`` and ``serve``: exit codes, tables, JSON, SIGTERM, history across restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulsetrace.cli.main import main
from pulsetrace.store import LocalStore
from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.history import HealthHistory
from pulsetrace.healthchecks.sla import MinuteRow
from tests.healthchecks import probes_for_tests as pft
from tests.healthchecks.support import Gateway
from tests.servers import free_port, wait_port

MOD = "tests.healthchecks.probes_for_tests"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    pft.reset()
    yield
    pft.reset()


def write_config(tmp_path: Path, probes: list[dict[str, Any]], **health: Any) -> Path:
    path = tmp_path / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")},
                                    "health": {"listen": f"127.0.0.1:{free_port()}", "probes": probes, **health}}))
    return path


def switch(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "custom", "target": f"{MOD}:Switch", "options": {"name": name}, "interval": "1s",
            "timeout": "0.5s", **extra}


@pytest.mark.parametrize(("states", "code", "overall"), [
    ({"db": Status.UP, "cache": Status.UP}, 0, "UP"),
    ({"db": Status.UP, "cache": Status.DOWN}, 1, "DEGRADED"),
    ({"db": Status.DOWN, "cache": Status.UP}, 2, "DOWN"),
])
def test_check_exit_code_follows_the_overall_status(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    states: dict[str, Any], code: int, overall: str) -> None:
    pft.STATE.update(states)
    cfg = write_config(tmp_path, [switch("db", critical=True), switch("cache")])
    assert main(["check", "--config", str(cfg)]) == code
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["PROBE", "STATUS", "CRITICAL", "LATENCY", "DETAIL"]
    assert f"overall: {overall}" in out
    assert not (tmp_path / "store").exists()  # check writes nothing


def test_check_json_is_the_details_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [switch("db")])
    assert main(["check", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "UP" and doc["probes"]["db"]["status"] == "UP"
    assert set(doc["probes"]["db"]["sla"]["windows"]) == {"1h", "24h", "7d", "30d"}


def test_check_with_no_probes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(write_config(tmp_path, []))]) == 0
    assert "no probes configured" in capsys.readouterr().out


def test_check_with_a_bad_probe_config_is_one_line_per_problem(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [{"name": "db", "type": "postgres"}, {"name": "x", "type": "redis", "url": "r",
                                                                        "thresholds": {"pingms": 1}}])
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "health.probes[0].dsn: is required for a postgres probe" in err
    assert any(line.startswith("health.probes[1].thresholds.pingms: unknown threshold") for line in err)
    assert not any("Traceback" in line for line in err)


def seed_history(store_dir: Path, now: float) -> None:
    """db: 24 h observed, one 30-minute outage 2 h ago; cache: nothing."""
    history = HealthHistory(LocalStore(store_dir))
    last = int(now // 60) - 1
    rows = []
    for m in range(last - 1439, last + 1):
        down = last - 150 < m <= last - 120
        rows.append(MinuteRow(m, 0.0 if down else 60.0, 0.0, 60.0 if down else 0.0, 0 if down else 4, 0,
                              4 if down else 0, {40: 4}))
    history.save_minutes("db", rows)


def test_sla_json_is_hand_computable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [switch("db", sla=99.9, impact={"revenue_per_minute": 10}), switch("cache")])
    seed_history(tmp_path / "store", time.time())
    assert main(["sla", "--config", str(cfg), "--json", "--window", "30d"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["window"] == "30d"
    db, cache = doc["probes"]
    assert db["name"] == "db" and db["target"] == 99.9
    assert db["budget_total_s"] == pytest.approx(2592.0)
    assert db["availability"] == pytest.approx(100 * (1 - 1800 / 86400), abs=1e-4)  # percent, like target
    assert db["budget_remaining_s"] == pytest.approx(2592.0 - 1800.0)
    assert db["burn_rate"] == pytest.approx((1800 / 86400) / 0.001, rel=1e-4)
    assert db["revenue_at_risk"] == pytest.approx(300.0)
    assert cache["availability"] is None
    assert main(["sla", "--config", str(cfg), "--json", "--window", "1h"]) == 0
    hour = json.loads(capsys.readouterr().out)["probes"][0]
    assert hour["availability"] == 100.0 and hour["budget_remaining_s"] == pytest.approx(3.6)


def test_sla_table_is_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [switch("db", sla=99.9, impact={"revenue_per_minute": 10}), switch("cache")])
    seed_history(tmp_path / "store", time.time())
    assert main(["sla", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SLA over the last 30d")
    assert lines[1].split()[:3] == ["PROBE", "TARGET", "AVAILABILITY"]
    db = next(line for line in lines if line.startswith("db "))
    assert "97.917%" in db and "43m12s" in db and "13m12s (31%)" in db and "300.00" in db
    cache = next(line for line in lines if line.startswith("cache "))
    assert "no data" in cache


def test_sla_rejects_a_bad_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [switch("db")])
    assert main(["sla", "--config", str(cfg), "--window", "90d"]) == 2
    assert main(["sla", "--config", str(cfg), "--window", "soon"]) == 2
    assert "out of range" in capsys.readouterr().err


# -- serve (a real subprocess) ------------------------------------------------------------------------------


def serve(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", "from pulsetrace.cli.main import main; raise SystemExit(main())", "serve",
                             "--config", str(config)], cwd=str(config.parent), env=env, stderr=subprocess.PIPE,
                            text=True)


def port_of(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["health"]["listen"].rsplit(":", 1)[1])


def details(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/details", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_for(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, proc.stderr.read() if proc.stderr else ""


def test_serve_answers_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [switch("db", interval="0.2s", timeout="0.1s")])
    proc = serve(cfg)
    try:
        wait_port(port_of(cfg), timeout=15)
        assert wait_for(lambda: details(port_of(cfg))["status"] == "UP")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "health on http://127.0.0.1:" in err and "Traceback" not in err


def test_serve_keeps_the_sla_across_a_restart(tmp_path: Path) -> None:
    gw = Gateway()
    gw.answer.status = 500  # the gateway is failing during the first run
    cfg = write_config(tmp_path, [{"name": "pay", "type": "http", "url": gw.url + "/status", "interval": "0.2s",
                                   "timeout": "0.15s", "sla": 99.0}], failure_threshold=1)
    try:
        proc = serve(cfg)
        try:
            wait_port(port_of(cfg), timeout=15)
            assert wait_for(lambda: details(port_of(cfg))["probes"]["pay"]["sla"]["windows"]["30d"]["downtime_s"] >= 1.0)
        finally:
            code, err = stop(proc)
        assert code == 0, err
        gw.answer.status = 200
        proc = serve(cfg)
        try:
            wait_port(port_of(cfg), timeout=15)
            doc = wait_for(lambda: (d := details(port_of(cfg)))["probes"]["pay"]["status"] == "UP" and d)
            window = doc["probes"]["pay"]["sla"]["windows"]["30d"]
            assert window["downtime_s"] >= 1.0  # the first run's outage is still counted
            assert 0 < window["availability"] < 100
            assert [t["to"] for t in doc["probes"]["pay"]["transitions"]][:1] == ["DOWN"]
        finally:
            code, err = stop(proc)
        assert code == 0, err
    finally:
        gw.close()
    out = subprocess.run([sys.executable, "-c", "from pulsetrace.cli.main import main; raise SystemExit(main())", "sla",
                          "--config", str(cfg), "--json"], cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["probes"][0]["downtime_s"] >= 1.0


def test_serve_on_a_taken_port_is_one_line_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        path = tmp_path / "pulsetrace.yaml"
        path.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")},
                                        "health": {"listen": f"127.0.0.1:{s.getsockname()[1]}", "probes": []}}))
        out = subprocess.run([sys.executable, "-c", "from pulsetrace.cli.main import main; raise SystemExit(main())", "serve",
                              "--config", str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("pulsetrace: cannot listen on 127.0.0.1:") and "Traceback" not in out.stderr


def test_serve_publishes_health_metrics_as_emf_when_cloudwatch_is_on(tmp_path: Path) -> None:
    emf = tmp_path / "emf.jsonl"
    path = tmp_path / "pulsetrace.yaml"
    port = free_port()
    path.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "store")},
        "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{emf}", "interval": "1s"}},
        "health": {"listen": f"127.0.0.1:{port}", "probes": [switch("db", interval="0.2s", timeout="0.1s")]}}))
    proc = serve(path)
    try:
        wait_port(port, timeout=15)
        assert wait_for(lambda: details(port)["status"] == "UP")
        time.sleep(1.5)
    finally:
        code, err = stop(proc)
    assert code == 0, err
    docs = [json.loads(line) for line in emf.read_text().splitlines() if line.strip()]
    assert any(d.get("Probe") == "db" and "ProbeStatus" in d for d in docs)
