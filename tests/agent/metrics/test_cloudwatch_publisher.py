"""The metrics flusher: its interval, its bounded buffer, its last flush, and the agent's self-metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pulsetrace.config.schema import Config
from pulsetrace.metrics.datum import MetricDatum, value_datum
from pulsetrace.metrics.publisher import SelfMetricsSource, build_publisher
from pulsetrace.metrics.request_metrics import build_recorder
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping
from tests.agent.metrics.test_emf_spec import validate_emf
from tests.servers import free_port

DIMS = (("Service", "shop-api"), ("Environment", "uat"))


def cfg_for(output: str, **cloudwatch: Any) -> Config:
    return config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                                "metrics": {"cloudwatch": {"mode": "emf", "emf_output": output, **cloudwatch}}}, {})


def read_docs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_flusher_thread_sends_every_interval_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "emf.log"
    rec = build_recorder(cfg_for(f"file:{path}", interval="1s"), SelfMetrics())
    assert rec is not None
    rec.start()
    try:
        rec.record("GET /a", "", 3.0, False, False)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not any(d.get("Operation") == "GET /a" for d in read_docs(path)):
            time.sleep(0.05)
        first = [d for d in read_docs(path) if d.get("Operation") == "GET /a"]
        assert first and first[0]["Requests"] == 1
        rec.record("GET /a", "", 3.0, False, False)
        rec.record("GET /a", "", 3.0, False, False)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and sum(d["Requests"] for d in read_docs(path)
                                                  if d.get("Operation") == "GET /a") < 3:
            time.sleep(0.05)
        docs = [d for d in read_docs(path) if d.get("Operation") == "GET /a"]
        assert docs[0]["Requests"] == 1 and sum(d["Requests"] for d in docs) == 3
        assert all(validate_emf(d) == [] for d in read_docs(path))
    finally:
        rec.shutdown(1.0)


def test_shutdown_sends_what_is_left_within_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "emf.log"
    rec = build_recorder(cfg_for(f"file:{path}", interval="1h"), SelfMetrics())
    assert rec is not None
    rec.start()
    rec.record("POST /payments", "", 3.0, True, False)
    started = time.monotonic()
    rec.shutdown(1.0)
    assert time.monotonic() - started < 1.5
    (doc,) = [d for d in read_docs(path) if d.get("Operation") == "POST /payments"]
    assert doc["Requests"] == 1 and doc["Errors"] == 1
    rec.shutdown(1.0)  # twice is fine


def test_while_the_destination_is_down_the_buffer_stays_bounded_and_drops_are_counted() -> None:
    metrics = SelfMetrics()
    port = free_port()  # nothing listens here
    publisher = build_publisher(cfg_for(f"tcp://127.0.0.1:{port}", max_buffer=100, timeout="200ms"), metrics,
                                self_metrics=False)
    assert publisher is not None
    now = time.time()
    for round_ in range(3):
        publisher.offer([value_datum(f"M{i}", "Count", DIMS, now, round_) for i in range(60)])
        started = time.monotonic()
        assert publisher.flush(timeout=1.0) is False
        assert time.monotonic() - started < 1.5
        assert publisher.pending() <= 100
    assert publisher.pending() == 100
    assert metrics.counter("metrics_dropped", "buffer_full") == 180 - 100
    assert metrics.gauges()["metrics_buffer_depth"] == 100
    publisher.shutdown(0.2)
    assert metrics.counter("metrics_dropped", "shutdown") == 100


def test_a_failing_source_does_not_stop_the_others(tmp_path: Path) -> None:
    path = tmp_path / "emf.log"
    metrics = SelfMetrics()
    publisher = build_publisher(cfg_for(f"file:{path}"), metrics, self_metrics=False)
    assert publisher is not None

    def broken(now: float) -> list[MetricDatum]:
        raise RuntimeError("boom")

    publisher.add_source(broken)
    publisher.add_source(lambda now: [value_datum("Requests", "Count", DIMS, now, 5)])
    assert publisher.flush(2.0)
    assert [d["Requests"] for d in read_docs(path)] == [5]
    assert metrics.counter("metrics_dropped", "source_failed") == 1
    publisher.shutdown(0.5)


def test_self_metrics_become_per_interval_deltas_and_named_gauges() -> None:
    metrics = SelfMetrics()
    source = SelfMetricsSource(metrics, DIMS)
    metrics.inc("spans_exported", 10, reason="otlp")
    metrics.inc("spans_dropped", 3, reason="queue_full")
    metrics.set_gauge("export_latency_s:otlp", 0.25)
    metrics.set_gauge("probe_loop_lag_s", 0.004)
    metrics.gauge_fn("export_queue_depth", lambda: 17.0)
    first = {(d.name, d.dimensions[2:]): d for d in source.collect(time.time())}
    assert first[("SpansExported", (("Exporter", "otlp"),))].value == 10
    assert first[("SpansDropped", (("Reason", "queue_full"),))].value == 3
    lat = first[("ExportLatency", (("Exporter", "otlp"),))]
    assert lat.unit == "Milliseconds" and lat.value == 250.0
    assert first[("ProbeLoopLag", ())].value == 4.0 and first[("ProbeLoopLag", ())].unit == "Milliseconds"
    depth = first[("ExportQueueDepth", ())]
    assert depth.value == 17 and depth.unit == "Count"
    metrics.inc("spans_exported", 5, reason="otlp")
    second = {(d.name, d.dimensions[2:]): d for d in source.collect(time.time())}
    assert second[("SpansExported", (("Exporter", "otlp"),))].value == 5
    assert second[("SpansDropped", (("Reason", "queue_full"),))].value == 0


def test_self_metrics_series_are_capped() -> None:
    metrics = SelfMetrics()
    for i in range(500):
        metrics.inc("weird_counter", reason=f"r{i}")
    assert len(SelfMetricsSource(metrics, DIMS).collect(time.time())) <= 100 + len(metrics.gauges())


def test_the_agent_publishes_its_own_self_metrics(tmp_path: Path) -> None:
    path = tmp_path / "emf.log"
    metrics = SelfMetrics()
    rec = build_recorder(cfg_for(f"file:{path}"), metrics)
    assert rec is not None
    metrics.inc("spans_dropped", 2, reason="queue_full")
    rec.flush(2.0)
    docs = read_docs(path)
    (dropped,) = [d for d in docs if "SpansDropped" in d]
    assert dropped["SpansDropped"] == 2 and dropped["Reason"] == "queue_full"
    assert all(validate_emf(d) == [] for d in docs)
    rec.shutdown(0.5)
