"""Keep-errors with the lean client hooks: a failing unsampled request keeps every local span, as sampled.

One real uvicorn service (in a thread, the agent in process) whose route opens a business
span, queries PostgreSQL through an asyncpg pool, runs two Redis commands, calls a loopback
HTTP service through httpx and then fails. It is served twice by the same servers: once
with every tier at 0 % (kept only because it failed) and once at 100 %. The spans stored
for the failed request are the same both times (names, kinds, parentage, status, attributes),
apart from ``sampling.kept_by`` (set only on the kept one), the client's own port and the port
each run's server listens on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aredis
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pulsetrace import runtime
from pulsetrace.instrumentation import business_span
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
from pulsetrace.instrumentation.clients import asyncpg_hook, httpx_hook, redis_hook
from pulsetrace.store import LocalStore, StoredSpan
from pulsetrace.validation import config_from_mapping
from tests.instrumentation.lean_compare import LoopbackHTTP, loopback_http
from tests.instrumentation.test_keep_errors_http import ThreadedUvicorn
from tests.otel_globals import reset_otel_globals
from tests.servers import PostgresServer, RedisServer

VOLATILE = {"sampling.kept_by", "client.port", "network.peer.port"}


def make_app(dsn: str, redis_url: str, downstream: str) -> Any:
    state: dict[str, Any] = {}

    async def fail(request: Request) -> PlainTextResponse:
        if "pool" not in state:
            state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            state["cache"] = aredis.Redis.from_url(redis_url)
        with business_span("order.create", order_id="o-1"):
            async with state["pool"].acquire() as conn:
                await conn.fetchval("SELECT $1::int + 1", 41)
            await state["cache"].set("order:o-1", "pending")
            await state["cache"].get("order:o-1")
            async with httpx.AsyncClient(base_url=downstream, timeout=10) as client:
                await client.get("/stock", params={"item": "book"})
            raise RuntimeError("payment gateway said no")

    traced = PulseTraceMiddleware(Starlette(routes=[Route("/fail", fail)]))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await traced(scope, receive, send)
        except RuntimeError:  # after the 500 went out: keep uvicorn from resetting the connection
            pass

    async def close() -> None:
        if "pool" in state:
            await state["pool"].close()
            await state["cache"].aclose()

    app.close = close  # type: ignore[attr-defined]
    return app


def serve_one_failing_request(tmp_path: Path, rate: float, pg: PostgresServer, rds: RedisServer,
                              downstream: LoopbackHTTP) -> list[StoredSpan]:
    store = tmp_path / f"store-{rate}"
    reset_otel_globals()
    cfg = config_from_mapping({
        "service": {"name": "shop-api"},
        "store": {"path": str(store)},
        "tracing": {"exporters": ["local"], "export_interval": 0.05, "sampling": {
            "tiers": {t: {"rate": rate, "reservoir": 0} for t in ("critical", "business", "general", "health")},
            "keep_errors": True}},
    }, env={})
    runtime.start(config=cfg, instrument=False)
    provider = trace.get_tracer_provider()
    for hook in (asyncpg_hook, httpx_hook, redis_hook):
        hook.instrument(provider)  # type: ignore[arg-type]
    try:
        app = make_app(pg.dsn, rds.url, downstream.url)
        with ThreadedUvicorn(app) as server:
            # The test's own call is not part of the service: no client span, no trace context sent.
            with suppress_instrumentation(), httpx.Client(base_url=server.url, timeout=10) as client:
                assert client.get("/fail").status_code == 500
        running = runtime.current()
        assert running is not None and running.pipeline.force_flush(5000)
    finally:
        for hook in (asyncpg_hook, httpx_hook, redis_hook):
            hook.uninstrument()
        runtime.shutdown(timeout=2.0)
    s = LocalStore(store, create=False)
    try:
        return s.spans_since(0)
    finally:
        s.close()


def comparable(spans: list[StoredSpan]) -> list[tuple[Any, ...]]:
    by_id = {s.span_id: s for s in spans}
    rows = []
    for s in spans:
        parent = by_id.get(s.parent_span_id or "")
        # Each run's uvicorn listens on a port of its own.
        volatile = VOLATILE | {"server.port"} if s.kind == "server" else VOLATILE
        attrs = tuple(sorted((k, str(v)) for k, v in s.attributes.items() if k not in volatile))
        events = tuple((e.get("name"), tuple(sorted((k, str(v)) for k, v in (e.get("attributes") or {}).items()
                                                    if k != "exception.stacktrace"))) for e in s.events)
        rows.append((s.name, s.kind, parent.name if parent else None, s.status, s.status_message, attrs, events))
    return sorted(rows)


@pytest.fixture
def downstream() -> Iterator[LoopbackHTTP]:
    with loopback_http() as box:
        yield box


def test_failing_unsampled_request_keeps_every_local_span_with_the_sampled_attributes(
        tmp_path: Path, clean_agent: None, postgres_server: PostgresServer, redis_server: RedisServer,
        downstream: LoopbackHTTP) -> None:
    kept = serve_one_failing_request(tmp_path, 0.0, postgres_server, redis_server, downstream)
    sampled = serve_one_failing_request(tmp_path, 1.0, postgres_server, redis_server, downstream)
    names = sorted(s.name for s in kept)
    assert names == sorted(["GET /fail", "order.create", "SELECT", "SET", "GET",
                            f"GET 127.0.0.1:{downstream.port}"]), names
    assert {s.attributes.get("sampling.kept_by") for s in kept} == {"error"}
    assert all("sampling.kept_by" not in s.attributes for s in sampled)
    assert len({s.trace_id for s in kept}) == 1
    assert comparable(kept) == comparable(sampled)
    # The downstream service was told the truth: not sampled the first time, sampled the second.
    flags = [int(h["traceparent"].rsplit("-", 1)[1], 16) & 1 for h in downstream.seen]
    assert flags == [0, 1]
    assert os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN") is None
