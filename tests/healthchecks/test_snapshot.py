"""The typed health snapshot: its JSON is the documented details shape and reads back the same, and
staleness is the probe loop's own verdict, not how late a reader got to it."""

from __future__ import annotations

import json

from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.service import HealthService
from pulsetrace.healthchecks.snapshot import HealthSnapshot, SnapshotBoard, snapshot_from_dict
from tests.healthchecks.support import health_config

MOD = "tests.healthchecks.probes_for_tests"


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_details_json_reads_back_into_an_equal_snapshot() -> None:
    cfg = health_config([{"name": "db", "type": "custom", "target": f"{MOD}:Switch", "options": {"name": "db"},
                          "interval": "1s", "timeout": "0.5s", "critical": True, "sla": 99.9,
                          "impact": {"revenue_per_minute": 10, "users": 3, "capabilities": ["checkout"]}}],
                        failure_threshold=1)
    service = HealthService(cfg, persist=False)
    runner = service.probes["db"].runner
    service.record(runner, ProbeResult(Status.UP, 0.002, "ok", {"connect_ms": 1.5, "role": "primary"}))
    service.record(runner, ProbeResult(Status.DOWN, 2.0, "timed out after 0.5s"))
    snap = service.snapshot()
    doc = json.loads(json.dumps(snap.to_dict()))
    again = snapshot_from_dict(doc)
    assert again == snap
    assert set(doc) == {"status", "stale", "generated_at", "probes"}
    assert doc["probes"]["db"]["transitions"][-1]["to"] == "DOWN"
    assert json.loads(service.details_json()) == doc


def test_snapshot_from_dict_never_raises_on_garbage() -> None:
    for garbage in (None, 42, "x", {"probes": "nope"}, {"probes": {"db": 7}}, {"status": "SIDEWAYS"},
                    {"probes": {"db": {"status": "UP", "sla": {"windows": 3}, "transitions": [5]}}}):
        snap = snapshot_from_dict(garbage)
        assert isinstance(snap, HealthSnapshot)


def test_stale_only_when_the_probe_loop_says_so_or_stops_ticking() -> None:
    mono = Mono()
    board = SnapshotBoard(HealthSnapshot(Status.UP, False, 0.0, {}), stale_after=3.0, monotonic=mono)
    mono.t += 10.0  # a reader that got to run late (a busy HTTP loop): the loop had ticked meanwhile
    board.tick(overdue=False)
    mono.t += 2.0
    assert not board.is_stale() and board.health()[0] == 200
    board.tick(overdue=True)  # the probe loop's own clock: no result within stale_after
    assert board.is_stale() and board.health() == (503, b'{"status": "UP", "stale": true}\n')
    board.publish(HealthSnapshot(Status.UP, False, 1.0, {}))  # a result: fresh again
    assert not board.is_stale()
    mono.t += 3.5  # no tick, no result: the probe loop itself is stuck
    assert board.is_stale() and board.read().stale
