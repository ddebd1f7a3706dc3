"""The rules of business metrics (``pulsetrace.metric``/``count``): what a dimension may carry, what is
refused and counted, and that the recorder never raises into the caller."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest

import pulsetrace
from pulsetrace.instrumentation import hooks
from pulsetrace.instrumentation.business import business_operation, business_span, set_business_attributes
from pulsetrace.metrics.business import BusinessMetrics
from pulsetrace.metrics.datum import MetricDatum
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping


def make(**cloudwatch: Any) -> tuple[BusinessMetrics, SelfMetrics]:
    cfg = config_from_mapping({"service": {"name": "shop", "environment": "uat"},
                               "tracing": {"pii": {"hash_keys": ["user.ref"]}},
                               "metrics": {"cloudwatch": {"mode": "emf", **cloudwatch}}}, {})
    metrics = SelfMetrics()
    return BusinessMetrics(cfg, metrics), metrics


def by_dims(data: list[MetricDatum], name: str) -> dict[tuple[tuple[str, str], ...], MetricDatum]:
    return {d.dimensions[2:]: d for d in data if d.name == name}


@pytest.fixture
def installed() -> Any:
    bm, metrics = make()
    hooks.install(None, bm)
    yield bm, metrics
    hooks.clear()


def test_sums_counts_min_and_max_per_dimension_set(installed: Any) -> None:
    bm, _ = installed
    for amount in (10.0, 20.5, 4.5):
        pulsetrace.metric("Revenue", amount, unit="None", method="upi")
    pulsetrace.metric("Revenue", 99.0, method="card")
    pulsetrace.count("UserRegistrations", method="google")
    pulsetrace.count("UserRegistrations", 2, method="google")
    data = bm.collect(1000.0)
    rev = by_dims(data, "Revenue")
    upi = rev[(("method", "upi"),)]
    assert (upi.count, upi.total, upi.minimum, upi.maximum) == (3, 35.0, 4.5, 20.5)
    assert upi.dimensions[:2] == (("Service", "shop"), ("Environment", "uat"))
    assert rev[(("method", "card"),)].total == 99.0
    reg = by_dims(data, "UserRegistrations")[(("method", "google"),)]
    assert (reg.unit, reg.total, reg.count) == ("Count", 3.0, 2)
    assert bm.collect(1060.0) == []  # the interval was swapped out
    assert bm.totals()[("Revenue", "None", "metric", (("method", "upi"),))] == (3.0, 35.0)


def test_personal_data_and_ids_never_become_dimension_values() -> None:
    bm, _ = make()
    bm.record("Signups", 1, "Count", {"contact": "bob@example.com", "email": "x", "phone_number": "12",
                                      "note": "call +44 20 7946 0958", "user_id": "acme", "customerId": "zz"},
              "count")
    bm.record("Orders", 1, "Count", {"ref": "4f9c2e1a-3b7d-4c2a-9e1f-8a7b6c5d4e3f", "order": "88123",
                                     "user.ref": "plain", "code": "200", "plan": "pro"}, "count")
    dims: dict[str, str] = {}
    for d in bm.collect(1.0):
        dims.update(d.dimensions)
    assert dims["contact"] == dims["email"] == dims["phone_number"] == dims["note"] == "redacted"
    assert dims["user_id"] == dims["customerId"] == dims["ref"] == dims["order"] == dims["user.ref"] == "{id}"
    assert dims["code"] == "200" and dims["plan"] == "pro"  # short codes and plain words stay


def test_a_dimension_past_its_budget_folds_into_other_and_every_folded_call_is_counted() -> None:
    bm, metrics = make(max_dimension_values=3)
    for word in ("alpha", "beta", "gamma", "delta", "epsilon", "delta"):
        bm.record("Tagged", 1, "Count", {"tag": word, "kind": "x"}, "count")
    data = by_dims(bm.collect(1.0), "Tagged")
    assert {dict(k)["tag"] for k in data} == {"alpha", "beta", "gamma", "other"}
    assert data[(("kind", "x"), ("tag", "other"))].total == 3
    assert metrics.counter("metrics_dimension_overflow", "Tagged") == 3


@pytest.mark.parametrize(("name", "unit", "value", "reason"), [
    ("Requests", "Count", 1, "reserved_name"),      # would blur the agent's own series and its alarms
    ("HealthScore", "None", 1, "reserved_name"),
    ("Revenue", "Dollars", 1, "invalid_unit"),
    ("", "None", 1, "invalid_metric"),
    ("Spend bob@example.com", "None", 1, "invalid_metric"),
    ("Revenue", "None", math.nan, "invalid_value"),
    ("Revenue", "None", math.inf, "invalid_value"),
    ("Revenue", "None", "twelve", "record_failed"),
])
def test_refused_calls_are_dropped_and_counted_never_raised(name: str, unit: str, value: Any, reason: str) -> None:
    bm, metrics = make()
    bm.record(name, value, unit, {})
    assert bm.collect(1.0) == []
    assert metrics.counter("metrics_dropped", reason) == 1


def test_distinct_names_past_max_metrics_are_dropped_and_counted() -> None:
    bm, metrics = make(max_metrics=2)
    for name in ("A", "B", "C", "A"):
        bm.record(name, 1, "Count", {}, "count")
    assert sorted(d.name for d in bm.collect(1.0)) == ["A", "B"]
    assert metrics.counter("metrics_dropped", "metric_budget") == 1


def test_more_than_eight_dimensions_keep_the_first_eight_and_count_the_rest() -> None:
    bm, metrics = make()
    bm.record("Wide", 1, "Count", {f"d{i}": "x" for i in range(11)}, "count")
    [d] = bm.collect(1.0)
    assert [k for k, _ in d.dimensions[2:]] == [f"d{i}" for i in range(8)]
    assert metrics.counter("metrics_dimensions_dropped", "Wide") == 1


def test_enums_unhashable_values_and_the_agent_dimension_names() -> None:
    class Method(str, enum.Enum):
        UPI = "upi"

    bm, _ = make()
    bm.record("Revenue", 5, "None", {"method": Method.UPI, "tags": ["a", "b"], "Service": "evil"})
    [d] = bm.collect(1.0)
    assert dict(d.dimensions) == {"Service": "shop", "Environment": "uat", "method": "upi", "tags": "['a', 'b']"}


def test_without_an_agent_the_api_does_nothing() -> None:
    hooks.clear()
    pulsetrace.metric("Revenue", 1.0)
    pulsetrace.count("Signups")


def test_business_operation_value_records_its_sum_by_outcome(installed: Any) -> None:
    bm, _ = installed

    @business_operation("payment.create", value="amount", value_metric="Revenue")
    def pay(amount: float, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("declined")

    @business_operation("order.create", value="total")
    def order() -> None:
        set_business_attributes(total=42.0)  # known only inside the call

    pay(10.0)
    pay(2.5)
    with pytest.raises(RuntimeError):
        pay(7.0, fail=True)
    order()
    with business_span("refund.create"):  # no value: no metric
        pass
    data = by_dims(bm.collect(1.0), "Revenue")
    ok = data[(("Operation", "payment.create"), ("Outcome", "success"))]
    assert (ok.total, ok.count) == (12.5, 2)
    assert data[(("Operation", "payment.create"), ("Outcome", "failure"))].total == 7.0
    assert bm.totals()[("OrderCreateTotal", "None", "metric", (("Operation", "order.create"),
                                                                ("Outcome", "success")))] == (1.0, 42.0)


def test_combinations_of_admitted_values_are_bounded_per_metric() -> None:
    bm, metrics = make(max_dimension_values=3)  # at most 30 dimension sets
    words = ("alpha", "beta", "gamma")
    for a in words:
        for b in words:
            for c in words:
                bm.record("Combo", 1, "Count", {"a": a, "b": b, "c": c}, "count")  # 27 sets: all kept
    for a, b in (("alpha", "beta"), ("beta", "gamma"), ("gamma", "alpha"), ("alpha", "alpha")):
        bm.record("Combo", 1, "Count", {"a": a, "b": b, "d": "x"}, "count")
    data = by_dims(bm.collect(1.0), "Combo")
    assert len(data) == 27 + 3 + 1  # 27 + 3 new sets kept, the fourth new one folded into all-`other`
    assert data[(("a", "other"), ("b", "other"), ("d", "other"))].total == 1
    assert metrics.counter("metrics_dimension_overflow", "Combo") == 1
