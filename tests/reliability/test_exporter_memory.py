"""Memory stays bounded while the OTLP collector accepts connections and never reads.

The worst case for memory: every export hangs for its full timeout, so everything the
service produces piles up in the agent's buffers until their bounds drop it. Steady
load (``wrk -c2`` on a route making 21 spans per request, several thousand spans a
second) runs against a service whose OTLP endpoint is a TCP black hole; the worker's
RSS is sampled every second. The bounds are the defaults: ``tracing.queue_size``
(4096 spans) and 64 batches of at most ``tracing.batch_size`` (256) spans per exporter.

Promised and asserted: the drops are counted (``queue_full`` / ``backlog:otlp``, so the
bounds were reached, not merely approached); after the warm-up (the buffers filling,
the first 20 s) RSS grows by less than ``FLAT_MB``; and the whole growth over the
baseline stays under ``CAP_MB``. In CI the load runs 60 s; the slow variant runs 5 min.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from benchmarks.e2e_load import run_wrk
from tests.integration.service_runner import write_config
from tests.reliability.support import Blackhole, dropped, rss_mb, start_rel_service, stop_tree, worker_pids
from tests.servers import free_port

WARMUP_S = 20.0
FLAT_MB = 24.0
CAP_MB = 160.0


def _run(tmp_path: Path, seconds: float) -> None:
    port = free_port()
    hole = Blackhole(port)
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, extra={
        "tracing": {"exporters": ["otlp", "local"], "otlp": {"endpoint": f"http://127.0.0.1:{port}"},
                    "export_interval": "0.2s"}})
    svc = start_rel_service(tmp_path, cfg)
    try:
        pid = worker_pids(svc)[0]
        run_wrk(svc.url + "/spans?n=20", 2, connections=2)  # imports, pools, first allocations
        baseline = rss_mb(pid)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.wait(1.0):
                try:
                    samples.append((time.monotonic() - t0, rss_mb(pid)))
                except OSError:  # the worker is gone: the test fails on the missing samples
                    return

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        result = run_wrk(svc.url + "/spans?n=20", seconds, connections=2, timeout_s=5.0)
        stop.set()
        sampler.join(5)
        assert result.non_2xx == 0 and result.errors == 0, result
        reasons = dropped(store)
        assert any(r in reasons for r in ("queue_full", "backlog:otlp", "export_failed:otlp")), reasons
        after_warmup = [rss for t, rss in samples if t >= WARMUP_S]
        at_warmup = [rss for t, rss in samples if t < WARMUP_S][-1]
        growth_after = max(after_warmup) - at_warmup
        total = max(rss for _, rss in samples) - baseline
        trail = ", ".join(f"{t:.0f}s {rss:.0f}" for t, rss in samples[::5])
        print(f"RSS baseline {baseline:.0f} MB, at {WARMUP_S:.0f}s {at_warmup:.0f} MB, max {baseline + total:.0f} MB; "
              f"{result.requests} requests ({result.rps:.0f}/s); drops {reasons}; samples: {trail}")
        assert growth_after < FLAT_MB, f"RSS still growing after warm-up: +{growth_after:.1f} MB ({trail})"
        assert total < CAP_MB, f"RSS grew {total:.1f} MB over the baseline ({trail})"
    finally:
        stop_tree(svc)
        hole.close()


def test_memory_is_bounded_while_the_collector_never_reads(tmp_path: Path) -> None:
    _run(tmp_path, 60.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_memory_is_bounded_while_the_collector_never_reads_for_five_minutes(tmp_path: Path) -> None:
    _run(tmp_path, 300.0)
