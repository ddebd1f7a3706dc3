"""The health page's data from a store written by the health service's own history writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulsetrace.config.schema import Config, HealthConfig, ImpactConfig, ProbeConfig
from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.damping import Transition
from pulsetrace.healthchecks.history import HealthHistory
from pulsetrace.healthchecks.sla import MinuteRow
from pulsetrace.store import LocalStore
from pulsetrace.ui.health_data import check_document, health_page

NOW = 1_790_000_000.0  # a minute boundary
M = int(NOW // 60)


def _config() -> Config:
    probe = ProbeConfig(name="db", type="postgres", sla=99.9, critical=True,
                        impact=ImpactConfig(revenue_per_minute=120.0, users=5000))
    return Config(health=HealthConfig(probes=[probe]))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    history = HealthHistory(store)
    # ten minutes up, two minutes down, three up again (the last minute is the current one)
    rows = [MinuteRow(M - 15 + i, 60.0, 0.0, 0.0, 4, 0, 0, {10: 4}) for i in range(10)]
    rows += [MinuteRow(M - 5, 0.0, 0.0, 60.0, 0, 0, 4), MinuteRow(M - 4, 0.0, 0.0, 60.0, 0, 0, 4)]
    rows += [MinuteRow(M - 3 + i, 60.0, 0.0, 0.0, 4, 0, 0) for i in range(3)]
    history.save_minutes("db", rows)
    history.add_transitions([
        Transition("db", (M - 15) * 60.0, Status.UNKNOWN, Status.UP, "ok"),
        Transition("db", (M - 5) * 60.0, Status.UP, Status.DOWN, "connection refused"),
        Transition("db", (M - 3) * 60.0, Status.DOWN, Status.UP, "ok"),
    ])
    return store


def test_the_timeline_follows_the_recorded_transitions(store: LocalStore) -> None:
    page = health_page(store, _config(), NOW, "15m")
    (db,) = page.probes
    assert [(s.status, s.start, s.end) for s in db.timeline] == [
        ("UP", NOW - 900, (M - 5) * 60.0), ("DOWN", (M - 5) * 60.0, (M - 3) * 60.0), ("UP", (M - 3) * 60.0, NOW)]
    assert [m for m in db.minutes if m[1] == "DOWN"] == [((M - 5) * 60.0, "DOWN"), ((M - 4) * 60.0, "DOWN")]
    assert [(t["from"], t["to"]) for t in db.transitions] == [("UP", "DOWN"), ("DOWN", "UP")]
    assert db.status == "UP" and db.critical and not db.stale


def test_windows_budget_burn_and_impact(store: LocalStore) -> None:
    page = health_page(store, _config(), NOW, "1h")
    (db,) = page.probes
    hour = db.windows["1h"]
    assert hour["availability"] == pytest.approx(100 * 13 / 15, abs=0.01)  # 2 of 15 observed minutes down
    assert hour["downtime_s"] == 120 and hour["budget_remaining"] < 0  # 3.6 s of budget an hour
    # the 1 h burn rate over time: nothing before the outage, rising through it
    series = db.burn_series["1h"]
    assert all(long is None for t, long, _ in series if t < (M - 15) * 60)
    assert max(long or 0 for _, long, _ in series) > 14.4
    # revenue at risk accumulates 120 a minute while down: 240 over the range; users affected then
    assert db.impact_series[-1][1] == pytest.approx(240.0)
    assert max(u for _, _, u in db.impact_series) == 5000
    assert db.revenue_at_risk == 0 and db.users_affected == 0  # UP now: no incident running


def test_the_api_document_is_the_check_shape(store: LocalStore) -> None:
    doc = check_document(health_page(store, _config(), NOW, "1h"))
    assert set(doc) == {"status", "stale", "generated_at", "probes"} and doc["status"] == "UP"
    db = doc["probes"]["db"]
    assert set(db) >= {"status", "critical", "latency_ms", "last_checked", "last_transition", "detail", "sla",
                       "impact"}
    assert set(db["sla"]["windows"]) == {"1h", "24h", "7d", "30d"}
    assert set(db["sla"]["burn_rates"]) == {"1h", "6h", "3d"}
    assert db["last_transition"] == (M - 3) * 60.0 and db["detail"] == "ok"


def test_a_probe_down_now_shows_its_running_incident(store: LocalStore) -> None:
    HealthHistory(store).add_transitions([Transition("db", NOW - 30, Status.UP, Status.DOWN, "timeout")])
    (db,) = health_page(store, _config(), NOW, "15m").probes
    assert db.status == "DOWN" and db.revenue_at_risk == pytest.approx(60.0) and db.users_affected == 5000
    assert db.timeline[-1].status == "DOWN"


def test_auto_range_starts_at_the_oldest_history(store: LocalStore) -> None:
    page = health_page(store, _config(), NOW, "auto")
    assert page.start == (M - 15) * 60.0 - 15.0 and page.range_name == "auto"


def test_a_store_without_health_history_lists_the_configured_probes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "empty")
    store.connect()
    (db,) = health_page(store, _config(), NOW).probes
    assert db.status == "UNKNOWN" and db.stale and db.detail == "no history in the local store yet"
    tables = {r[0] for r in store.connect().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "health_sla" not in tables  # read-only: nothing created
