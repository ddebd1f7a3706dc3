"""Redis probe against a real server: PING and INFO measurements, a frozen server, evictions."""

from __future__ import annotations

import asyncio
import time

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.redis_probe import RedisProbe
from tests.healthchecks.support import probe_cfg, probe_context
from tests.servers import RedisServer


def make(url: str, **fields: object) -> RedisProbe:
    fields.setdefault("timeout", "0.5s")
    return RedisProbe(probe_cfg(type="redis", url=url, **fields), probe_context())


async def test_up_with_ping_role_and_hit_ratio(redis_server: RedisServer) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    await client.set("k", "v")
    await client.get("k")
    await client.get("missing")
    await client.aclose()
    probe = make(redis_server.url)
    result = await probe.check()
    await probe.aclose()
    assert result.status is Status.UP, result.detail
    assert result.measurements["role"] == "master"
    assert 0 < float(result.measurements["hit_ratio"]) < 1
    assert float(result.measurements["ping_ms"]) < 500


async def test_slow_ping_threshold_gives_degraded(redis_server: RedisServer) -> None:
    probe = make(redis_server.url, thresholds={"ping_ms": 0})
    result = await probe.check()
    await probe.aclose()
    assert result.status is Status.DEGRADED and "slow PING" in result.detail


async def test_memory_ratio_and_evictions_since_last_check(redis_own: RedisServer) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_own.url)
    await client.config_set("maxmemory", "2mb")
    await client.config_set("maxmemory-policy", "allkeys-lru")
    probe = make(redis_own.url, thresholds={"memory_ratio": 0.5, "evictions": 0})
    first = await probe.check()
    assert "memory_ratio" in first.measurements
    for i in range(200):  # fill past maxmemory: keys get evicted
        await client.set(f"big:{i}", "x" * 20_000)
    result = await probe.check()
    await client.aclose()
    await probe.aclose()
    assert result.status is Status.DEGRADED
    assert int(result.measurements["evictions"]) > 0
    assert "evicted" in result.detail and "maxmemory" in result.detail


async def test_frozen_server_gives_down_at_the_driver_timeout_then_up_after_thaw(redis_own: RedisServer) -> None:
    probe = make(redis_own.url, timeout="0.4s", interval="1s")
    assert (await probe.check()).status is Status.UP
    redis_own.freeze()
    try:
        started = time.monotonic()
        result = await asyncio.wait_for(probe.check(), 5)
        took = time.monotonic() - started
    finally:
        redis_own.thaw()
    assert result.status is Status.DOWN
    assert 0.3 < took < 2.0  # the socket timeout fired, not the test's guard
    assert (await probe.check()).status is Status.UP  # a fresh connection after the failure
    await probe.aclose()


async def test_refused_connection_is_down(redis_own: RedisServer) -> None:
    url = redis_own.url
    redis_own.stop()
    probe = make(url)
    result = await probe.check()
    await probe.aclose()
    assert result.status is Status.DOWN and "Error" in result.detail
