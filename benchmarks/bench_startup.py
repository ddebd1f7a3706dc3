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

from benchmarks.harness import Comparison


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
    oi = shutil.which("opentelemetry-instrument")
    if oi is None:
        raise RuntimeError("opentelemetry-instrument is not installed (pip install '.[dev]')")
    upstream = [oi, sys.executable, "-c", "pass"]
    up_env = {**env, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}
    bare = [sys.executable, "-c", "pass"]
    results = {"ours": [], "upstream": [], "bare": []}  # type: dict[str, list[float]]
    for cmd, e in ((ours, env), (upstream, up_env), (bare, env)):  # warm the page cache
        _wall(cmd, e, cwd)
    for i in range(rounds):
        order = [("ours", ours, env), ("upstream", upstream, up_env), ("bare", bare, env)]
        if i % 2:
            order.reverse()
        for name, cmd, e in order:
            results[name].append(_wall(cmd, e, cwd))
    shutil.rmtree(cwd, ignore_errors=True)
    return [
        Comparison("start-up: wrap `python -c pass`", "pulsetrace run", "opentelemetry-instrument", "s",
                   results["ours"], results["upstream"], goal=("<=", 0.35),
                   note="wall time of the whole command; upstream via opentelemetry-distro defaults"),
        Comparison("start-up: cost over bare python", "pulsetrace run", "python -c pass", "s",
                   results["ours"], results["bare"], goal=None),
    ]
