"""Probe configuration problems: one line each, naming the key, never showing a secret."""

from __future__ import annotations

from typing import Any

import pytest

from pulsetrace.config.load import ConfigError
from pulsetrace.validation import config_from_mapping


def problems(*probes: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"health": {"probes": list(probes)}}, env={})
    return [str(p) for p in info.value.problems]


def test_a_valid_probe_set_loads() -> None:
    cfg = config_from_mapping({"health": {"probes": [
        {"name": "db", "type": "postgres", "dsn": "postgresql://a:b@h/d", "thresholds": {"connect_ms": 100}},
        {"name": "pay", "type": "http", "preset": "razorpay", "json_condition": 'status == "ok"'},
        {"name": "rf", "type": "rfid", "source": {"push": "true"}, "thresholds": {"down_ratio": 0.4}},
        {"name": "op", "type": "passive", "operation": "payment.create", "thresholds": {"success_rate": 98.5}},
    ]}}, env={})
    assert [p.name for p in cfg.health.probes] == ["db", "pay", "rf", "op"]


def test_missing_required_fields_are_named() -> None:
    out = problems({"name": "db", "type": "postgres"}, {"name": "gw", "type": "http"})
    assert "health.probes[0].dsn: is required for a postgres probe" in out
    assert "health.probes[1].url: is required for a http probe" in out


def test_unknown_threshold_suggests_the_close_one() -> None:
    out = problems({"name": "c", "type": "redis", "url": "redis://h/0", "thresholds": {"ping_mss": 5}})
    assert any("thresholds.ping_mss" in p and "did you mean 'ping_ms'" in p for p in out)


def test_bad_json_condition_is_reported() -> None:
    out = problems({"name": "gw", "type": "http", "url": "http://h/", "json_condition": "status = ok"})
    assert any("json_condition: invalid condition" in p for p in out)


def test_wrong_url_scheme_is_shown_masked() -> None:
    out = problems({"name": "db", "type": "postgres", "dsn": "mysql://app:Sup3rSecret@h/db"})
    line = next(p for p in out if ".dsn" in p)
    assert "not a postgres URL" in line and "Sup3rSecret" not in line and "****" in line


def test_rfid_source_must_name_exactly_one_kind() -> None:
    out = problems({"name": "r", "type": "rfid", "source": {"redis_url": "redis://h/0", "dsn": "postgresql://h/d"}},
                   {"name": "s", "type": "rfid", "source": {"key_pattern": "x*"}},
                   {"name": "t", "type": "rfid", "source": {"push": "true", "colour": "red"}})
    assert any("probes[0].source: names more than one source" in p for p in out)
    assert any("probes[1].source: is required for an rfid probe" in p for p in out)
    assert any("probes[2].source.colour: unknown key" in p for p in out)


def test_ratios_and_percentages_are_bounded() -> None:
    out = problems({"name": "r", "type": "rfid", "source": {"push": "true"},
                    "thresholds": {"degraded_ratio": 0.5, "down_ratio": 0.8}},
                   {"name": "p", "type": "passive", "operation": "x", "thresholds": {"success_rate": 120}})
    assert any("down_ratio: above degraded_ratio" in p for p in out)
    assert any("success_rate: not a percentage" in p for p in out)


def test_timeout_longer_than_interval_is_rejected() -> None:
    out = problems({"name": "c", "type": "redis", "url": "redis://h/0", "interval": "1s", "timeout": "2s"})
    assert any("timeout: longer than the interval" in p for p in out)


def test_custom_target_must_be_a_dotted_path() -> None:
    out = problems({"name": "c", "type": "custom", "target": "not a path!"})
    assert any("target: not a dotted path" in p for p in out)
