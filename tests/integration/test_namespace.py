"""A service with its own ``agent``, ``instrumentation`` and ``healthchecks`` runs unchanged under ``pulsetrace run``.

Common names for a service's own modules were pulsetrace's top-level packages before
the one-namespace layout (issue #10), and that shadowed the service's modules: the
bootstrap ``sitecustomize`` imported ``agent.runtime`` (and through it
``instrumentation``) in every process under ``pulsetrace run`` before the application
was loaded, so the service's ``import agent`` found pulsetrace's package, already in
``sys.modules``, and ``agent.hello()`` failed at import time; and ``pulsetrace run``
put a source checkout's root ahead of the service's own ``PYTHONPATH``. Both tests
below fail that way on the old layout: the service never answers. Now the service
answers from its own modules, the agent runs in it, and its requests are traced into
the local store (read back with ``pulsetrace traces --json``).

The service is started as a user starts it: from its own folder (found through the
current directory) or from anywhere with its folder on ``PYTHONPATH`` (a container's
``ENV PYTHONPATH=/app``); nothing of the repository is on its path, pulsetrace comes
from the installed package only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.integration.service_runner import wait_for, write_config
from tests.servers import free_port, wait_port

SERVICE_FILES = {
    "agent.py": '''
        """The service's own agent: talks to the shop's warehouse robots."""
        WHO = "service-agent"

        def hello() -> str:
            return "hello from the service's own agent"
    ''',
    "instrumentation/__init__.py": '''
        """The service's own instrumentation package (its lab instruments)."""
        from instrumentation.spans import spans

        def tag() -> str:
            return "service-instrumentation"
    ''',
    # pulsetrace.instrumentation has a ``spans`` module too
    "instrumentation/spans.py": '''
        def spans() -> list[str]:
            return ["thermometer", "scale"]
    ''',
    "healthchecks.py": '''
        """The service's own health checks."""

        def status() -> dict[str, str]:
            return {"warehouse": "ok"}
    ''',
    "app.py": '''
        import sys

        import agent
        import healthchecks
        import instrumentation
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        GREETING = agent.hello()  # at import time, as the old layout broke it


        async def hello(request: Request) -> JSONResponse:
            return JSONResponse({
                "agent": GREETING,
                "instrumentation": [instrumentation.tag(), *instrumentation.spans()],
                "healthchecks": healthchecks.status(),
                "files": {name: sys.modules[name].__file__ for name in ("agent", "instrumentation", "healthchecks")},
                "pulsetrace_started": "pulsetrace.runtime" in sys.modules,
            })


        app = Starlette(routes=[Route("/hello", hello)])
    ''',
}


def make_service(folder: Path) -> Path:
    for name, text in SERVICE_FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


@pytest.mark.parametrize("found_through", ["current directory", "PYTHONPATH"])
def test_a_service_with_its_own_agent_instrumentation_and_healthchecks_runs_unchanged(
        tmp_path: Path, found_through: str) -> None:
    service = make_service(tmp_path / "service")
    store = tmp_path / "store"
    config = write_config(tmp_path / "pulsetrace.yaml", store, service="own-modules")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_"))}
    env.pop("PYTHONPATH", None)  # nothing of the repository: pulsetrace as installed
    if found_through == "PYTHONPATH":
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        env["PYTHONPATH"] = str(service)
    else:
        cwd = service
    port = free_port()
    log = tmp_path / "service.log"
    cmd = [sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(config), "--",
           sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_port(port, 30)
        except TimeoutError:
            raise AssertionError(f"the service did not start:\n{log.read_text(errors='replace')}") from None
        trace_id = secrets.token_hex(16)
        r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10,
                      headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
        assert r.status_code == 200, log.read_text(errors="replace")
        body = r.json()
        assert body["agent"] == "hello from the service's own agent"
        assert body["instrumentation"] == ["service-instrumentation", "thermometer", "scale"]
        assert body["healthchecks"] == {"warehouse": "ok"}
        for name, file in body["files"].items():
            assert Path(file).resolve().is_relative_to(service.resolve()), (name, file)
        assert body["pulsetrace_started"], log.read_text(errors="replace")

        def traced() -> list[dict[str, object]]:
            listing = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "traces", "--json",
                                      "--store", str(store)], capture_output=True, text=True, timeout=60,
                                     env=env, cwd=tmp_path, check=False)
            assert listing.returncode == 0, listing.stderr
            return [t for t in json.loads(listing.stdout or "[]") if t["trace_id"] == trace_id]

        found = wait_for(traced, timeout=20, interval=0.25)
        assert found, f"request not traced into {store}:\n{log.read_text(errors='replace')}"
        assert found[0]["service"] == "own-modules"
        assert found[0]["root"] == "GET /hello"
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
