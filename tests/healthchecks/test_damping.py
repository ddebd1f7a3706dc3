"""Flap damping: the reported status moves only after enough consecutive results, both ways."""

from __future__ import annotations

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.damping import Damper

UP, DEG, DOWN, UNK = Status.UP, Status.DEGRADED, Status.DOWN, Status.UNKNOWN


def feed(d: Damper, *statuses: Status) -> list[Status]:
    out = []
    for s in statuses:
        d.feed(s)
        out.append(d.status)
    return out


def test_first_result_is_taken_as_is() -> None:
    assert feed(Damper(3, 3), DOWN) == [DOWN]
    assert feed(Damper(3, 3), UP) == [UP]


def test_one_failure_does_not_turn_an_up_probe_down() -> None:
    assert feed(Damper(2, 2), UP, DOWN, UP, DOWN, UP) == [UP] * 5


def test_failure_threshold_consecutive_failures_turn_it_down() -> None:
    assert feed(Damper(3, 2), UP, DOWN, DOWN, DOWN) == [UP, UP, UP, DOWN]


def test_success_threshold_consecutive_successes_bring_it_back() -> None:
    assert feed(Damper(1, 3), UP, DOWN, UP, UP, DOWN, UP, UP, UP) == [UP, DOWN, DOWN, DOWN, DOWN, DOWN, DOWN, UP]


def test_mixed_bad_results_go_to_the_level_the_streak_supports() -> None:
    # DEGRADED then DOWN: two results at least DEGRADED, only one DOWN.
    assert feed(Damper(2, 2), UP, DEG, DOWN, DOWN) == [UP, UP, DEG, DOWN]


def test_recovery_through_degraded() -> None:
    assert feed(Damper(1, 2), DOWN, DEG, DEG, UP, UP) == [DOWN, DOWN, DEG, DEG, UP]


def test_unknown_result_is_reported_at_once_and_the_next_result_is_adopted() -> None:
    assert feed(Damper(3, 3), UP, UNK, DOWN) == [UP, UNK, DOWN]


def test_feed_returns_the_new_status_only_on_change() -> None:
    d = Damper(2, 2)
    assert d.feed(UP) is UP
    assert d.feed(DOWN) is None
    assert d.feed(DOWN) is DOWN
    assert d.consecutive_failures == 2
