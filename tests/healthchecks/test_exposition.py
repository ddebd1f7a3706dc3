"""Prometheus exposition of the details, self-metrics included; and the lazy public API."""

from __future__ import annotations

import subprocess
import sys

from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.healthchecks.exposition import render
from pulsetrace.healthchecks.snapshot import HealthSnapshot, snapshot_from_dict


def details() -> HealthSnapshot:
    return snapshot_from_dict({"status": "DEGRADED", "stale": False, "probes": {
        'we"ird\\name': {"status": "DOWN", "critical": False, "latency_ms": 1500.0, "last_checked": 1700000000.5,
                         "measurements": {"ping_ms": 2.5, "role": "master", "stale_readers": ["a"], "ok": True},
                         "sla": {"target": 99.9, "windows": {"1h": {"availability": 50.0, "budget_remaining": -499.0,
                                                                    "budget_remaining_s": -1796.4}},
                                 "burn_rates": {"1h": None, "6h": 500.0},
                                 "burn_alerts": {"1h": {"firing": False}, "6h": {"firing": True}}},
                         "impact": {"revenue_at_risk": 12.5, "users_affected": 40}}}})


def test_probe_metrics_with_escaped_labels_and_numeric_values_only() -> None:
    text = render(details(), counters={'we"ird\\name': {"checks": 7, "timeouts": 1, "transitions": 2}})
    label = 'probe="we\\"ird\\\\name"'
    assert 'pulsetrace_health_status{status="DEGRADED"} 1' in text
    assert f'pulsetrace_probe_status{{{label},status="DOWN"}} 1' in text
    assert f"pulsetrace_probe_latency_seconds{{{label}}} 1.5" in text
    assert f'pulsetrace_probe_availability_ratio{{{label},window="1h"}} 0.5' in text  # the details' percent / 100
    assert f'pulsetrace_probe_error_budget_remaining_ratio{{{label},window="1h"}} -499' in text
    assert f'pulsetrace_probe_burn_rate{{{label},window="6h"}} 500' in text
    assert f'pulsetrace_probe_burn_rate{{{label},window="1h"}}' not in text  # no data: no sample
    assert f'pulsetrace_probe_burn_alert{{{label},window="6h"}} 1' in text
    assert f'pulsetrace_probe_measurement{{{label},name="ping_ms"}} 2.5' in text
    assert "master" not in text and 'name="stale_readers"' not in text
    assert f"pulsetrace_probe_checks_total{{{label}}} 7" in text
    assert text.count("# TYPE pulsetrace_probe_status gauge") == 1


def test_availability_ratio_has_no_float_noise() -> None:
    doc = details().to_dict()
    doc["probes"]['we"ird\\name']["sla"]["windows"]["1h"]["availability"] = 99.95
    assert 'window="1h"} 0.9995\n' in render(snapshot_from_dict(doc))


def test_agent_self_metrics_are_included_when_given() -> None:
    m = SelfMetrics()
    m.inc("spans_dropped", 3, reason="queue_full")
    m.set_gauge("queue.depth", 5)
    text = render(snapshot_from_dict({"status": "UP", "stale": False, "probes": {}}), m)
    assert 'pulsetrace_agent_spans_dropped_total{reason="queue_full"} 3' in text
    assert "pulsetrace_agent_queue_depth 5" in text


def test_importing_healthchecks_loads_nothing_until_a_name_is_used() -> None:
    code = ("import sys, pulsetrace.healthchecks; assert 'pulsetrace.healthchecks.base' not in sys.modules; "
            "from pulsetrace.healthchecks import Probe, ProbeResult, Status; assert Status('UP') is Status.UP; "
            "assert 'asyncpg' not in sys.modules and 'httpx' not in sys.modules and 'redis' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd="/")
