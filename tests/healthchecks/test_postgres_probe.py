"""PostgreSQL probe against a real server: UP, slow → DEGRADED, stopped → DOWN, started → UP."""

from __future__ import annotations

import asyncio

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.postgres_probe import PostgresProbe
from pulsetrace.healthchecks.redact import Redactor
from tests.healthchecks.support import probe_cfg, probe_context
from tests.servers import PG_PASSWORD, PostgresServer


def make(dsn: str, **fields: object) -> PostgresProbe:
    cfg = probe_cfg(type="postgres", dsn=dsn, timeout="2s", **fields)
    return PostgresProbe(cfg, probe_context(redactor=Redactor([PG_PASSWORD])))


async def test_up_with_connect_and_query_times(postgres_server: PostgresServer) -> None:
    result = await make(postgres_server.dsn).check()
    assert result.status is Status.UP, result.detail
    assert 0 < float(result.measurements["connect_ms"]) < 2000
    assert 0 < float(result.measurements["query_ms"]) < 2000


async def test_slower_than_the_thresholds_is_degraded(postgres_server: PostgresServer) -> None:
    result = await make(postgres_server.dsn, thresholds={"connect_ms": 0, "query_ms": 0}).check()
    assert result.status is Status.DEGRADED
    assert "slow connect" in result.detail and "slow query" in result.detail


async def test_probe_connection_is_closed_after_each_check(postgres_server: PostgresServer) -> None:
    probe = make(postgres_server.dsn)
    for _ in range(3):
        assert (await probe.check()).status is Status.UP
    await asyncio.sleep(0.2)
    left = postgres_server.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pulsetrace-probe'")
    assert left == "0"


async def test_replica_check_on_a_primary_reports_not_in_recovery(postgres_server: PostgresServer) -> None:
    result = await make(postgres_server.dsn, check_replica=True).check()
    assert result.status is Status.UP and result.measurements["in_recovery"] is False


async def test_wrong_password_is_down_and_the_password_never_shows(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn.replace(PG_PASSWORD, "Wr0ng-Pw-xyz")
    probe = PostgresProbe(probe_cfg(type="postgres", dsn=dsn), probe_context(redactor=Redactor(["Wr0ng-Pw-xyz"])))
    result = await probe.check()
    assert result.status is Status.DOWN
    assert "Wr0ng-Pw-xyz" not in result.detail and "password authentication failed" in result.detail


async def test_stopped_server_is_down_and_up_again_after_start(postgres_own: PostgresServer) -> None:
    probe = make(postgres_own.dsn)
    assert (await probe.check()).status is Status.UP
    postgres_own.stop()
    down = await probe.check()
    assert down.status is Status.DOWN and "connect failed" in down.detail
    assert PG_PASSWORD not in down.detail
    postgres_own.start()
    assert (await probe.check()).status is Status.UP
