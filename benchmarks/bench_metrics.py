"""Recording one request's metrics: pulsetrace's recorder against the OpenTelemetry metrics SDK, same run.

Ours: ``Recorder.record(operation, tier, latency_ms, error, fault)`` (Requests, Errors,
Faults and the latency distribution). Peer: the OpenTelemetry SDK recording a counter
and a histogram with the same two attributes (operation, tier) on a MeterProvider with
an InMemoryMetricReader, the attribute dicts built once up front. Both see the same
inputs: 8 operations in turn, varying latencies, one request in ten failing.

Also reported: the per-interval flush of 200 operations (ours: collect + EMF encoding;
peer: the reader's collection).
"""

from __future__ import annotations

import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pulsetrace.validation import config_from_mapping
from pulsetrace.metrics.emf import emf_documents, encode
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.metrics.request_metrics import Recorder
from benchmarks.harness import Comparison, interleaved

_OPS = [("POST /payments", "critical"), ("GET /orders/{order_id}", "business"), ("GET /catalog", "general"),
        ("payment.create", "critical"), ("rfid.verify", "business"), ("GET /health", "health"),
        ("POST /orders", "business"), ("GET /users/{user_id}", "general")]
_INPUTS = [(op, tier, 3.0 + (i * 7919) % 400 / 10.0, i % 10 == 0, i % 97 == 0)
           for i, (op, tier) in enumerate(_OPS * 64)]


def _cfg() -> object:
    return config_from_mapping({"service": {"name": "bench", "environment": "bench"},
                                "metrics": {"cloudwatch": {"mode": "emf"}}}, {})


def _ours_record(n: int) -> float:
    rec = Recorder(_cfg(), SelfMetrics())  # type: ignore[arg-type]
    record = rec.record
    inputs = _INPUTS
    k = len(inputs)
    start = time.perf_counter()
    for i in range(n):
        op, tier, ms, err, fault = inputs[i % k]
        record(op, tier, ms, err, fault)
    return (time.perf_counter() - start) / n


def _peer_record(n: int) -> float:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("bench")
    counter = meter.create_counter("requests", unit="1")
    histogram = meter.create_histogram("latency", unit="ms")
    attrs = {(op, tier): {"operation": op, "tier": tier} for op, tier in _OPS}
    inputs = [(attrs[(op, tier)], ms) for op, tier, ms, _, _ in _INPUTS]
    k = len(inputs)
    add, rec = counter.add, histogram.record
    start = time.perf_counter()
    for i in range(n):
        a, ms = inputs[i % k]
        add(1, a)
        rec(ms, a)
    return (time.perf_counter() - start) / n


def _name(i: int) -> str:
    """A distinct operation name without digits (digits would read as ids and be folded)."""
    letters = ""
    while True:
        letters += chr(97 + i % 26)
        i //= 26
        if not i:
            return f"op.{letters}"


def _ours_flush(ops: int) -> float:
    rec = Recorder(config_from_mapping({"service": {"name": "bench", "environment": "bench"},
                                        "metrics": {"cloudwatch": {"mode": "emf", "max_operations": ops}}}, {}),
                   SelfMetrics())
    for i in range(ops):
        for j in range(20):
            rec.record(_name(i), "general", 1.0 + j * 3.7, j == 0, False)
    start = time.perf_counter()
    data = rec.collect(time.time())
    for doc, _ in emf_documents(data, "PulseTrace"):
        encode(doc)
    elapsed = time.perf_counter() - start
    assert len(data) == 4 * (ops + 2)  # per operation, the tier, the service
    return elapsed


def _peer_flush(ops: int) -> float:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("bench")
    counter = meter.create_counter("requests")
    histogram = meter.create_histogram("latency", unit="ms")
    for i in range(ops):
        a = {"operation": _name(i), "tier": "general"}
        for j in range(20):
            counter.add(1, a)
            histogram.record(1.0 + j * 3.7, a)
    start = time.perf_counter()
    reader.get_metrics_data()
    return time.perf_counter() - start


def run(quick: bool) -> list[Comparison]:
    rounds, n = (3, 20_000) if quick else (9, 200_000)
    ours, peer = interleaved(rounds, lambda: _ours_record(n), lambda: _peer_record(n))
    record = Comparison(
        name="request metrics: one request recorded", ours_label="Recorder.record (4 metrics)",
        peer_label="OTel SDK counter.add + histogram.record", unit="s", ours=ours, peer=peer, goal=("<=", 1.0),
        note="ours counts Requests, Errors, Faults and a latency distribution; the peer one counter and one "
             "histogram; same 8 operations, same latencies, one thread")
    f_ours, f_peer = interleaved(rounds, lambda: _ours_flush(200), lambda: _peer_flush(200))
    flush = Comparison(
        name="request metrics: flush of 200 operations", ours_label="collect + EMF documents encoded",
        peer_label="OTel InMemoryMetricReader collect", unit="s", ours=f_ours, peer=f_peer, goal=None,
        note="once per interval, on the flusher thread (report only)")
    return [record, flush]
