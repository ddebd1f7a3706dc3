"""No secret ever leaves: DSN password, URL token, gateway credentials, health token.

Checked in every endpoint's body, ``check`` (table and JSON), ``sla``, ``serve``'s log, the
in-process log, and the metrics, including when a dependency's own error echoes a secret.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulsetrace.healthchecks.handle import start_in_thread
from tests.healthchecks.support import Answer, Gateway, health_config
from tests.servers import PG_PASSWORD, PostgresServer, free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
URL_TOKEN = "urlT0ken-5a9f"
BEARER = "g4teway-Bearer-77"
KEY_SECRET = "rzp-k3y-Secr3t-31"
HEALTH_TOKEN = "h34lth-Tok-19"
ECHO_PW = "Ech0ed-Pw-4411"
SECRETS = (PG_PASSWORD, URL_TOKEN, BEARER, KEY_SECRET, HEALTH_TOKEN, ECHO_PW)


class EchoingClient:
    """A custom probe whose client library puts the connection string in its errors (as some do)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def check(self) -> Any:
        raise ConnectionError(f"could not connect using {self.dsn} (server closed the connection)")


def probes(pg: PostgresServer, gw: Gateway) -> list[dict[str, Any]]:
    dead_dsn = pg.dsn.replace(f":{pg.port}/", f":{free_port()}/")
    return [
        {"name": "db", "type": "postgres", "dsn": pg.dsn, "interval": "2s", "timeout": "2s", "critical": True},
        {"name": "db_down", "type": "postgres", "dsn": dead_dsn, "interval": "2s", "timeout": "2s"},
        {"name": "status", "type": "http", "url": f"{gw.url}/status?token={URL_TOKEN}", "interval": "2s",
         "timeout": "2s", "headers": {"Authorization": f"Bearer {BEARER}"}},
        {"name": "razorpay", "type": "http", "preset": "razorpay", "url": gw.url, "username": "rzp_live_id",
         "password": KEY_SECRET, "interval": "2s", "timeout": "2s"},
        {"name": "queue", "type": "custom", "target": f"{__name__}:EchoingClient",
         "options": {"dsn": f"amqp://worker:{ECHO_PW}@127.0.0.1:5672/"}, "interval": "2s", "timeout": "2s"},
    ]


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}"


def fetch(port: int, path: str, token: str = "") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


@pytest.fixture
def gateway() -> Any:
    gw = Gateway()
    # The gateway refuses and echoes what it was sent, as some do.
    gw.answer = Answer(status=401, body=json.dumps({"error": f"bad credentials Bearer {BEARER} "
                                                             f"rzp_live_id:{KEY_SECRET} token={URL_TOKEN}"}).encode())
    yield gw
    gw.close()


def test_no_secret_in_endpoints_metrics_or_logs(postgres_server: PostgresServer, gateway: Gateway, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handle = start_in_thread(health_config(probes(postgres_server, gateway), tmp_path, token=HEALTH_TOKEN))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            d = handle.snapshot()
            if all(p.last_checked for p in d.probes.values()) and d.probes["db_down"].status.value == "DOWN":
                break
            time.sleep(0.05)
        details = fetch(handle.port, "/health/details", HEALTH_TOKEN)
        doc = json.loads(details)
        assert doc["probes"]["db"]["status"] == "UP"
        assert doc["probes"]["queue"]["status"] == "DOWN" and "amqp://****@127.0.0.1" in doc["probes"]["queue"]["detail"]
        assert doc["probes"]["status"]["detail"] == "HTTP 401 (expected 200)"
        assert "refused the credentials" in doc["probes"]["razorpay"]["detail"]
        bodies = {path: fetch(handle.port, path, token) for path, token in (
            ("/health", ""), ("/health/live", ""), ("/health/ready", ""), ("/metrics", ""), ("/nope", ""),
            ("/health/details", ""), ("/health/details", "wrong"))}
        bodies["/health/details (token)"] = details
        bodies["snapshot"] = json.dumps(handle.snapshot().to_dict())
    finally:
        handle.stop(1.0)
    for where, text in bodies.items():
        assert_clean(where, text)
    assert_clean("log", "\n".join(r.getMessage() for r in caplog.records))
    assert any("db_down" in r.getMessage() for r in caplog.records)  # transitions were logged


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from pulsetrace.cli.main import main; raise SystemExit(main())", *args,
                           "--config", str(config)], cwd=str(config.parent), env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


def test_no_secret_in_check_sla_or_serve_output(postgres_server: PostgresServer, gateway: Gateway,
                                                tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "pulsetrace.yaml"
    ps = probes(postgres_server, gateway)
    ps[-1]["target"] = "tests.integration.test_health_secrets:EchoingClient"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "store")},
                                      "health": {"listen": f"127.0.0.1:{port}", "token": HEALTH_TOKEN, "probes": ps}}))
    for args in (("check",), ("check", "--json"), ("sla",), ("sla", "--json")):
        out = cli(config, *args)
        assert "Traceback" not in out.stderr
        assert_clean(" ".join(args), out.stdout + out.stderr)
    assert cli(config, "check").returncode == 1  # db is UP, the others are not critical
    proc = subprocess.Popen([sys.executable, "-c", "from pulsetrace.cli.main import main; raise SystemExit(main())", "serve",
                             "--config", str(config)], cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout=15)
        time.sleep(1.0)
        metrics = fetch(port, "/metrics")
        details = fetch(port, "/health/details", HEALTH_TOKEN)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    log = proc.stderr.read() if proc.stderr else ""
    assert "db_down UNKNOWN -> DOWN" in log
    for where, text in (("serve log", log), ("serve metrics", metrics), ("serve details", details)):
        assert_clean(where, text)
