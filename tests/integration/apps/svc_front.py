"""Test app: a front service calling a downstream HTTP service, PostgreSQL and Redis (env-configured)."""

from __future__ import annotations

import os

import asyncpg
import httpx
import redis.asyncio as aredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def work(request: Request) -> JSONResponse:
    async with httpx.AsyncClient() as client:
        down = await client.get(os.environ["DOWNSTREAM_URL"] + "/inner")
    conn = await asyncpg.connect(os.environ["DB_DSN"])
    try:
        value = await conn.fetchval("SELECT 41 + 1")
    finally:
        await conn.close()
    cache = aredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await cache.set("front:last", "1")
        cached = await cache.get("front:last")
    finally:
        await cache.aclose()
    return JSONResponse({"downstream": down.status_code, "db": value, "cache": cached.decode()})


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def slow(request: Request) -> PlainTextResponse:
    import asyncio

    await asyncio.sleep(float(request.query_params.get("s", "0.3")))
    return PlainTextResponse("slow")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


app = Starlette(routes=[Route("/work", work), Route("/hello", hello), Route("/slow", slow), Route("/boom", boom)])
