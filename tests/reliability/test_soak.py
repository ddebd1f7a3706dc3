"""Soak: 10 minutes of steady load on a service under ``pulsetrace run`` (slow; CI skips it).

``wrk -c4`` cycles through ``/hello``, ``/spans?n=5``, ``/cache`` and ``/db`` (real
Redis and PostgreSQL), every trace sampled and stored locally, with one health probe
per dependency. Every 5 s the RSS, open file descriptors and thread count of the
supervisor and of the worker are read from ``/proc``. Promised: after a 2-minute
warm-up they are flat: RSS within ``RSS_BAND_MB``, descriptors within ``FD_BAND``,
threads unchanged; and no request failed. ``PULSETRACE_SOAK_S`` shortens the run
(for trying the test itself; the promise is about 600 s).

Run it by hand: ``python -m pytest -m slow tests/reliability/test_soak.py``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks.e2e_load import run_wrk
from tests.integration.service_runner import write_config
from tests.reliability.support import (
    stop_tree,
    agent_tracebacks,
    fd_count,
    rss_mb,
    start_rel_service,
    thread_count,
    worker_pids,
)
from tests.servers import PostgresServer, RedisServer, free_port

SOAK_S = float(os.environ.get("PULSETRACE_SOAK_S", "600"))
WARMUP_S = min(120.0, SOAK_S / 4)
CHUNK_S = 30.0
RSS_BAND_MB = 20.0
FD_BAND = 6

LUA = """
local paths = {"/hello", "/spans?n=5", "/cache", "/db"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 300)
def test_ten_minutes_of_steady_load_leave_memory_fds_and_threads_flat(
        tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer) -> None:
    script = tmp_path / "mix.lua"
    script.write_text(LUA)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "store", health_port=free_port(), extra={"health": {"probes": [
        {"name": "db", "type": "postgres", "dsn": postgres_server.dsn, "interval": "2s", "critical": True},
        {"name": "cache", "type": "redis", "url": redis_server.url, "interval": "2s"}]}})
    svc = start_rel_service(tmp_path, cfg, env={"DB_DSN": postgres_server.dsn, "REDIS_URL": redis_server.url})
    try:
        pids = {"supervisor": svc.proc.pid, "worker": worker_pids(svc)[0]}
        samples: list[tuple[float, str, float, int, int]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.wait(5.0):
                if svc.proc.poll() is not None:
                    return
                for name, pid in pids.items():
                    samples.append((time.monotonic() - t0, name, rss_mb(pid), fd_count(pid), thread_count(pid)))

        sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
        sampler.start()
        requests = 0
        while time.monotonic() - t0 < SOAK_S:
            chunk = min(CHUNK_S, SOAK_S - (time.monotonic() - t0))
            result = run_wrk(svc.url, max(1.0, chunk), connections=4, script=script, timeout_s=5.0)
            assert result.non_2xx == 0 and result.errors == 0, result
            requests += result.requests
        stop.set()
        sampler.join(10)
        for name in pids:
            steady = [(rss, fds, th) for (t, n, rss, fds, th) in samples if n == name and t >= WARMUP_S]
            assert len(steady) >= 3, samples
            rss = [s[0] for s in steady]
            fds = [s[1] for s in steady]
            threads = {s[2] for s in steady}
            summary = (f"{name}: RSS {min(rss):.0f}–{max(rss):.0f} MB, fds {min(fds)}–{max(fds)}, threads {threads}, "
                       f"{requests} requests")
            print(summary)
            assert max(rss) - min(rss) < RSS_BAND_MB, summary
            assert max(fds) - min(fds) <= FD_BAND, summary
            assert len(threads) == 1, summary
    finally:
        stop_tree(svc)
    assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())
