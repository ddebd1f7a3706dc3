"""The lean asyncpg, psycopg and redis hooks give the spans contrib's instrumentors give, against real servers.

Documented differences (docs/performance.md): the lean hooks leave out ``net.transport``/
``network.transport``; the redis and psycopg hooks add ``error.type`` on a failed call (the
current conventions; contrib's redis and psycopg instrumentors have none) and records no RediSearch result
attributes; the asyncpg hook does not record the pool's reset query nor a listener's
``LISTEN``/``UNLISTEN`` (issue 15), which contrib records as request spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
import redis
import redis.asyncio

from pulsetrace.instrumentation.clients import asyncpg_hook, psycopg_hook, redis_hook
from tests.instrumentation.lean_compare import (
    Capture, assert_same_spans, capture, contrib_dup_mode, run_under_root, unsampled_capture,
)
from tests.servers import PostgresServer, RedisServer

TRANSPORT = frozenset({"net.transport", "network.transport"})


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    asyncpg_hook.uninstrument()
    psycopg_hook.uninstrument()
    redis_hook.uninstrument()


def _contrib(monkeypatch: pytest.MonkeyPatch, instrumentor: Any, calls: Callable[[], None]) -> Capture:
    cap = capture()
    with contrib_dup_mode(monkeypatch):
        instrumentor.instrument(tracer_provider=cap.provider)
        try:
            run_under_root(cap, calls)
        finally:
            instrumentor.uninstrument()
    return cap


# --- asyncpg ---------------------------------------------------------------------------------------------

def _pg_calls(dsn: str, pooled: bool = False) -> Callable[[], None]:
    async def on(conn: Any) -> None:
        await conn.fetchval("SELECT 1 + $1", 2)
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (a int)")
        await conn.executemany("INSERT INTO t VALUES ($1)", [(1,), (2,)])
        await conn.fetch("/* report */ SELECT * FROM t WHERE a = 5")
        await conn.fetchrow("SELECT a FROM t LIMIT 1")
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.execute("SELECT * FROM nosuch")
        stmt = await conn.prepare("SELECT a FROM t ORDER BY a")
        await stmt.fetchval()
        await stmt.fetch()
        async with conn.transaction():
            await conn.execute("SELECT 3")
            cursor = await conn.cursor("SELECT a FROM t ORDER BY a")
            await cursor.fetch(1)
            await cursor.fetchrow()

    async def main() -> None:
        if pooled:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                async with pool.acquire() as conn:
                    await on(conn)
            finally:
                await asyncio.wait_for(pool.close(), 60)
        else:
            conn = await asyncpg.connect(dsn)
            try:
                await on(conn)
            finally:
                await conn.close()

    return lambda: asyncio.run(main())


def test_lean_asyncpg_spans_equal_contribs_for_the_same_statements(postgres_server: PostgresServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    contrib = _contrib(monkeypatch, AsyncPGInstrumentor(), _pg_calls(postgres_server.dsn))
    lean = capture()
    asyncpg_hook.instrument(lean.provider)
    run_under_root(lean, _pg_calls(postgres_server.dsn))
    assert_same_spans(contrib, lean, contrib_only=TRANSPORT)
    names = [s.name for s in lean.client_spans()]
    assert names[:4] == ["SELECT", "CREATE", "INSERT", "SELECT"] and "CURSOR: SELECT" in names
    failed = [s for s in lean.client_spans() if s.status.status_code.name == "ERROR"]
    assert [(s.attributes or {}).get("error.type") for s in failed] == ["UndefinedTableError"]


def test_pool_reset_and_listen_are_not_request_spans(postgres_server: PostgresServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    async def listen_then_query(dsn: str) -> None:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)

        def on_order(*_args: object) -> None:
            pass

        try:
            for _ in range(2):
                async with pool.acquire() as conn:
                    await conn.add_listener("orders", on_order)
                    await conn.remove_listener("orders", on_order)
                    await conn.fetchval("SELECT 1")
        finally:
            await asyncio.wait_for(pool.close(), 60)

    def calls() -> None:
        asyncio.run(listen_then_query(postgres_server.dsn))

    contrib = _contrib(monkeypatch, AsyncPGInstrumentor(), calls)
    contrib_statements = [(s.attributes or {}).get("db.statement", "") for s in contrib.client_spans()]
    assert any("pg_advisory_unlock_all" in t for t in contrib_statements)  # what contrib records on release
    lean = capture()
    asyncpg_hook.instrument(lean.provider)
    run_under_root(lean, calls)
    assert [(s.attributes or {}).get("db.statement") for s in lean.client_spans()] == ["SELECT 1", "SELECT 1"]


def test_lean_asyncpg_in_an_unsampled_trace_records_nothing(postgres_server: PostgresServer) -> None:
    cap = unsampled_capture()
    asyncpg_hook.instrument(cap.provider)
    run_under_root(cap, _pg_calls(postgres_server.dsn, pooled=True))
    assert cap.spans() == []


def test_uninstrument_restores_asyncpg(postgres_server: PostgresServer) -> None:
    from asyncpg.connection import Connection
    from asyncpg.cursor import Cursor, CursorIterator
    from asyncpg.prepared_stmt import PreparedStatement

    def snapshot() -> list[object]:
        return [vars(cls).get(name) for cls, names in (
            (Connection, ("execute", "executemany", "fetch", "fetchval", "fetchrow")),
            (PreparedStatement, ("fetch", "fetchval", "fetchrow", "executemany", "fetchmany")),
            (Cursor, ("fetch", "forward", "fetchrow")), (CursorIterator, ("__anext__",))) for name in names]

    before = snapshot()
    cap = capture()
    asyncpg_hook.instrument(cap.provider)
    asyncpg_hook.instrument(cap.provider)
    assert all(a is not b for a, b in zip(snapshot(), before, strict=True))
    asyncpg_hook.uninstrument()
    assert snapshot() == before
    run_under_root(cap, _pg_calls(postgres_server.dsn))
    assert cap.client_spans() == []


# --- psycopg --------------------------------------------------------------------------------------------

def _psycopg_calls(dsn: str) -> Callable[[], None]:
    from psycopg import sql

    def run() -> None:
        with psycopg.connect(dsn) as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1 + %s", (2,))
            cur.execute("CREATE TEMP TABLE t (a int)")
            cur.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,)])
            cur.execute(sql.SQL("SELECT {} FROM t").format(sql.Identifier("a")))
            with pytest.raises(psycopg.errors.UndefinedTable):
                cur.execute("SELECT * FROM nosuch")
            conn.rollback()
            conn.execute("SELECT 4")

        async def in_async() -> None:
            async with await psycopg.AsyncConnection.connect(dsn) as aconn:
                acur = aconn.cursor()
                await acur.execute("SELECT 5")
                with pytest.raises(psycopg.errors.UndefinedTable):
                    await acur.execute("SELECT * FROM nosuch")

        asyncio.run(in_async())

    return run


def test_lean_psycopg_spans_equal_contribs_for_the_same_statements(postgres_server: PostgresServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    contrib = _contrib(monkeypatch, PsycopgInstrumentor(), _psycopg_calls(postgres_server.dsn))
    lean = capture()
    psycopg_hook.instrument(lean.provider)
    run_under_root(lean, _psycopg_calls(postgres_server.dsn))
    assert_same_spans(contrib, lean, contrib_only=TRANSPORT, lean_only=frozenset({"error.type"}))
    spans = lean.client_spans()
    assert [s.name for s in spans] == ["SELECT", "CREATE", "INSERT", "SELECT", "SELECT", "SELECT", "SELECT",
                                       "SELECT"]
    assert (spans[3].attributes or {})["db.statement"] == 'SELECT "a" FROM t'


def test_lean_psycopg_in_an_unsampled_trace_records_nothing(postgres_server: PostgresServer) -> None:
    cap = unsampled_capture()
    psycopg_hook.instrument(cap.provider)
    run_under_root(cap, _psycopg_calls(postgres_server.dsn))
    assert cap.spans() == []


def test_uninstrument_restores_psycopg(postgres_server: PostgresServer) -> None:
    def snapshot() -> list[object]:
        return [vars(cls)[name] for cls in (psycopg.Cursor, psycopg.AsyncCursor) for name in ("execute", "executemany")]

    before = snapshot()
    cap = capture()
    psycopg_hook.instrument(cap.provider)
    psycopg_hook.instrument(cap.provider)
    assert all(a is not b for a, b in zip(snapshot(), before, strict=True))
    psycopg_hook.uninstrument()
    assert snapshot() == before
    run_under_root(cap, _psycopg_calls(postgres_server.dsn))
    assert cap.client_spans() == []


# --- redis -----------------------------------------------------------------------------------------------

def _redis_calls(url: str) -> Callable[[], None]:
    def run() -> None:
        client = redis.Redis.from_url(url)
        client.set("k", "secret-value")
        client.get("k")
        with pytest.raises(redis.ResponseError):
            client.incr("k")
        pipe = client.pipeline()
        pipe.set("a", 1)
        pipe.get("a")
        pipe.execute()
        client.close()

        async def in_async() -> None:
            aclient = redis.asyncio.Redis.from_url(url)
            await aclient.set("k2", "v")
            await aclient.get("k2")
            with pytest.raises(redis.ResponseError):
                await aclient.incr("k")
            apipe = aclient.pipeline()
            apipe.set("a", 1)
            apipe.get("a")
            await apipe.execute()
            await aclient.aclose()

        asyncio.run(in_async())

    return run


def test_lean_redis_spans_equal_contribs_for_the_same_commands(redis_server: RedisServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    contrib = _contrib(monkeypatch, RedisInstrumentor(), _redis_calls(redis_server.url))
    lean = capture()
    redis_hook.instrument(lean.provider)
    run_under_root(lean, _redis_calls(redis_server.url))
    assert_same_spans(contrib, lean, contrib_only=TRANSPORT, lean_only=frozenset({"error.type"}))
    spans = lean.client_spans()
    assert [s.name for s in spans] == ["SET", "GET", "INCRBY", "SET GET", "SET", "GET", "INCRBY", "SET GET"]
    assert all("secret-value" not in str(s.attributes) for s in spans)
    assert [(s.attributes or {}).get("error.type") for s in spans if s.name == "INCRBY"] == ["ResponseError"] * 2


def test_lean_redis_in_an_unsampled_trace_records_nothing(redis_server: RedisServer) -> None:
    cap = unsampled_capture()
    redis_hook.instrument(cap.provider)
    run_under_root(cap, _redis_calls(redis_server.url))
    assert cap.spans() == []


def test_uninstrument_restores_redis(redis_server: RedisServer) -> None:
    import redis.asyncio.client
    import redis.client

    def snapshot() -> list[object]:
        return [vars(redis.client.Redis)["execute_command"], vars(redis.client.Pipeline)["execute"],
                vars(redis.client.Pipeline)["immediate_execute_command"],
                vars(redis.asyncio.client.Redis)["execute_command"], vars(redis.asyncio.client.Pipeline)["execute"]]

    before = snapshot()
    cap = capture()
    redis_hook.instrument(cap.provider)
    redis_hook.instrument(cap.provider)
    assert all(a is not b for a, b in zip(snapshot(), before, strict=True))
    redis_hook.uninstrument()
    assert snapshot() == before
    run_under_root(cap, _redis_calls(redis_server.url))
    assert cap.client_spans() == []
