"""SLA arithmetic against hand-computed cases, with the clock as a parameter."""

from __future__ import annotations

import pytest

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.sla import MINUTE, SlaTracker, latency_bin, percentiles

DAY = 86400.0
T0 = 1_700_006_400.0  # a minute boundary (and an hour boundary)


def run(tracker: SlaTracker, start: float, seconds: float, status: Status, every: float = 60.0,
        latency_s: float = 0.005) -> float:
    """Results every ``every`` seconds from ``start`` for ``seconds``; returns the time after the last one."""
    t = start
    n = int(round(seconds / every))
    for _ in range(n):
        t += every
        tracker.record(t, status, latency_s, every)
    return t


def test_thirty_day_window_with_a_known_30_minute_outage() -> None:
    s = SlaTracker(99.9)
    t = run(s, T0, 10 * DAY, Status.UP)
    t = run(s, t, 30 * 60, Status.DOWN)
    t = run(s, t, 20 * DAY - 30 * 60, Status.UP)
    w = s.window(t, 30 * 86400)
    assert w.budget_total_s == pytest.approx(2592.0)  # 99.9 % of 30 d allows 43.2 min
    assert w.downtime_s == pytest.approx(1800.0)
    assert w.observed_s == pytest.approx(30 * DAY)
    assert w.availability == pytest.approx(100 * (1 - 1800 / (30 * DAY)), abs=1e-4)  # percent, like target
    assert w.budget_remaining_s == pytest.approx(2592.0 - 1800.0)
    assert w.budget_remaining == pytest.approx(792 / 2592, abs=1e-6)
    # The last hour and day saw no outage.
    assert s.window(t, 3600).availability == 100.0
    assert s.window(t, 86400).budget_remaining == 1.0


def test_outage_older_than_the_window_no_longer_counts() -> None:
    s = SlaTracker(99.9)
    t = run(s, T0, 30 * 60, Status.DOWN)
    t = run(s, t, 7 * DAY, Status.UP)
    assert s.window(t, 7 * 86400).downtime_s == 0.0
    assert s.window(t, 30 * 86400).downtime_s == pytest.approx(1800.0)


def test_results_are_time_weighted_by_the_interval_they_cover() -> None:
    s = SlaTracker(99.0)
    s.record(T0 + 50, Status.UP, 0.01, 50)
    s.record(T0 + 60, Status.DOWN, 0.01, 10)
    w = s.window(T0 + 60, 3600)
    assert w.availability == pytest.approx(100 * 50 / 60, abs=1e-4)
    assert w.samples == 2


