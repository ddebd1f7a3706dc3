"""RFID fleet probe: readers age out one by one and the fleet status follows the fresh ratio."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.heartbeats import MAX_PER_REQUEST, HeartbeatBook
from pulsetrace.healthchecks.rfid import RfidProbe, _epoch
from tests.healthchecks.support import probe_cfg, probe_context
from tests.servers import PostgresServer, RedisServer


def make(source: dict[str, str], clock: Any = time.time, **fields: Any) -> tuple[RfidProbe, HeartbeatBook]:
    book = HeartbeatBook(clock=clock)
    cfg = probe_cfg(type="rfid", source=source, **fields)
    return RfidProbe(cfg, probe_context(heartbeats=book, clock=clock)), book


async def test_readers_stop_beating_age_out_individually_and_fleet_follows_ratio(redis_own: RedisServer) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_own.url)
    readers = [f"gate-{i}" for i in range(10)]
    stopped: set[str] = set()
    stop = asyncio.Event()

    async def beat() -> None:  # each reader writes its last-seen time every 0.1 s until stopped
        while not stop.is_set():
            for i, r in enumerate(readers):
                if r not in stopped:
                    value = json.dumps({"ts": time.time()}) if i % 2 else str(time.time())
                    await client.set(f"rfid:reader:{r}", value)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(beat())
    probe, _ = make({"redis_url": redis_own.url, "key_pattern": "rfid:reader:*"}, max_age="0.6s")
    try:
        await asyncio.sleep(0.2)
        first = await probe.check()
        assert first.status is Status.UP and first.measurements["readers_total"] == 10, first.detail
        stopped.update({"gate-3", "gate-7"})
        await asyncio.sleep(0.9)
        second = await probe.check()
        assert second.status is Status.DEGRADED  # 8/10 fresh < 0.9
        assert second.measurements["stale_readers"] == ["gate-3", "gate-7"]
        assert "gate-3" in second.detail and "8/10 readers fresh" in second.detail
        stopped.update({"gate-0", "gate-1", "gate-2", "gate-4"})
        await asyncio.sleep(0.9)
        third = await probe.check()
        assert third.status is Status.DOWN  # 4/10 < 0.5
        assert len(third.measurements["stale_readers"]) == 6
        stopped.clear()
        await asyncio.sleep(0.3)
        assert (await probe.check()).status is Status.UP
    finally:
        stop.set()
        await task
        await client.aclose()
        await probe.aclose()


async def test_sql_source_reads_reader_rows(postgres_server: PostgresServer) -> None:
    postgres_server.admin_sql("DROP TABLE IF EXISTS rfid_readers; CREATE TABLE rfid_readers (reader_id text, "
                              "last_seen timestamptz); GRANT SELECT ON rfid_readers TO app; "
                              "INSERT INTO rfid_readers VALUES ('a', now()), ('b', now()), "
                              "('c', now() - interval '1 hour')")
    probe, _ = make({"dsn": postgres_server.dsn, "query": "SELECT reader_id, last_seen FROM rfid_readers"},
                    max_age="60s", thresholds={"degraded_ratio": 0.9, "down_ratio": 0.5})
    result = await probe.check()
    assert result.status is Status.DEGRADED, result.detail
    assert result.measurements["stale_readers"] == ["c"] and result.measurements["readers_total"] == 3


async def test_push_source_uses_heartbeats_with_a_controllable_clock() -> None:
    now = [1_700_000_000.0]
    probe, book = make({"push": "true"}, clock=lambda: now[0], max_age="30s")
    assert (await probe.check()).status is Status.UNKNOWN  # no reader heard from yet: nothing to judge
    for r in ("a", "b", "c", "d"):
        book.beat(r)
    assert (await probe.check()).status is Status.UP
    now[0] += 20
    book.beat("a")
    book.beat("b")
    now[0] += 15  # c and d last seen 35 s ago
    result = await probe.check()
    assert result.status is Status.DEGRADED and result.measurements["fresh_ratio"] == 0.5
    assert result.measurements["stale_readers"] == ["c", "d"]


async def test_unreachable_source_is_down() -> None:
    probe, _ = make({"redis_url": "redis://127.0.0.1:1/0"}, timeout="0.5s")
    result = await probe.check()
    await probe.aclose()
    assert result.status is Status.DOWN and "redis source failed" in result.detail


@pytest.mark.parametrize(("value", "expected"), [("1700000000.5", 1700000000.5), (b'{"ts": 12}', 12.0), (5, 5.0),
                                                  ("garbage", None), ('{"no": 1}', None), (None, None)])
def test_last_seen_value_forms(value: object, expected: float | None) -> None:
    assert _epoch(value) == expected


def test_heartbeat_book_validates_and_clamps_future_timestamps() -> None:
    book = HeartbeatBook(clock=lambda: 1000.0)
    accepted, problems = book.accept([{"reader_id": "a", "ts": 5000}, {"reader_id": ""}, {"ts": 1}, "x",
                                      {"reader_id": "b", "ts": "soon"}])
    assert accepted == 1 and len(problems) == 4
    assert book.last_seen() == {"a": 1000.0}


def test_heartbeat_book_is_bounded() -> None:
    t = [0.0]
    book = HeartbeatBook(clock=lambda: t[0], max_readers=3)
    for r in ("a", "b", "c", "d"):
        t[0] += 1
        book.beat(r)
    assert sorted(book.last_seen()) == ["b", "c", "d"]  # the reader heard from longest ago went
    assert book.accept([{"reader_id": "x"}] * (MAX_PER_REQUEST + 1)) == (
        0, [f"at most {MAX_PER_REQUEST} heartbeats per request"])


async def test_a_fleet_that_never_beat_is_unknown_then_down_once_the_grace_and_max_age_have_passed() -> None:
    now = [1_700_000_000.0]
    probe, book = make({"push": "true"}, clock=lambda: now[0], max_age="60s")
    first = await probe.check()
    assert first.status is Status.UNKNOWN and "no heartbeat from any reader yet" in first.detail
    now[0] += 59
    assert (await probe.check()).status is Status.UNKNOWN
    now[0] += 2  # one max_age (longer than the grace here) without a single beat: the fleet is silent
    late = await probe.check()
    assert late.status is Status.DOWN and "no heartbeat from any reader" in late.detail


async def test_a_fleet_that_was_heard_and_then_vanished_is_down_at_once() -> None:
    now = [1_700_000_000.0]
    probe, book = make({"push": "true"}, clock=lambda: now[0], max_age="60s", thresholds={"min_readers": 2})
    book.beat("a")
    assert (await probe.check()).status is Status.DOWN  # heard from, but fewer than min_readers: a verdict


def test_heartbeat_eviction_over_a_large_fleet_is_logarithmic_and_memory_stays_bounded() -> None:
    t = [0.0]
    book = HeartbeatBook(clock=lambda: t[0], max_readers=10_000)
    for i in range(10_000):
        t[0] += 0.001
        book.beat(f"r{i}")
    for round_ in range(3):  # every reader beats again, then 10,000 new ones push the oldest out
        for i in range(10_000):
            t[0] += 0.001
            book.beat(f"r{i}")
    for i in range(5_000):
        t[0] += 0.001
        book.beat(f"new{i}")
    seen = book.last_seen()
    assert len(seen) == 10_000 and book.evicted == 5_000
    assert all(f"new{i}" in seen for i in range(5_000)) and "r0" not in seen and "r9999" in seen
    assert len(book._heap) <= 2 * len(seen) + 64  # noqa: SLF001 - superseded entries are compacted away


def test_a_late_heartbeat_older_than_the_last_one_changes_nothing() -> None:
    book = HeartbeatBook(clock=lambda: 1000.0)
    book.beat("a", 900.0)
    book.beat("a", 800.0)
    assert book.last_seen() == {"a": 900.0}
