"""RFID reader fleet probe: health from heartbeats, never by connecting to a reader.

A reader serves one client at a time, so a probe connection could knock the production
client off. Instead the last-seen time of each reader comes from one source:

- ``redis``: ``source: {redis_url, key_pattern}``: keys matching the pattern (SCAN, bounded),
  each value the last-seen epoch seconds or JSON ``{"ts": ...}``; the reader id is the key
  with the pattern's fixed prefix removed;
- ``sql``: ``source: {dsn, query}``: rows ``(reader_id, last_seen)`` (a timestamp or epoch seconds);
- ``push``: ``source: {push: "true"}``: heartbeats POSTed to the health server.

A reader is fresh when seen within ``max_age``. The fleet status follows the fresh ratio:
below ``thresholds.degraded_ratio`` (default 0.9) DEGRADED, below ``thresholds.down_ratio``
(default 0.5) DOWN, fewer readers known than ``thresholds.min_readers`` (default 1) DOWN.
The stale readers are listed in the measurements (the first :data:`MAX_LISTED`).

No data is not downtime: while no reader has been heard from since the agent started, the
fleet reports UNKNOWN (nothing to judge: it counts in no SLA window) for the start-up grace
period or one ``max_age``, whichever is longer; only a fleet still silent after that is DOWN.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

DEFAULTS = {"degraded_ratio": 0.9, "down_ratio": 0.5, "min_readers": 1.0}
MAX_READERS = 10_000
MAX_LISTED = 50


def _epoch(value: Any) -> float | None:
    """Last-seen as epoch seconds from a number, a numeric string, JSON ``{"ts": ..}`` or a datetime."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return float(value.timestamp())
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, dict):
            return _epoch(doc.get("ts"))
    return None


class RfidProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.thresholds = {**DEFAULTS, **cfg.thresholds}
        src = cfg.source
        if src.get("redis_url"):
            self.kind = "redis"
        elif src.get("dsn"):
            self.kind = "sql"
        else:
            self.kind = "push"
        self._redis: Any = None
        #: Whether any reader has been heard from since start (then an empty fleet is a real outage).
        self._ever_seen = False
        self._closing: set[asyncio.Task[None]] = set()
        # Load the driver now, not inside the first check's timeout.
        if self.kind == "redis":
            import redis.asyncio  # noqa: F401
        elif self.kind == "sql":
            import asyncpg  # noqa: F401

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            seen = await self._last_seen()
        except asyncio.CancelledError:
            self._drop_redis()
            raise
        except Exception as exc:
            self._drop_redis()
            return ProbeResult(Status.DOWN, time.perf_counter() - started,
                               self.ctx.redactor.scrub(f"{self.kind} source failed: {describe_error(exc)}"))
        return self.judge(seen, time.perf_counter() - started)

    def judge(self, seen: dict[str, float], latency_s: float) -> ProbeResult:
        now = self.ctx.clock()
        stale = sorted(r for r, ts in seen.items() if now - ts > self.cfg.max_age)
        total = len(seen)
        fresh = total - len(stale)
        ratio = fresh / total if total else 0.0
        m: dict[str, Measurement] = {"readers_total": total, "readers_fresh": fresh, "fresh_ratio": round(ratio, 4),
                                     "stale_readers": stale[:MAX_LISTED]}
        listed = ", ".join(stale[:10]) + (f" (+{len(stale) - 10} more)" if len(stale) > 10 else "")
        if total:
            self._ever_seen = True
        if total == 0 and not self._ever_seen:
            waited = self.ctx.since_start
            patience = max(self.ctx.startup_grace, self.cfg.max_age)
            if waited < patience:
                return ProbeResult(Status.UNKNOWN, latency_s, f"no heartbeat from any reader yet ({waited:.0f}s "
                                   f"since start; waiting up to {patience:g}s)", m)
            return ProbeResult(Status.DOWN, latency_s, f"no heartbeat from any reader in {waited:.0f}s since start", m)
        if total < self.thresholds["min_readers"]:
            return ProbeResult(Status.DOWN, latency_s, f"{total} readers known (expected at least "
                               f"{self.thresholds['min_readers']:g})", m)
        summary = f"{fresh}/{total} readers fresh ({ratio:.0%})"
        if ratio < self.thresholds["down_ratio"]:
            return ProbeResult(Status.DOWN, latency_s, f"{summary}; stale: {listed}", m)
        if ratio < self.thresholds["degraded_ratio"]:
            return ProbeResult(Status.DEGRADED, latency_s, f"{summary}; stale: {listed}", m)
        return ProbeResult(Status.UP, latency_s, summary + (f"; stale: {listed}" if stale else ""), m)

    async def _last_seen(self) -> dict[str, float]:
        if self.kind == "redis":
            return await self._from_redis()
        if self.kind == "sql":
            return await self._from_sql()
        return self.ctx.heartbeats.last_seen()

    async def _from_redis(self) -> dict[str, float]:
        if self._redis is None:
            from redis.asyncio import Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._redis = Redis.from_url(self.cfg.source["redis_url"], socket_timeout=self.cfg.timeout,
                                         socket_connect_timeout=self.cfg.timeout, retry_on_timeout=False,
                                         retry=Retry(NoBackoff(), 0), single_connection_client=True,
                                         health_check_interval=0, client_name="pulsetrace-probe")
        pattern = self.cfg.source.get("key_pattern") or "rfid:reader:*"
        prefix = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
        keys: list[bytes] = []
        cursor: int = 0
        while True:
            cursor, batch = await self._redis.scan(cursor=cursor, match=pattern, count=500)
            keys.extend(batch)
            if cursor == 0 or len(keys) >= MAX_READERS:
                break
        seen: dict[str, float] = {}
        keys = keys[:MAX_READERS]
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            values = await self._redis.mget(chunk)
            for key, value in zip(chunk, values):
                ts = _epoch(value)
                if ts is not None:
                    name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                    seen[name[len(prefix):] if name.startswith(prefix) else name] = ts
        return seen

    async def _from_sql(self) -> dict[str, float]:
        import asyncpg

        conn: Any = await asyncpg.connect(dsn=self.cfg.source["dsn"], timeout=self.cfg.timeout,
                                          command_timeout=self.cfg.timeout, statement_cache_size=0,
                                          server_settings={"application_name": "pulsetrace-probe"})
        try:
            rows = await conn.fetch(self.cfg.source.get("query") or "SELECT reader_id, last_seen FROM rfid_readers")
        except BaseException:
            conn.terminate()
            raise
        await conn.close(timeout=min(self.cfg.timeout, 1.0))
        seen: dict[str, float] = {}
        for row in rows[:MAX_READERS]:
            ts = _epoch(row[1])
            if ts is not None:
                seen[str(row[0])] = ts
        return seen

    def _drop_redis(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            from pulsetrace.healthchecks.redis_probe import abort_client, close_later

            abort_client(client)
            close_later(client, self._closing)

    async def aclose(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), timeout=1.0)
            except BaseException:
                from pulsetrace.healthchecks.redis_probe import abort_client

                abort_client(client)
