"""EMF documents against the CloudWatch Embedded Metric Format specification.

``validate_emf`` writes the specification's rules as checks (other EMF tests import it):
``_aws.Timestamp`` (epoch milliseconds), ``_aws.CloudWatchMetrics`` directives with
``Namespace``, ``Dimensions`` (dimension sets of at most 30 keys, each a string root
member) and ``Metrics`` (at most 100 definitions with valid units, each a root member
holding a number, an array of at most 100 numbers, or the statistic-set /
values-and-counts object the CloudWatch agent and Logs read).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from pulsetrace.metrics.datum import (
    VALID_UNITS,
    MetricDatum,
    bucket_index,
    distribution_datum,
    stats_datum,
    value_datum,
)
from pulsetrace.metrics.emf import MAX_METRICS_PER_DOCUMENT, emf_documents, encode

_AWS_KEYS = {"Timestamp", "CloudWatchMetrics", "LogGroupName", "LogStreamName"}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def validate_emf(doc: object) -> list[str]:
    """Every way ``doc`` breaks the EMF specification (empty: valid)."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    aws = doc.get("_aws")
    if not isinstance(aws, dict):
        return ["_aws is missing or not an object"]
    for key in aws:
        if key not in _AWS_KEYS:
            errors.append(f"_aws.{key} is not an EMF metadata member")
    ts = aws.get("Timestamp")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
        errors.append(f"_aws.Timestamp must be a positive integer of epoch milliseconds, got {ts!r}")
    elif not 1_000_000_000_000 < ts < 10_000_000_000_000:
        errors.append(f"_aws.Timestamp {ts} is not in milliseconds")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return errors + ["_aws.CloudWatchMetrics must be a non-empty array"]
    dimension_keys: set[str] = set()
    metric_names: set[str] = set()
    for i, d in enumerate(directives):
        where = f"CloudWatchMetrics[{i}]"
        if not isinstance(d, dict):
            errors.append(f"{where} is not an object")
            continue
        ns = d.get("Namespace")
        if not isinstance(ns, str) or not 1 <= len(ns) <= 255:
            errors.append(f"{where}.Namespace must be a string of 1-255 characters")
        dims = d.get("Dimensions")
        if not isinstance(dims, list):
            errors.append(f"{where}.Dimensions must be an array of dimension sets")
            dims = []
        for j, dset in enumerate(dims):
            if not isinstance(dset, list):
                errors.append(f"{where}.Dimensions[{j}] is not an array")
                continue
            if len(dset) > 30:
                errors.append(f"{where}.Dimensions[{j}] has {len(dset)} keys (max 30)")
            for key in dset:
                if not isinstance(key, str):
                    errors.append(f"{where}.Dimensions[{j}] holds a non-string key {key!r}")
                    continue
                dimension_keys.add(key)
                value = doc.get(key)
                if not isinstance(value, str) or not 1 <= len(value) <= 1024:
                    errors.append(f"dimension {key} must be a root string member of 1-1024 characters")
        metrics = d.get("Metrics")
        if not isinstance(metrics, list):
            errors.append(f"{where}.Metrics must be an array")
            continue
        if len(metrics) > 100:
            errors.append(f"{where}.Metrics has {len(metrics)} definitions (max 100)")
        for k, m in enumerate(metrics):
            if not isinstance(m, dict) or not isinstance(m.get("Name"), str) or not m["Name"]:
                errors.append(f"{where}.Metrics[{k}] needs a Name")
                continue
            name = m["Name"]
            if name in metric_names:
                errors.append(f"metric {name} is declared twice")
            metric_names.add(name)
            unit = m.get("Unit", "None")
            if unit not in VALID_UNITS:
                errors.append(f"metric {name}: invalid unit {unit!r}")
            if m.get("StorageResolution", 60) not in (1, 60):
                errors.append(f"metric {name}: StorageResolution must be 1 or 60")
            if name not in doc:
                errors.append(f"metric {name} is declared but not a member of the document")
                continue
            errors.extend(_check_value(name, doc[name]))
    for key in dimension_keys & metric_names:
        errors.append(f"{key} is both a dimension and a metric")
    return errors


def _check_value(name: str, value: object) -> list[str]:
    if _is_number(value):
        return []
    if isinstance(value, list):
        if not value or len(value) > 100 or not all(_is_number(v) for v in value):
            return [f"metric {name}: an array must hold 1-100 numbers"]
        return []
    if isinstance(value, dict):
        errs = [f"metric {name}: {k} must be a number" for k in ("Max", "Min", "Count", "Sum")
                if not _is_number(value.get(k))]
        if errs:
            return errs
        extra = set(value) - {"Max", "Min", "Count", "Sum", "Values", "Counts"}
        if extra:
            return [f"metric {name}: unknown members {sorted(extra)}"]
        if "Values" in value or "Counts" in value:
            vals, cnts = value.get("Values"), value.get("Counts")
            if not isinstance(vals, list) or not isinstance(cnts, list) or len(vals) != len(cnts):
                return [f"metric {name}: Values and Counts must be arrays of the same length"]
            if not 1 <= len(vals) <= 100 or not all(_is_number(v) for v in vals + cnts):
                return [f"metric {name}: 1-100 numeric Values/Counts"]
            if abs(sum(cnts) - value["Count"]) > 1e-6:
                return [f"metric {name}: Counts add up to {sum(cnts)}, Count is {value['Count']}"]
        if value["Min"] > value["Max"]:
            return [f"metric {name}: Min > Max"]
        return []
    return [f"metric {name}: value {value!r} is not a number, array or statistic set"]


