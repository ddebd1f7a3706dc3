"""The demo "shop" service: orders, payments, RFID card verification, logins.

A plain Starlette app with no tracing code but the business spans a team would
write; ``pulsetrace run`` instruments the rest (ASGI, httpx, asyncpg, redis).
Configured by environment: ``SHOP_DB_DSN`` and ``SHOP_REDIS_URL`` (each optional:
the routes then skip that dependency), ``SHOP_GATEWAY_URL``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pulsetrace.instrumentation import (
    business_operation,
    business_span,
    record_outcome,
    set_business_attributes,
)

_state: dict[str, Any] = {}


async def _db() -> Any:
    return _state.get("db")


@business_operation("payment.create", tier="critical",
                    attributes=["order_id", "amount", "method", "school_id"], value="amount", value_metric="Revenue")
async def create_payment(order_id: str, amount: float, method: str, school_id: str) -> dict[str, Any]:
    client: httpx.AsyncClient = _state["http"]
    response = await client.post("/v1/charge", json={"order_id": order_id, "amount": amount, "method": method})
    if response.status_code >= 500:
        record_outcome(success=False, reason=f"gateway_{response.status_code}")
        return {"status": "failed", "gateway_status": response.status_code}
    if response.json().get("status") == "declined":
        record_outcome(success=False, reason="card_declined")
        return {"status": "declined"}
    record_outcome(success=True)
    return {"status": "captured", "payment_id": response.json().get("payment_id")}


async def payments(request: Request) -> JSONResponse:
    body = await request.json()
    result = await create_payment(str(body.get("order_id", "")), float(body.get("amount", 0)),
                                  str(body.get("method", "upi")), str(body.get("school_id", "")))
    code = 502 if result["status"] == "failed" else 402 if result["status"] == "declined" else 200
    return JSONResponse(result, status_code=code)


async def orders(request: Request) -> JSONResponse:
    body = await request.json()
    async with business_span("order.create", tier="business", school_id=str(body.get("school_id", "")),
                             order_items=len(body.get("items", []))):
        order_id = f"ord_{random.randrange(10**9):09d}"
        pool = _state.get("db")
        if pool is not None:
            await pool.execute("INSERT INTO orders (id, school_id, total, customer_email) VALUES ($1, $2, $3, $4)",
                               order_id, str(body.get("school_id", "")), float(body.get("total", 0)),
                               str(body.get("email", "")))
        cache = _state.get("redis")
        if cache is not None:
            await cache.set(f"order:{order_id}", "created", ex=300)
        set_business_attributes(order_id=order_id)
        record_outcome(success=True)
    return JSONResponse({"order_id": order_id}, status_code=201)


async def rfid_verify(request: Request) -> JSONResponse:
    body = await request.json()
    card = str(body.get("card_id", ""))
    reader = str(body.get("reader_id", ""))
    async with business_span("rfid.verify", tier="business", school_id=str(body.get("school_id", "")),
                             rfid_reader_id=reader):
        cache = _state.get("redis")
        revoked = False
        if cache is not None:
            revoked = bool(await cache.sismember("rfid:revoked", card))
        pool = _state.get("db")
        if pool is not None and not revoked:
            await pool.fetchval("SELECT count(*) FROM cards WHERE id = $1", card)
        if revoked:
            record_outcome(success=False, reason="card_revoked")
            return JSONResponse({"verified": False, "reason": "card_revoked"}, status_code=403)
        record_outcome(success=True)
    return JSONResponse({"verified": True})


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    with business_span("auth.login", tier="critical", auth_method="password"):
        if body.get("password") == "wrong":
            record_outcome(success=False, reason="bad_credentials")
            return JSONResponse({"ok": False}, status_code=401)
        record_outcome(success=True)
    return JSONResponse({"ok": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def crash(request: Request) -> JSONResponse:
    raise RuntimeError("inventory service returned garbage for order")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    _state["http"] = httpx.AsyncClient(base_url=os.environ.get("SHOP_GATEWAY_URL", "http://127.0.0.1:9"),
                                       timeout=5.0)
    if os.environ.get("SHOP_DB_DSN"):
        import asyncpg

        pool = await asyncpg.create_pool(os.environ["SHOP_DB_DSN"], min_size=1, max_size=4)
        async with pool.acquire() as conn:
            # Every worker runs this at once; CREATE TABLE IF NOT EXISTS is not safe against itself
            # (a duplicate-key error on the catalogue), so the workers take turns.
            await conn.execute("SELECT pg_advisory_lock(74110)")
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, school_id text, "
                                   "total numeric, customer_email text)")
                await conn.execute("CREATE TABLE IF NOT EXISTS cards (id text PRIMARY KEY, student_id text)")
            finally:
                await conn.execute("SELECT pg_advisory_unlock(74110)")
        _state["db"] = pool
    if os.environ.get("SHOP_REDIS_URL"):
        import redis.asyncio as aredis

        _state["redis"] = aredis.Redis.from_url(os.environ["SHOP_REDIS_URL"])
        await _state["redis"].sadd("rfid:revoked", "card-revoked-1")
    try:
        yield
    finally:
        await _state["http"].aclose()
        if "db" in _state:
            await _state["db"].close()
        if "redis" in _state:
            await _state["redis"].aclose()
        _state.clear()


app = Starlette(routes=[
    Route("/orders", orders, methods=["POST"]),
    Route("/payments", payments, methods=["POST"]),
    Route("/rfid/verify", rfid_verify, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/crash", crash, methods=["POST"]),
], lifespan=lifespan)
