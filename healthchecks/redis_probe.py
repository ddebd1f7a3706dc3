"""Redis probe: PING latency plus what INFO says (memory ratio, hit ratio, evictions, replication).

The probe has its own client (one connection, never the application's pool), with the
driver's socket timeouts set to the probe timeout and no retries: a frozen server gives
a timeout, not a retry storm. After any failure the connection is dropped and rebuilt on
the next check, so a half-read reply can never poison the next one.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

#: ping_ms: slower PING → DEGRADED; memory_ratio: used/maxmemory above → DEGRADED;
#: hit_ratio: below → DEGRADED (0 disables); evictions: more evicted keys since the last check → DEGRADED
#: (-1 disables).
DEFAULTS = {"ping_ms": 100.0, "memory_ratio": 0.9, "hit_ratio": 0.0, "evictions": -1.0}


class RedisProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self._url = cfg.url
        self.timeout = cfg.timeout
        self.thresholds = {**DEFAULTS, **cfg.thresholds}
        self._redact = ctx.redactor.scrub
        self._client: Any = None
        self._last_evicted: int | None = None
        self._closing: set[asyncio.Task[None]] = set()
        import redis.asyncio  # noqa: F401 - loaded now, not inside the first check's timeout

    def _make_client(self) -> Any:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return Redis.from_url(self._url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                              retry_on_timeout=False, retry=Retry(NoBackoff(), 0), health_check_interval=0,
                              single_connection_client=True, client_name="pulsetrace-probe")

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        if self._client is None:
            try:
                self._client = self._make_client()
            except Exception as exc:  # a malformed URL
                return ProbeResult(Status.DOWN, 0.0, self._redact("bad url: " + describe_error(exc)))
        client = self._client
        try:
            await client.ping()
            ping_s = time.perf_counter() - started
            info: dict[str, Any] = await client.info()
        except asyncio.CancelledError:
            self._drop(client)
            raise
        except Exception as exc:
            self._drop(client)
            return ProbeResult(Status.DOWN, time.perf_counter() - started, self._redact(describe_error(exc)))
        return self._judge(ping_s, time.perf_counter() - started, info)

    def _judge(self, ping_s: float, latency: float, info: dict[str, Any]) -> ProbeResult:
        m: dict[str, Measurement] = {"ping_ms": round(ping_s * 1000, 3)}
        problems: list[str] = []
        if ping_s * 1000 > self.thresholds["ping_ms"]:
            problems.append(f"slow PING {ping_s * 1000:.0f} ms > {self.thresholds['ping_ms']:g} ms")
        used, maxmem = _num(info.get("used_memory")), _num(info.get("maxmemory"))
        if maxmem > 0:
            ratio = used / maxmem
            m["memory_ratio"] = round(ratio, 4)
            if ratio > self.thresholds["memory_ratio"]:
                problems.append(f"memory {ratio:.0%} of maxmemory > {self.thresholds['memory_ratio']:.0%}")
        hits, misses = _num(info.get("keyspace_hits")), _num(info.get("keyspace_misses"))
        if hits + misses > 0:
            hit_ratio = hits / (hits + misses)
            m["hit_ratio"] = round(hit_ratio, 4)
            if hit_ratio < self.thresholds["hit_ratio"]:
                problems.append(f"hit ratio {hit_ratio:.1%} < {self.thresholds['hit_ratio']:.1%}")
        evicted = int(_num(info.get("evicted_keys")))
        if self._last_evicted is not None and evicted >= self._last_evicted:
            delta = evicted - self._last_evicted
            m["evictions"] = delta
            if 0 <= self.thresholds["evictions"] < delta:
                problems.append(f"{delta} keys evicted since the last check")
        self._last_evicted = evicted
        role = str(info.get("role", ""))
        m["role"] = role
        if role == "slave":
            link = str(info.get("master_link_status", ""))
            m["master_link_status"] = link
            if link != "up":
                problems.append(f"replica link to master is {link or 'unknown'}")
        if problems:
            return ProbeResult(Status.DEGRADED, latency, "; ".join(problems), m)
        return ProbeResult(Status.UP, latency, f"PING {ping_s * 1000:.1f} ms, role {role or '?'}", m)

    def _drop(self, client: Any) -> None:
        self._client = None
        self._last_evicted = None
        abort_client(client)
        close_later(client, self._closing)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), timeout=1.0)
            except BaseException:
                abort_client(client)


def close_later(client: Any, keep: set[asyncio.Task[None]]) -> None:
    """Finish closing an aborted client in the background (its sockets are already gone)."""
    async def close() -> None:
        try:
            await asyncio.wait_for(client.aclose(), timeout=1.0)
        except BaseException:
            pass

    try:
        task = asyncio.get_running_loop().create_task(close())
    except RuntimeError:
        return
    keep.add(task)
    task.add_done_callback(keep.discard)


def abort_client(client: Any) -> None:
    """Drop a client's connections without a round trip (the server may be frozen)."""
    try:
        pool = client.connection_pool
        conns = list(getattr(pool, "_available_connections", [])) + list(getattr(pool, "_in_use_connections", []))
        if getattr(client, "connection", None) is not None:
            conns.append(client.connection)
        for conn in conns:
            _abort(conn)
    except Exception:
        pass


def _abort(conn: Any) -> None:
    """Close a connection's socket without a round trip (the server may be frozen)."""
    writer = getattr(conn, "_writer", None)
    if writer is not None:
        try:
            writer.transport.abort()
        except Exception:
            pass


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
