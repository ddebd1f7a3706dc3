"""Start-up: ``pulsetrace run -- python -c pass`` against ``opentelemetry-instrument python -c pass``.

Both with their defaults (the upstream one through opentelemetry-distro: always-on
sampling, OTLP exporter), and bare ``python -c pass`` for reference. Rounds are
interleaved so machine noise hits every variant alike; each measurement is the
wall time of one whole command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Comparison, tool
from pulsetrace.demo.local_servers import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent

FEW = frozenset({"httpx", "asyncpg", "redis", "botocore"})


def _instrumentors() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}


def _wall(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(quick: bool) -> list[Comparison]:
    rounds = 5 if quick else 15
    cwd = tempfile.mkdtemp(prefix="pulsetrace-bench-startup-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PULSETRACE_"))}
    env["PULSETRACE_STORE"] = os.path.join(cwd, "store")
    ours = [sys.executable, "-m", "pulsetrace.cli.main", "run", "--", sys.executable, "-c", "pass"]
    oi = tool("opentelemetry-instrument")
    upstream = [oi, sys.executable, "-c", "pass"]
    # Upstream's default exporters send OTLP at exit: a local endpoint accepts it, as a collector would
    # (without one, each run would wait out the exporters' retries instead of measuring start-up).
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "benchmarks.e2e_peers", "--role", "sink", "--port", str(sink_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**env, "PYTHONPATH": str(ROOT)})
    wait_port(sink_port, 15)
    up_env = {**env, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
              "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
              "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    # Upstream activates every installed instrumentor at start, importing its library; this
    # environment has many. The "few" variant keeps only the client libraries of the e2e route.
    few_env = {**up_env, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(_instrumentors() - FEW)}
    bare = [sys.executable, "-c", "pass"]
    results = {"ours": [], "upstream": [], "few": [], "bare": []}  # type: dict[str, list[float]]
    for cmd, e in ((ours, env), (upstream, up_env), (upstream, few_env), (bare, env)):  # warm the page cache
        _wall(cmd, e, cwd)

    try:
        for i in range(rounds):
            order = [("ours", ours, env), ("upstream", upstream, up_env), ("few", upstream, few_env),
                     ("bare", bare, env)]
            if i % 2:
                order.reverse()
            for name, cmd, e in order:
                results[name].append(_wall(cmd, e, cwd))
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(cwd, ignore_errors=True)
    return [
        Comparison("start-up: wrap `python -c pass`", "pulsetrace run", "opentelemetry-instrument", "s",
                   results["ours"], results["upstream"], goal=("<=", 0.35),
                   note="wall time of the whole command; upstream via opentelemetry-distro defaults (OTLP over "
                   "http/protobuf to a local endpoint that accepts it), which activate "
                   "every installed instrumentor at start (importing Django, FastAPI, SQLAlchemy, Celery... here); "
                   "pulsetrace activates one when its library is first imported"),
        Comparison("start-up: wrap `python -c pass`, upstream with 4 instrumentors", "pulsetrace run",
                   "opentelemetry-instrument (httpx, asyncpg, redis, botocore only)", "s", results["ours"],
                   results["few"], goal=None, note="upstream with every other installed instrumentor disabled "
                   "(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS): the start-up cost without importing the other libraries"),
        Comparison("start-up: cost over bare python", "pulsetrace run", "python -c pass", "s",
                   results["ours"], results["bare"], goal=None),
    ]
