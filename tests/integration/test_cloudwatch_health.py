"""Health metrics from the real health service probing a real Redis, through the snapshot listener to EMF.

Redis up → ProbeStatus 0, ProbeUp 1, HealthStatus 0; frozen with SIGSTOP → the probe goes
DOWN at its timeout and the next interval says ProbeStatus 2 with ProbeUp samples at 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pulsetrace.validation import config_from_mapping
from pulsetrace.metrics.health_metrics import wire_health_metrics
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.healthchecks.handle import start_in_thread
from tests.agent.metrics.test_emf_spec import validate_emf
from tests.servers import RedisServer, free_port


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_probe_results_become_valid_health_metrics_and_follow_an_outage(tmp_path: Path, redis_own: RedisServer) -> None:
    emf = tmp_path / "emf.log"
    cfg = config_from_mapping({
        "service": {"name": "shop-api", "environment": "uat"},
        "store": {"path": str(tmp_path / "store")},
        "health": {"listen": f"127.0.0.1:{free_port()}", "failure_threshold": 1, "success_threshold": 1,
                   "probes": [{"name": "cache", "type": "redis", "url": redis_own.url, "interval": "0.3s",
                               "timeout": "0.25s", "critical": True, "sla": 99.5,
                               "impact": {"revenue_per_minute": 60, "users": 100}}]},
        "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{emf}"}},
    }, {})
    handle = start_in_thread(cfg)
    publisher = wire_health_metrics(cfg, handle.add_snapshot_listener, SelfMetrics())  # as `run`/`serve` do
    assert publisher is not None
    try:
        # At least two results before the first flush (a fixed sleep was flaky on two busy cores).
        seen: set[object] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 3:
            seen.add(handle.snapshot().probes["cache"].last_checked)
            time.sleep(0.05)
        time.sleep(0.1)
        assert publisher.flush(2.0)
        up_docs = docs_of(emf)
        assert up_docs and all(validate_emf(d) == [] for d in up_docs)
        by_metric = {m["Name"]: d for d in up_docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert "MetricsBufferDepth" in by_metric  # the supervisor's own self-metrics ride along
        assert by_metric["HealthStatus"]["HealthStatus"] == 0
        assert by_metric["ProbeStatus"]["ProbeStatus"] == 0 and by_metric["ProbeStatus"]["Probe"] == "cache"
        probe_up = by_metric["ProbeUp"]["ProbeUp"]
        assert probe_up["Count"] >= 2 and probe_up["Sum"] == probe_up["Count"]
        assert by_metric["ProbeLatency"]["ProbeLatency"]["Count"] == probe_up["Count"]
        avail = [d for d in up_docs if "Availability" in d and d["Window"] == "1h"]
        assert avail and avail[0]["Availability"] == 100.0

        redis_own.freeze()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and handle.snapshot().probes["cache"].status.value != "DOWN":
            time.sleep(0.1)
        time.sleep(0.8)
        emf.write_text("")
        assert publisher.flush(2.0)
        down_docs = docs_of(emf)
        assert all(validate_emf(d) == [] for d in down_docs)
        by_metric = {m["Name"]: d for d in down_docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert by_metric["ProbeStatus"]["ProbeStatus"] == 2
        assert by_metric["HealthStatus"]["HealthStatus"] == 2
        assert by_metric["ProbeUp"]["ProbeUp"]["Sum"] < by_metric["ProbeUp"]["ProbeUp"]["Count"]
        assert by_metric["UsersAffected"]["UsersAffected"] == 100
        assert by_metric["RevenueAtRisk"]["RevenueAtRisk"] > 0
    finally:
        redis_own.thaw()
        handle.stop()
        publisher.shutdown(0.5)
