"""The request-path recorder: what it counts, how it names operations and tiers, and its bounds."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from typing import Any

import pytest

from pulsetrace.config.problems import ConfigError
from pulsetrace.config.schema import Config
from pulsetrace.metrics.datum import MetricDatum
from pulsetrace.metrics.request_metrics import OTHER, Recorder, build_recorder, canonical_operation
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping


def make_cfg(**cloudwatch: Any) -> Config:
    return config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                                "metrics": {"cloudwatch": {"mode": "emf", **cloudwatch}}}, {})


def by(data: list[MetricDatum], name: str, **dims: str) -> MetricDatum:
    found = [d for d in data if d.name == name and dict(d.dimensions) == {"Service": "shop-api",
                                                                          "Environment": "uat", **dims}]
    assert len(found) == 1, (name, dims, [(d.name, d.dimensions) for d in data])
    return found[0]


def percentile(d: MetricDatum, q: float) -> float:
    """The percentile CloudWatch would read from values/counts (nearest rank)."""
    rank = math.ceil(q * d.count)
    seen = 0.0
    for value, count in zip(d.values, d.counts):
        seen += count
        if seen >= rank:
            return value
    return d.values[-1]


def test_requests_errors_and_faults_are_counted_per_operation_tier_and_service() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    for i in range(300):
        rec.record("POST /payments", "", 20.0, error=i % 10 == 0, fault=False)
    for _ in range(7):
        rec.record("GET /orders/{order_id}", "", 5.0, error=False, fault=True)
    data = rec.collect(time.time())
    assert by(data, "Requests", Operation="POST /payments").value == 300
    assert by(data, "Errors", Operation="POST /payments").value == 30
    assert by(data, "Faults", Operation="POST /payments").value == 0
    assert by(data, "Faults", Operation="GET /orders/{order_id}").value == 7
    assert by(data, "Requests", Tier="critical").value == 300  # /payments* → critical by the default rules
    assert by(data, "Requests", Tier="business").value == 7    # /orders* → business
    assert by(data, "Requests").value == 307
    assert by(data, "Errors").value == 30 and by(data, "Faults").value == 7


def test_a_fault_is_not_also_an_error_so_failure_rate_is_errors_plus_faults() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    rec.record("payment.create", "critical", 10.0, error=True, fault=True)
    rec.record("payment.create", "critical", 10.0, error=True, fault=False)
    rec.record("payment.create", "critical", 10.0, error=False, fault=False)
    data = rec.collect(time.time())
    assert by(data, "Errors", Operation="payment.create").value == 1
    assert by(data, "Faults", Operation="payment.create").value == 1
    assert by(data, "Requests", Operation="payment.create").value == 3


def test_latency_has_exact_count_sum_min_max_and_percentiles_within_a_bucket() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(3.0, 1.0) for _ in range(5000)]
    rec = Recorder(make_cfg(), SelfMetrics())
    for ms in samples:
        rec.record("GET /catalog", "", ms, False, False)
    lat = by(rec.collect(time.time()), "Latency", Operation="GET /catalog")
    assert lat.unit == "Milliseconds"
    assert lat.count == 5000 and sum(lat.counts) == 5000
    assert lat.total == pytest.approx(sum(samples))
    # What CloudWatch computes from values × counts equals the exact sum (each value is its bucket's mean).
    assert sum(v * c for v, c in zip(lat.values, lat.counts)) == pytest.approx(sum(samples), rel=1e-6)
    assert lat.minimum == min(samples) and lat.maximum == max(samples)
    assert len(lat.values) <= 100
    exact = sorted(samples)
    for q in (0.5, 0.9, 0.99):
        true = exact[math.ceil(q * len(exact)) - 1]
        assert percentile(lat, q) == pytest.approx(true, rel=0.1), q


def test_tier_comes_from_the_caller_or_else_from_the_sampling_rules() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    rec.record("GET /health", "", 1.0, False, False)
    rec.record("POST /login", "", 1.0, False, False)
    rec.record("GET /catalog", "", 1.0, False, False)
    rec.record("rfid.verify", "business", 1.0, False, False)
    rec.record("nightly.job", "", 1.0, False, False)
    rec.record("odd.job", "no-such-tier", 1.0, False, False)
    data = rec.collect(time.time())
    tiers = {dict(d.dimensions)["Tier"]: d.value for d in data if d.name == "Requests" and
             "Tier" in dict(d.dimensions)}
    assert tiers == {"health": 1, "critical": 1, "general": 3, "business": 1}


def test_a_rule_with_a_span_name_glob_assigns_business_operations() -> None:
    cfg = config_from_mapping({"service": {"name": "shop-api", "environment": "uat"},
                               "tracing": {"sampling": {"rules": [{"tier": "critical", "name": "payment.*"}]}},
                               "metrics": {"cloudwatch": {"mode": "emf"}}}, {})
    rec = Recorder(cfg, SelfMetrics())
    rec.record("payment.refund", "", 1.0, False, False)
    rec.record("POST /payments", "", 1.0, False, False)  # the default rules are replaced: general
    data = rec.collect(time.time())
    assert by(data, "Requests", Tier="critical").value == 1
    assert by(data, "Requests", Tier="general").value == 1


@pytest.mark.parametrize("raw, expected", [
    ("GET /users/8812/orders", "GET /users/{id}/orders"),
    ("GET /o/550e8400-e29b-41d4-a716-446655440000", "GET /o/{id}"),
    ("GET /t/5f2b9c0e7a1d4e3f9b8c", "GET /t/{id}"),
    ("GET /schools/a1b2c3d4e5/students", "GET /schools/{id}/students"),
    ("GET /mail/jane.doe@example.com", "GET /mail/{id}"),
    ("GET /items/{item_id}", "GET /items/{item_id}"),
    ("GET /api/v2/catalog", "GET /api/v2/catalog"),
    ("payment.create", "payment.create"),
    ("order.create:4411", "order.create:{id}"),
    ("rfid.verify\n\x00", "rfid.verify"),
])
def test_anything_that_looks_like_an_id_leaves_the_operation_name(raw: str, expected: str) -> None:
    assert canonical_operation(raw) == expected


def test_operations_beyond_the_cap_fold_into_other_and_are_counted() -> None:
    metrics = SelfMetrics()
    rec = Recorder(make_cfg(max_operations=5), metrics)
    for i in range(20):
        for _ in range(3):
            rec.record(f"GET /route{chr(97 + i)}", "", 1.0, False, False)
    data = rec.collect(time.time())
    ops = {dict(d.dimensions)["Operation"]: d.value for d in data if d.name == "Requests"
           and "Operation" in dict(d.dimensions)}
    assert len(ops) == 6 and ops[OTHER] == 15 * 3
    assert sum(ops.values()) == 60
    assert metrics.counter("metrics_operations_overflow") == 15
    # The cap holds across intervals: the same 5 keep their names, the rest stay "other".
    rec.record("GET /routez", "", 1.0, False, False)
    (later,) = [d for d in rec.collect(time.time()) if d.name == "Requests" and "Operation" in dict(d.dimensions)]
    assert dict(later.dimensions)["Operation"] == OTHER


def test_a_flood_of_raw_paths_with_ids_is_one_operation_and_bounded_memory() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    for i in range(30_000):
        rec.record(f"GET /users/{i}", "", 1.0, False, False)
    assert len(rec._current) <= 10_000 and len(rec._canon) <= 10_000
    data = rec.collect(time.time())
    assert by(data, "Requests", Operation="GET /users/{id}").value == 30_000
    assert {dict(d.dimensions).get("Operation") for d in data} == {"GET /users/{id}", None}


def test_concurrent_records_from_many_threads_lose_nothing() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    n, threads = 20_000, 4

    def work(k: int) -> None:
        for i in range(n):
            rec.record(f"op.{k % 2}", "general", 1.0 + i % 5, i % 4 == 0, i % 50 == 0)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    collected: list[MetricDatum] = []
    for t in ts:
        t.start()
    while any(t.is_alive() for t in ts):  # collect concurrently too: nothing may fall between intervals
        collected.extend(rec.collect(time.time()))
        time.sleep(0.01)
    for t in ts:
        t.join()
    collected.extend(rec.collect(time.time()))
    total = sum(d.value or 0 for d in collected if d.name == "Requests" and len(d.dimensions) == 2)
    faults = sum(d.value or 0 for d in collected if d.name == "Faults" and len(d.dimensions) == 2)
    errors = sum(d.value or 0 for d in collected if d.name == "Errors" and len(d.dimensions) == 2)
    assert total == n * threads
    assert faults == threads * (n // 50)
    assert errors == threads * (n // 4 - n // 100)  # multiples of 4 that are not multiples of 50


def test_each_collect_is_one_interval_stamped_at_its_start() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    t0 = rec._window_start
    rec.record("GET /a", "", 1.0, False, False)
    t1 = time.time() + 5
    first = rec.collect(t1)
    assert first and all(d.timestamp == t0 for d in first)
    assert rec.collect(t1 + 60) == []
    rec.record("GET /a", "", 1.0, False, False)
    assert all(d.timestamp == t1 + 60 for d in rec.collect(t1 + 120))


def test_nan_negative_and_infinite_latencies_cannot_poison_the_sums() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    for ms in (float("nan"), -5.0, float("inf"), 10.0):
        rec.record("GET /a", "", ms, False, False)
    lat = by(rec.collect(time.time()), "Latency", Operation="GET /a")
    assert lat.count == 4 and math.isfinite(lat.total) and lat.total == 3_600_010.0
    assert lat.minimum == 0.0 and lat.maximum == 3_600_000.0


def test_record_never_raises_into_the_caller() -> None:
    metrics = SelfMetrics()
    rec = Recorder(make_cfg(), metrics)
    rec.record("GET /a", "", None, False, False)  # type: ignore[arg-type]
    rec.record(None, "", 1.0, False, False)  # type: ignore[arg-type]
    assert metrics.counter("metrics_dropped", "record_failed") >= 1


def test_a_forked_child_does_not_report_the_parents_requests() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    for _ in range(10):
        rec.record("GET /a", "", 1.0, False, False)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            rec.record("GET /a", "", 1.0, False, False)
            data = rec.collect(time.time())
            os.write(w, str(sum(d.value or 0 for d in data if d.name == "Requests" and len(d.dimensions) == 2))
                     .encode())
        finally:
            os._exit(0)
    os.close(w)
    child_count = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    os.close(r)
    assert float(child_count) == 1
    assert by(rec.collect(time.time()), "Requests").value == 10


def test_build_recorder_is_none_when_metrics_are_off_and_rejects_a_bad_namespace() -> None:
    off = config_from_mapping({}, {})
    assert build_recorder(off, SelfMetrics()) is None
    with pytest.raises(ConfigError) as info:
        build_recorder(make_cfg(namespace="AWS/EC2"), SelfMetrics())
    assert "metrics.cloudwatch.namespace" in str(info.value)
    with pytest.raises(ConfigError):
        build_recorder(make_cfg(emf_output="tcp://nohost"), SelfMetrics())
    rec = build_recorder(make_cfg(emf_output="file:/dev/null"), SelfMetrics())
    assert rec is not None and rec.publisher is not None
    rec.shutdown(0.5)


def operations_of(data: list[MetricDatum]) -> dict[str, float]:
    return {dict(d.dimensions)["Operation"]: d.value or 0.0 for d in data
            if d.name == "Requests" and "Operation" in dict(d.dimensions)}


def test_junk_404_paths_fold_into_one_unmatched_bucket_and_payment_create_keeps_its_name() -> None:
    metrics = SelfMetrics()
    rec = Recorder(make_cfg(), metrics)  # max_operations 200
    for i in range(250):  # a bot's scan: every path different, none matched a route
        slug = chr(97 + i // 26) + chr(97 + i % 26) + "-post"
        rec.record(f"GET /wp-{slug}/setup", "", 1.0, True, False, routed=False, status=404)
    rec.record("HEAD /.env", "", 1.0, True, False, routed=False, status=404)
    rec.record("PROPFIND /webdav", "", 1.0, True, False, routed=False, status=404)
    rec.record("payment.create", "critical", 40.0, False, False)
    ops = operations_of(rec.collect(time.time()))
    assert ops == {"GET {unmatched}": 250, "HEAD {unmatched}": 1, "OTHER {unmatched}": 1, "payment.create": 1}
    assert metrics.counter("metrics_operations_overflow") == 0


def test_routes_filling_their_budget_never_fold_business_operations_into_other() -> None:
    metrics = SelfMetrics()
    rec = Recorder(make_cfg(), metrics)
    for i in range(250):  # slug URLs answered by the app without a route template: the route budget fills
        slug = chr(97 + i // 26) + chr(97 + i % 26) + "-post"
        rec.record(f"GET /blog/{slug}", "", 1.0, False, False)
    for name in ("payment.create", "order.create", "school.enrol", "rfid.verify"):
        rec.record(name, "business", 5.0, False, False)
    ops = operations_of(rec.collect(time.time()))
    assert ops[OTHER] == 50 and sum(1 for op in ops if op.startswith("GET /blog/")) == 200
    for name in ("payment.create", "order.create", "school.enrol", "rfid.verify"):
        assert ops[name] == 1
    assert metrics.counter("metrics_operations_overflow", "route") == 50


def test_configured_operations_are_reserved_even_when_the_business_budget_is_full() -> None:
    metrics = SelfMetrics()
    rec = Recorder(make_cfg(max_operations=3, operations=["payment.create", "refund.issue"]), metrics)
    for name in ("a.one", "b.two", "c.three", "d.four"):
        rec.record(name, "business", 1.0, False, False)
    rec.record("payment.create", "critical", 1.0, False, False)
    rec.record("refund.issue", "", 1.0, False, False)  # reserved whichever way it is recorded
    ops = operations_of(rec.collect(time.time()))
    assert ops == {"a.one": 1, "b.two": 1, "c.three": 1, OTHER: 1, "payment.create": 1, "refund.issue": 1}
    assert metrics.counter("metrics_operations_overflow", "business") == 1


def test_methods_outside_the_standard_set_are_one_other_method() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    for method in ("FOO", "XYZZY", "get", "BREW", "PROPFIND"):
        rec.record(f"{method} /payments", "", 1.0, False, False)
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        rec.record(f"{method} /payments", "", 1.0, False, False)
    ops = operations_of(rec.collect(time.time()))
    assert ops["OTHER /payments"] == 5
    assert {op for op in ops if op != "OTHER /payments"} == {
        f"{m} /payments" for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


def test_a_route_that_matched_and_answered_404_keeps_its_template() -> None:
    rec = Recorder(make_cfg(), SelfMetrics())
    rec.record("GET /orders/{order_id}", "", 1.0, True, False, routed=True, status=404)
    rec.record("GET /orders/{order_id}", "", 1.0, True, False)  # the old call shape: routed
    assert operations_of(rec.collect(time.time())) == {"GET /orders/{order_id}": 2}
