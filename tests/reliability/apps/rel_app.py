"""The service the reliability and fuzz tests run under ``pulsetrace run``.

Each dependency route answers 503 quickly when its dependency is down (bounded
client timeouts), the way a careful service does, so that the tests can tell
"the agent made the service fail" from "the dependency is down":

- ``/hello``: needs nothing.
- ``/db``: a query through an asyncpg pool (``DB_DSN``), created on first use.
- ``/cache``: Redis ``SET`` + ``GET`` (``REDIS_URL``), 0.5 s socket timeouts.
- ``/pay``: ``GET PAY_URL`` through a shared httpx client, 1 s timeout.
- ``/spans?n=N``: N internal spans (fills the agent's buffers quickly).
- ``POST /attrs``: sets hostile attribute values (a pickled list of ``(key, value)``
  in the body, from the fuzz tests) through the plain OpenTelemetry API, the
  business-spans API and ``set_business_attributes``.
- ``/whoami``: this worker's pid.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

_state: dict[str, Any] = {}


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


async def db(request: Request) -> Response:
    import asyncpg

    try:
        pool: Any = _state.get("pool")
        if pool is None:
            pool = await asyncio.wait_for(asyncpg.create_pool(os.environ["DB_DSN"], min_size=1, max_size=4,
                                                              timeout=1.0), 2.0)
            _state["pool"] = pool
        async with asyncio.timeout(2.0):
            async with pool.acquire() as conn:
                value = await conn.fetchval("SELECT 41 + 1")
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return PlainTextResponse(f"db unavailable: {type(exc).__name__}", status_code=503)
    return JSONResponse({"db": value})


async def cache(request: Request) -> Response:
    import redis.asyncio as aredis
    from redis.exceptions import RedisError

    client = _state.get("redis")
    if client is None:
        client = aredis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=0.5, socket_connect_timeout=0.5)
        _state["redis"] = client
    try:
        await client.set("rel:last", "1")
        value = await client.get("rel:last")
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        return PlainTextResponse(f"cache unavailable: {type(exc).__name__}", status_code=503)
    return JSONResponse({"cache": value.decode() if isinstance(value, bytes) else value})


async def pay(request: Request) -> Response:
    client = _state.get("http")
    if client is None:
        client = httpx.AsyncClient(timeout=1.0)
        _state["http"] = client
    try:
        resp = await client.get(os.environ["PAY_URL"])
    except httpx.HTTPError as exc:
        return PlainTextResponse(f"gateway unavailable: {type(exc).__name__}", status_code=503)
    return JSONResponse({"gateway": resp.status_code})


async def spans(request: Request) -> PlainTextResponse:
    from opentelemetry import trace

    tracer = trace.get_tracer("rel.app")
    n = min(int(request.query_params.get("n", "10")), 500)
    for i in range(n):
        with tracer.start_as_current_span("rel.step", attributes={"step": i, "payload": "x" * 64}):
            pass
    return PlainTextResponse(str(n))


async def attrs(request: Request) -> PlainTextResponse:
    from opentelemetry import trace

    from pulsetrace.instrumentation import business_span, set_business_attributes

    pairs = pickle.loads(await request.body())  # test-only app on loopback: the body comes from the fuzz test
    span = trace.get_current_span()
    for key, value in pairs:
        span.set_attribute(key, value)
    kwargs = {f"k{i}": value for i, (_key, value) in enumerate(pairs)}
    with business_span("order.create", tier="business", **kwargs) as biz:
        set_business_attributes(**{f"extra_{i}": value for i, (_key, value) in enumerate(pairs)})
        for key, value in pairs:
            biz.set_attribute(key, value)
    return PlainTextResponse("ok")


app = Starlette(routes=[
    Route("/hello", hello), Route("/whoami", whoami), Route("/db", db), Route("/cache", cache), Route("/pay", pay),
    Route("/spans", spans), Route("/attrs", attrs, methods=["POST"]),
])
