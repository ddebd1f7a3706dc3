"""Alerts end to end under ``pulsetrace serve`` with real PostgreSQL and Redis and loopback channel receivers.

PostgreSQL stopped → one critical alert per routed channel (Discord red, PagerDuty trigger), within
interval × threshold + group_wait; restarted → one resolve each with the same dedup key. Redis frozen
with SIGSTOP (a non-critical probe) → one warning (Slack orange). A silence covering the probe → nothing
sent, and ``pulsetrace alerts`` shows it. No URL, token or routing key in any output of the agent.
"""

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

from tests.alerts.receivers import DISCORD_TOKEN, HOOK_TOKEN, PD_KEY, SLACK_TOKEN, Receiver
from tests.alerts.support import channels_for
from tests.integration.service_runner import ROOT, wait_for
from tests.servers import PostgresServer, RedisServer, free_port

SECRETS = (DISCORD_TOKEN, SLACK_TOKEN, PD_KEY, HOOK_TOKEN, "112233445566778899")
INTERVAL, TIMEOUT, THRESHOLD, GROUP_WAIT = 0.5, 0.4, 2, 1.0


def serve_config(tmp: Path, receivers: dict[str, Receiver], pg: PostgresServer, redis: RedisServer,
                 **alerts: Any) -> tuple[Path, int]:
    port = free_port()
    doc = {
        "service": {"name": "shop-api", "environment": "uat"},
        "store": {"path": str(tmp / "store")},
        "health": {"listen": f"127.0.0.1:{port}", "failure_threshold": THRESHOLD, "success_threshold": THRESHOLD,
                   "probes": [
                       {"name": "db", "type": "postgres", "dsn": pg.dsn, "critical": True, "interval": f"{INTERVAL}s",
                        "timeout": f"{TIMEOUT}s", "impact": {"revenue_per_minute": 120, "users": 5000}},
                       {"name": "cache", "type": "redis", "url": redis.url, "interval": f"{INTERVAL}s",
                        "timeout": "0.3s"}]},
        "alerts": {"channels": channels_for(receivers),
                   "routes": [{"severity": ["critical"], "channels": ["oncall", "team"]},
                              {"severity": ["warning", "business"], "channels": ["ops", "team"]}],
                   "group_wait": f"{GROUP_WAIT}s", "evaluate_interval": "0.5s", **alerts},
    }
    path = tmp / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, port


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path, port: int) -> subprocess.Popen[bytes]:
        log = (tmp_path / "serve.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "serve", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        procs.append(proc)
        assert wait_for(lambda: get(port, "/health")[0] == 200, 30), (tmp_path / "serve.log").read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_outage_pages_once_and_resolves_once_per_routed_channel_and_leaks_no_secret(
        tmp_path: Path, receivers: dict[str, Receiver], postgres_own: PostgresServer, redis_own: RedisServer,
        serve: Any) -> None:
    config, port = serve_config(tmp_path, receivers, postgres_own, redis_own)
    proc = serve(config, port)
    team, oncall, ops = receivers["team"], receivers["oncall"], receivers["ops"]
    time.sleep(2 * GROUP_WAIT)
    assert all(not r.requests for r in receivers.values())  # healthy: nothing sent

    postgres_own.stop()
    stopped = time.monotonic()
    team.wait_for(1, timeout=30)
    oncall.wait_for(1, timeout=30)
    took = time.monotonic() - stopped
    # interval × threshold (+ the probe timeouts) + group_wait, with room for two busy cores
    assert took <= (INTERVAL + TIMEOUT) * THRESHOLD + GROUP_WAIT + 0.5 + 8.0
    embed = team.bodies()[0]["embeds"][0]
    assert embed["color"] == 0xFF0000 and "db is DOWN" in embed["title"]
    trigger = oncall.bodies()[0]
    assert trigger["event_action"] == "trigger" and trigger["payload"]["severity"] == "critical"
    report = json.loads(cli(config, "alerts", "--json").stdout)
    assert [(a["key"], a["state"], a["channels"]) for a in report["alerts"]] == [("probe:db", "firing",
                                                                                  ["oncall", "team"])]

    postgres_own.start()
    team.wait_for(2, timeout=40)
    oncall.wait_for(2, timeout=40)
    resolve = oncall.bodies()[1]
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == trigger["dedup_key"] == "probe:db"
    assert team.bodies()[1]["embeds"][0]["color"] == 0x00DD00
    assert not ops.requests and not receivers["hook"].requests  # not routed there

    redis_own.freeze()
    try:
        ops.wait_for(1, timeout=30)
        team.wait_for(3, timeout=30)
    finally:
        redis_own.thaw()
    assert ops.bodies()[0]["attachments"][0]["color"] == "#ff9500"
    assert team.bodies()[2]["embeds"][0]["color"] == 0xFF9900 and "cache is DOWN" in team.bodies()[2]["embeds"][0]["title"]
    ops.wait_for(2, timeout=40)  # cache resolved

    time.sleep(2 * GROUP_WAIT)
    assert len(oncall.requests) == 2 and len(team.requests) == 4 and len(ops.requests) == 2  # once each, no repeats
    for rec in receivers.values():
        assert rec.errors == []
    status, details = get(port, "/health/details")
    _, metrics = get(port, "/metrics")
    assert status == 200 and b"pulsetrace_agent_alerts_sent_total" in metrics
    status_out = cli(config, "status")
    assert "alerts     sent" in status_out.stdout
    validate = cli(config, "config", "validate", str(config))
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    store_bytes = b"".join(p.read_bytes() for p in (tmp_path / "store").iterdir() if p.is_file())
    outputs = [(tmp_path / "serve.log").read_bytes(), store_bytes, details, metrics,
               (validate.stdout + validate.stderr + status_out.stdout).encode()]
    for secret in SECRETS:
        for blob in outputs:
            assert secret.encode() not in blob


def test_a_silence_covering_the_probe_sends_nothing_and_is_listed(
        tmp_path: Path, receivers: dict[str, Receiver], postgres_server: PostgresServer, redis_own: RedisServer,
        serve: Any) -> None:
    config, port = serve_config(tmp_path, receivers, postgres_server, redis_own, silences=[
        {"match": {"probe": "cache"}, "starts": "2020-01-01T00:00:00Z", "ends": "2999-01-01T00:00:00Z",
         "comment": "redis upgrade"}])
    serve(config, port)
    redis_own.freeze()
    try:
        def silenced() -> bool:
            alerts = json.loads(cli(config, "alerts", "--json").stdout)["alerts"]
            return any(a["key"] == "probe:cache" and a["state"] == "silenced" for a in alerts)

        assert wait_for(silenced, 30, 0.5)
        time.sleep(3 * GROUP_WAIT)
        out = cli(config, "alerts").stdout
    finally:
        redis_own.thaw()
    time.sleep(3 * GROUP_WAIT)  # its resolve is not sent either: its firing never was
    assert all(not r.requests for r in receivers.values())
    assert "silenced" in out and "silence   active     probe=cache" in out and "redis upgrade" in out