# -- the validator can fail ---------------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "_aws": {"Timestamp": 1_700_000_000_000, "CloudWatchMetrics": [
        {"Namespace": "PulseTrace", "Dimensions": [["Service"]], "Metrics": [{"Name": "Requests", "Unit": "Count"}]}]},
    "Service": "shop", "Requests": 3,
}


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["_aws"].update(Timestamp=1_700_000_000), "not in milliseconds"),
    (lambda d: d.pop("Requests"), "not a member"),
    (lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Requests"), "invalid unit"),
    (lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Dimensions=[[f"D{i}" for i in range(31)]]), "max 30"),
    (lambda d: d["_aws"]["CloudWatchMetrics"][0].update(
        Metrics=[{"Name": f"M{i}"} for i in range(101)]), "max 100"),
    (lambda d: d.update(Service=7), "root string member"),
    (lambda d: d.update(Requests=[1.0] * 101), "1-100 numbers"),
])
def test_validator_rejects_documents_that_break_the_spec(mutate: Any, expected: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    assert validate_emf(doc) == []
    mutate(doc)
    errors = validate_emf(doc)
    assert any(expected in e for e in errors), errors


# -- our documents ------------------------------------------------------------------------------------------------

DIMS = (("Service", "shop"), ("Environment", "uat"), ("Operation", "POST /payments"))


def test_documents_group_by_dimension_set_and_carry_every_declared_metric() -> None:
    now = time.time()
    other = (("Service", "shop"), ("Environment", "uat"))
    buckets: dict[int, list[float]] = {}
    for ms in (1.0, 2.0, 2.1, 250.0):
        b = buckets.setdefault(bucket_index(ms), [0.0, 0.0])
        b[0] += 1
        b[1] += ms
    data = [value_datum("Requests", "Count", DIMS, now, 4), value_datum("Errors", "Count", DIMS, now, 1),
            distribution_datum("Latency", "Milliseconds", DIMS, now, buckets, 1.0, 250.0),
            stats_datum("ProbeUp", "None", other, now, 4, 3, 0, 1), value_datum("Requests", "Count", other, now, 9)]
    docs = emf_documents(data, "PulseTrace")
    assert len(docs) == 2
    for doc, members in docs:
        assert validate_emf(json.loads(encode(doc))) == []
        declared = [m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert declared == [m.name for m in members]
    by_op = {d.get("Operation"): d for d, _ in docs}
    op = by_op["POST /payments"]
    assert op["Requests"] == 4 and op["Errors"] == 1
    assert op["Latency"]["Count"] == 4 and op["Latency"]["Sum"] == pytest.approx(255.1)
    assert op["Latency"]["Min"] == 1.0 and op["Latency"]["Max"] == 250.0
    assert sum(op["Latency"]["Counts"]) == 4
    assert by_op[None]["ProbeUp"] == {"Max": 1.0, "Min": 0.0, "Count": 4.0, "Sum": 3.0}
    assert op["_aws"]["Timestamp"] == int(now * 1000)


def test_more_than_100_metrics_for_one_dimension_set_are_split_into_valid_documents() -> None:
    now = time.time()
    data = [value_datum(f"M{i}", "Count", DIMS, now, i) for i in range(250)]
    docs = emf_documents(data, "PulseTrace")
    assert [len(ms) for _, ms in docs] == [100, 100, 50]
    for doc, _ in docs:
        assert validate_emf(doc) == []
        assert len(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]) <= MAX_METRICS_PER_DOCUMENT
    assert sorted(k for doc, _ in docs for k in doc if k.startswith("M")) == sorted(f"M{i}" for i in range(250))


def test_a_metric_repeated_for_the_same_dimensions_goes_to_another_document() -> None:
    now = time.time()
    docs = emf_documents([value_datum("Requests", "Count", DIMS, now, 1),
                          value_datum("Requests", "Count", DIMS, now, 2)], "PulseTrace")
    assert sorted(d["Requests"] for d, _ in docs) == [1, 2]
    assert all(validate_emf(d) == [] for d, _ in docs)


def test_dimension_sets_are_cut_to_30_keys() -> None:
    dims = tuple((f"D{i}", "v") for i in range(40))
    ((doc, _),) = emf_documents([value_datum("Requests", "Count", dims, time.time(), 1)], "PulseTrace")
    assert validate_emf(doc) == []
    assert len(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == 30


def test_a_distribution_with_more_than_100_values_is_split_with_counts_and_sums_kept() -> None:
    values = tuple(float(i) for i in range(1, 231))
    d = MetricDatum("Latency", "Milliseconds", DIMS, time.time(), count=230.0, total=sum(values), minimum=1.0,
                    maximum=230.0, values=values, counts=(1.0,) * 230)
    docs = emf_documents([d], "PulseTrace")
    assert len(docs) == 3
    assert all(validate_emf(doc) == [] for doc, _ in docs)
    assert sum(doc["Latency"]["Count"] for doc, _ in docs) == 230
    assert sum(doc["Latency"]["Sum"] for doc, _ in docs) == pytest.approx(sum(values))
    assert min(doc["Latency"]["Min"] for doc, _ in docs) == 1.0
    assert max(doc["Latency"]["Max"] for doc, _ in docs) == 230.0


def test_log_group_is_named_only_when_asked() -> None:
    ((doc, _),) = emf_documents([value_datum("Requests", "Count", DIMS, time.time(), 1)], "PulseTrace",
                                log_group="shop-metrics")
    assert doc["_aws"]["LogGroupName"] == "shop-metrics"
    assert validate_emf(doc) == []