def test_covered_time_is_split_across_minute_buckets() -> None:
    s = SlaTracker(99.0)
    s.record(T0 + 90, Status.DOWN, 0.01, 60)  # covers T0+30 .. T0+90
    first = s.sums(T0 + 59.9, 60)  # minute of T0 only
    assert s._minutes.get(int(T0 // MINUTE))[2] == pytest.approx(30.0)  # noqa: SLF001
    assert s._minutes.get(int(T0 // MINUTE) + 1)[2] == pytest.approx(30.0)  # noqa: SLF001
    assert first.down_s == pytest.approx(30.0)


def test_degraded_counts_as_available_unless_configured_otherwise() -> None:
    for counts, expected in ((True, 100.0), (False, 75.0)):
        s = SlaTracker(99.0, degraded_is_available=counts)
        t = run(s, T0, 45 * 60, Status.UP)
        t = run(s, t, 15 * 60, Status.DEGRADED)
        assert s.window(t, 3600).availability == pytest.approx(expected)


def test_unknown_results_count_as_neither_up_nor_down() -> None:
    s = SlaTracker(99.0)
    t = run(s, T0, 30 * 60, Status.UP)
    t = run(s, t, 30 * 60, Status.UNKNOWN)
    w = s.window(t, 3600)
    assert w.availability == 100.0 and w.observed_s == pytest.approx(1800.0)


def test_availability_is_a_percent_like_the_target_and_the_budget_left_a_fraction_of_the_budget() -> None:
    s = SlaTracker(99.9)
    t = run(s, T0, 999 * 60, Status.UP)
    t = run(s, t, 60, Status.DOWN)
    report = s.report(t)
    day = report.windows["24h"]
    assert report.target == 99.9
    assert day.availability == pytest.approx(99.9, abs=1e-4)  # 1 minute down in 1,000: the target, exactly
    assert day.availability >= report.target - 1e-9
    assert day.budget_remaining == pytest.approx(1 - 60 / 86.4, abs=1e-6)  # 1 of the day's 1.44 min spent


def test_no_data_means_no_availability_and_a_full_budget() -> None:
    w = SlaTracker(99.9).window(T0, 3600)
    assert w.availability is None and w.budget_remaining == 1.0


def burn_tracker() -> tuple[SlaTracker, float]:
    """3 days UP then 10 minutes DOWN, a result every 30 s, target 99.9 %."""
    s = SlaTracker(99.9, min_samples=12, min_failures=3)
    t = run(s, T0, 3 * DAY, Status.UP, every=30)
    t = run(s, t, 600, Status.DOWN, every=30)
    return s, t


def test_burn_rates_and_multiwindow_alerts_during_an_outage() -> None:
    s, t = burn_tracker()
    rates, alerts = s.burn(t)
    # 1 h: 600 s bad of 3600 → 1/6 error rate, / 0.001 budget = 166.7×; 5 m: all bad → 1000×.
    assert rates["1h"] == pytest.approx(166.6667, rel=1e-4)
    assert alerts["1h"].short == pytest.approx(1000.0)
    assert rates["6h"] == pytest.approx(600 / 21600 / 0.001, rel=1e-4)
    assert rates["3d"] == pytest.approx(600 / (3 * DAY) / 0.001, rel=1e-4)
    assert all(alerts[w].firing for w in ("1h", "6h", "3d"))
    assert alerts["1h"].threshold == 14.4 and alerts["6h"].threshold == 6.0 and alerts["3d"].threshold == 1.0


def test_short_window_stops_the_page_soon_after_recovery() -> None:
    s, t = burn_tracker()
    t = run(s, t, 600, Status.UP, every=30)
    rates, alerts = s.burn(t)
    assert rates["1h"] is not None and rates["1h"] > 14.4  # the long window still remembers
    assert alerts["1h"].short == 0.0
    assert not alerts["1h"].firing


def test_two_failed_probes_in_an_hour_do_not_page() -> None:
    s = SlaTracker(99.99, min_samples=12, min_failures=3)
    t = run(s, T0, 3600 - 60, Status.UP, every=30)
    t = run(s, t, 60, Status.DOWN, every=30)  # the last two results failed
    rates, alerts = s.burn(t)
    assert rates["1h"] is not None and rates["1h"] > 14.4 and alerts["1h"].short > 14.4
    assert not alerts["1h"].firing


def test_too_few_samples_give_no_burn_rate() -> None:
    s = SlaTracker(99.9, min_samples=12)
    t = run(s, T0, 5 * 60, Status.DOWN, every=60)
    rates, alerts = s.burn(t)
    assert rates["1h"] is None and not alerts["1h"].firing


def test_ring_forgets_buckets_older_than_thirty_days() -> None:
    s = SlaTracker(99.9)
    s.record(T0 + 60, Status.DOWN, 0.01, 60)
    later = T0 + 31 * DAY
    s.record(later, Status.UP, 0.01, 60)
    assert s.window(later, 30 * 86400).downtime_s == 0.0
    # A bucket 30 days + a minute later reuses the same ring slot: the old data is gone.
    s.record(T0 + 60 + (30 * 1440 + 60) * 60, Status.UP, 0.01, 60)
    assert s._minutes.get(int(T0 // 60)) is None  # noqa: SLF001


def test_latency_percentiles_from_the_histogram() -> None:
    s = SlaTracker(99.9)
    for i in range(100):
        s.record(T0 + i, Status.UP, 0.010 if i < 90 else 0.500, 1)
    p = s.latency(T0 + 100, 3600)
    assert p is not None
    assert p["p50"] == pytest.approx(10, rel=0.15)
    assert p["p99"] == pytest.approx(500, rel=0.15)


def test_percentile_helpers() -> None:
    assert percentiles({}) is None
    assert latency_bin(0.0) == 0
    assert latency_bin(1e9) == latency_bin(1e12)


def test_take_dirty_returns_changed_buckets_once() -> None:
    s = SlaTracker(99.9)
    s.record(T0 + 30, Status.UP, 0.01, 30)
    rows = s.take_dirty()
    assert [r.minute for r in rows] == [int(T0 // 60)]
    assert rows[0].up_s == pytest.approx(30.0) and rows[0].n_up == 1 and sum(rows[0].hist.values()) == 1
    assert s.take_dirty() == []
