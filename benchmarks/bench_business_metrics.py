"""A business metric on the request path: ``pulsetrace.metric``/``count`` against the OpenTelemetry metrics SDK.

Ours: the public functions as application code calls them (``pulsetrace.metric("Revenue", amount,
unit="None", method=m)``, ``pulsetrace.count("UserRegistrations", method=m)``), with a running
agent's business-metrics recorder installed. Peer: the OpenTelemetry SDK's histogram
``record(amount, {"method": m})`` and counter ``add(1, {"method": m})`` on a MeterProvider with an
InMemoryMetricReader, the attribute dict written at the call as application code writes it.
Same inputs: four payment methods in turn, varying amounts, one thread.
"""

from __future__ import annotations

import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import pulsetrace
from benchmarks.harness import Comparison, interleaved
from pulsetrace.instrumentation import hooks
from pulsetrace.metrics.business import BusinessMetrics
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping

_METHODS = ("upi", "card", "netbanking", "wallet")
_INPUTS = [(_METHODS[i % 4], 10.0 + (i * 7919) % 5000 / 10.0) for i in range(512)]


def _ours(n: int) -> float:
    cfg = config_from_mapping({"service": {"name": "bench", "environment": "bench"},
                               "metrics": {"cloudwatch": {"mode": "emf"}}}, {})
    hooks.install(None, BusinessMetrics(cfg, SelfMetrics()))
    metric, count = pulsetrace.metric, pulsetrace.count
    inputs, k = _INPUTS, len(_INPUTS)
    try:
        start = time.perf_counter()
        for i in range(n):
            m, amount = inputs[i % k]
            metric("Revenue", amount, unit="None", method=m)
            count("UserRegistrations", method=m)
        return (time.perf_counter() - start) / n
    finally:
        hooks.clear()


def _peer(n: int) -> float:
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    revenue = meter.create_histogram("Revenue")
    registrations = meter.create_counter("UserRegistrations")
    record, add = revenue.record, registrations.add
    inputs, k = _INPUTS, len(_INPUTS)
    start = time.perf_counter()
    for i in range(n):
        m, amount = inputs[i % k]
        record(amount, {"method": m})
        add(1, {"method": m})
    return (time.perf_counter() - start) / n


def run(quick: bool) -> list[Comparison]:
    rounds, n = (3, 20_000) if quick else (9, 200_000)
    ours, peer = interleaved(rounds, lambda: _ours(n), lambda: _peer(n))
    return [Comparison(
        name="business metrics: metric() + count() on the request path",
        ours_label="pulsetrace.metric + pulsetrace.count", peer_label="OTel SDK histogram.record + counter.add",
        unit="s", ours=ours, peer=peer, goal=("<=", 0.2),
        note="one metric value and one count per iteration, one dimension (4 values), one thread")]
