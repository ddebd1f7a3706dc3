"""``opentelemetry-instrument`` with ``PULSETRACE_HEALTH=1`` runs the same probes and health server as
``pulsetrace run``: once per container, however many workers the server starts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.compat.support import BIN, get, start_app, stop_app
from tests.integration.service_runner import wait_for
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.timeout(120)

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def test_probes_and_health_server_run_once_under_opentelemetry_instrument(tmp_path: Path,
                                                                           redis_server: RedisServer) -> None:
    (tmp_path / "tinyapp.py").write_text(textwrap.dedent(APP))
    port, health_port = free_port(), free_port()
    running = start_app(tmp_path, "otel-health", [str(BIN / "uvicorn"), "tinyapp:app", "--workers", "2",
                                                  "--host", "127.0.0.1", "--port", str(port)],
                        port=port, cwd=tmp_path, wrapper=[str(BIN / "opentelemetry-instrument")],
                        env={"OTEL_PYTHON_DISTRO": "pulsetrace", "OTEL_PYTHON_CONFIGURATOR": "pulsetrace",
                             "PULSETRACE_HEALTH": "1"},
                        config_extra={"health": {"listen": f"127.0.0.1:{health_port}",
                                                 "probes": [{"name": "cache", "type": "redis", "url": redis_server.url,
                                                             "interval": 2, "timeout": 1, "critical": True}]}})
    try:
        assert get(running.url + "/")[0] == 200

        def up() -> bool:
            status, body = get(f"http://127.0.0.1:{health_port}/health")
            return status == 200 and json.loads(body)["status"] == "UP"

        assert wait_for(up, 20), running.output()
        status, body = get(f"http://127.0.0.1:{health_port}/health/details")
        assert status == 200 and json.loads(body)["probes"]["cache"]["status"] == "UP"
    finally:
        stop_app(running)
    output = running.output()
    assert "health server not started" not in output, output  # the workers left the port to the parent
    assert "Traceback" not in output, output
    # one start-up line per role, though uvicorn spawned two workers that start the agent again
    health_lines = [line for line in output.splitlines() if line.startswith("pulsetrace health: otel-health:")]
    assert len(health_lines) == 1 and f"health on http://127.0.0.1:{health_port}/health" in health_lines[0], output
    assert len([line for line in output.splitlines() if line.startswith("pulsetrace: otel-health (pid ")]) == 1, output
