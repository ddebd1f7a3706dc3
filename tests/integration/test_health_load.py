"""5,000 /health requests from 50 concurrent clients cause no PostgreSQL query beyond the probe's own cadence.

Counted on the server: ``pg_stat_database.xact_commit`` of the probed database. A per-request
("Rex-style") handler on the same server stack is measured the same way to show the counter
does see per-request queries.
"""

from __future__ import annotations

import asyncio
import time

from pulsetrace.http import HealthServer, Request, Response, json_response
from pulsetrace.healthchecks.postgres_probe import PostgresProbe
from pulsetrace.healthchecks.handle import start_in_thread
from tests.healthchecks.support import hammer, health_config, probe_cfg, probe_context
from tests.servers import PostgresServer


def commits(pg: PostgresServer) -> int:
    return int(pg.admin_sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def settled_commits(pg: PostgresServer) -> int:
    time.sleep(0.4)  # a backend flushes its statistics when it exits; give the last one time to
    return commits(pg)


def calibrate(pg: PostgresServer) -> tuple[int, int]:
    """(commits added by one reading of the counter, commits per probe check), measured on this server."""
    first = settled_commits(pg)
    read = settled_commits(pg) - first
    probe = PostgresProbe(probe_cfg(type="postgres", dsn=pg.dsn), probe_context())
    before = settled_commits(pg)
    for _ in range(3):
        asyncio.run(probe.check())
    per_check = (settled_commits(pg) - before - read) / 3
    return read, round(per_check)


def test_health_load_adds_no_queries_beyond_the_probe_cadence(postgres_own: PostgresServer) -> None:
    read, per_check = calibrate(postgres_own)
    assert 1 <= per_check <= 3
    handle = start_in_thread(health_config([{"name": "db", "type": "postgres", "dsn": postgres_own.dsn,
                                             "interval": "1s", "timeout": "0.8s", "critical": True}]))
    try:
        deadline = time.monotonic() + 10
        while handle.snapshot().probes["db"].status.value != "UP" and time.monotonic() < deadline:
            time.sleep(0.05)
        runner = handle.service.probes["db"].runner
        before, checks_before = settled_commits(postgres_own), runner.checks
        started = time.monotonic()
        codes = asyncio.run(hammer(handle.port, "/health", clients=50, per_client=100))
        elapsed = time.monotonic() - started
        after, checks_after = settled_commits(postgres_own), runner.checks
    finally:
        handle.stop(1.0)
    assert len(codes) == 5000 and set(codes) == {200}
    probe_checks = checks_after - checks_before
    assert probe_checks >= 1  # the probe kept its cadence during the load
    # Only the probe's own checks (and the counter reading) committed anything; a check that straddles
    # a reading may land on either side, hence one check of slack. 5,000 per-request queries would not fit.
    delta = after - before
    assert delta <= read + per_check * (probe_checks + 1), (delta, read, per_check, probe_checks, elapsed)


def test_per_request_checks_do_show_up_in_the_counter(postgres_own: PostgresServer) -> None:
    """The control: a handler that queries PostgreSQL on every request, on the same server stack."""
    import asyncpg

    async def main() -> list[int]:
        pool = await asyncpg.create_pool(postgres_own.dsn, min_size=1, max_size=10)

        async def handler(req: Request) -> Response:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            return json_response(200, {"status": "UP"})

        server = HealthServer(handler, "127.0.0.1", 0)
        await server.start()
        try:
            return await hammer(server.port, "/health", clients=10, per_client=20)
        finally:
            await server.stop()
            await pool.close()

    before = settled_commits(postgres_own)
    codes = asyncio.run(main())
    after = settled_commits(postgres_own)
    assert set(codes) == {200}
    assert after - before >= 200
