"""The agent's own counters: thread safety and what a forked worker starts from."""

from __future__ import annotations

import threading

from pulsetrace.selfmetrics import SelfMetrics
from tests.instrumentation.test_sampling_limits import hold_lock_in_a_thread, run_in_forked_child


def test_counters_are_exact_under_threads() -> None:
    metrics = SelfMetrics()

    def work() -> None:
        for _ in range(5000):
            metrics.inc("spans_dropped", reason="queue_full")

    threads = [threading.Thread(target=work, name=f"inc-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.counter("spans_dropped", "queue_full") == 20_000


def test_a_forked_worker_starts_from_zero_with_a_usable_lock_and_keeps_its_gauge_callbacks() -> None:
    metrics = SelfMetrics()
    metrics.inc("spans_exported", 10)
    metrics.inc("spans_dropped", 3, reason="queue_full")
    metrics.set_gauge("queue_depth", 5.0)
    metrics.gauge_fn("live", lambda: 7.0)
    release = hold_lock_in_a_thread(metrics._lock)

    def child() -> None:
        # The parent's numbers are the parent's: a worker reporting them too would count them twice.
        assert metrics.counters() == {}
        assert metrics.gauges() == {"live": 7.0}
        metrics.inc("spans_exported", 2)
        assert metrics.counter("spans_exported") == 2

    try:
        assert run_in_forked_child(child) == 0
    finally:
        release()
    assert metrics.counter("spans_exported") == 10 and metrics.dropped() == {"queue_full": 3}
