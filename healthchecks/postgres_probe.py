"""PostgreSQL probe (asyncpg): connect time and ``SELECT 1`` time on its own connection.

Never uses the application's pool: an exhausted pool must not make a healthy database
look down (and a probe must not take a connection the app needs). A fresh connection per
check also measures what a new app worker would see. Optional replica checks:
``pg_is_in_recovery()`` and the replay lag. Every error string is redacted.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

DEFAULTS = {"connect_ms": 1000.0, "query_ms": 500.0, "replay_lag_s": 30.0}


class PostgresProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self._dsn = cfg.dsn
        self.timeout = cfg.timeout
        self.check_replica = cfg.check_replica
        self.thresholds = {**DEFAULTS, **cfg.thresholds}
        self._redact = ctx.redactor.scrub
        import asyncpg  # noqa: F401 - loaded now, not inside the first check's timeout

    async def check(self) -> ProbeResult:
        import asyncpg

        started = time.perf_counter()
        try:
            conn: Any = await asyncpg.connect(dsn=self._dsn, timeout=self.timeout, command_timeout=self.timeout,
                                              statement_cache_size=0,
                                              server_settings={"application_name": "pulsetrace-probe"})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ProbeResult(Status.DOWN, time.perf_counter() - started,
                               self._redact("connect failed: " + describe_error(exc)))
        connect_s = time.perf_counter() - started
        measurements: dict[str, Measurement] = {"connect_ms": round(connect_s * 1000, 3)}
        cancelled = False
        try:
            q0 = time.perf_counter()
            await conn.fetchval("SELECT 1")
            query_s = time.perf_counter() - q0
            measurements["query_ms"] = round(query_s * 1000, 3)
            problems: list[str] = []
            if self.check_replica:
                problems += await self._replica(conn, measurements)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            return ProbeResult(Status.DOWN, time.perf_counter() - started,
                               self._redact("query failed: " + describe_error(exc)), measurements)
        finally:
            await self._close(conn, cancelled)
        latency = time.perf_counter() - started
        if connect_s * 1000 > self.thresholds["connect_ms"]:
            problems.append(f"slow connect {connect_s * 1000:.0f} ms > {self.thresholds['connect_ms']:g} ms")
        if query_s * 1000 > self.thresholds["query_ms"]:
            problems.append(f"slow query {query_s * 1000:.0f} ms > {self.thresholds['query_ms']:g} ms")
        if problems:
            return ProbeResult(Status.DEGRADED, latency, "; ".join(problems), measurements)
        return ProbeResult(Status.UP, latency, f"connect {connect_s * 1000:.1f} ms, query {query_s * 1000:.1f} ms",
                           measurements)

    async def _replica(self, conn: Any, measurements: dict[str, Measurement]) -> list[str]:
        in_recovery = bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
        measurements["in_recovery"] = in_recovery
        if not in_recovery:
            return []
        lag = await conn.fetchval("SELECT COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)")
        lag_s = float(lag or 0.0)
        measurements["replay_lag_s"] = round(lag_s, 3)
        if lag_s > self.thresholds["replay_lag_s"]:
            return [f"replica lag {lag_s:.1f} s > {self.thresholds['replay_lag_s']:g} s"]
        return []

    async def _close(self, conn: Any, cancelled: bool) -> None:
        if cancelled:
            conn.terminate()  # no awaiting while being cancelled: the server may be the thing that hangs
            return
        try:
            await conn.close(timeout=min(self.timeout, 1.0))
        except Exception:
            conn.terminate()
