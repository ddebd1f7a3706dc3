"""The service of the end-to-end benchmark: one realistic order route, the same code for every configuration.

``POST /orders`` parses a JSON body, then inside one business span ``order.create``
runs a query on PostgreSQL through an asyncpg pool, a Redis ``SET`` and ``GET``,
and calls the loopback inventory service through a shared ``httpx.AsyncClient``,
and answers JSON. ``GET /bench/info`` tells the benchmark what this process runs.

Served by ``uvicorn --factory benchmarks.e2e_app:create_app``; the configuration
comes from the environment:

- ``BENCH_MODE``: ``none`` (uninstrumented; the business span is a no-op),
  ``otel`` (under ``opentelemetry-instrument``: the app is wrapped in the upstream
  ``OpenTelemetryMiddleware`` with its defaults, as the upstream docs tell users to,
  since there is no ASGI auto-instrumentor; the business span is a plain OTel span),
  ``otel-lean`` (the same with the per-message send/receive spans excluded),
  ``xray`` (aws-xray-sdk: :class:`benchmarks.xray_asgi.XRayASGIMiddleware`, the
  async recorder, ``patch_all()``, every request sampled, UDP to
  ``BENCH_XRAY_DAEMON``; the business span is an X-Ray subsegment) and
  ``pulsetrace`` (under ``pulsetrace run``: nothing in the app; the business span is
  ``pulsetrace.instrumentation.business_span`` when that API exists, else a plain OTel span).
- ``BENCH_DB_DSN``, ``BENCH_REDIS_URL``, ``BENCH_DOWNSTREAM_URL``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BusinessSpan = Callable[[str, dict[str, Any]], AbstractContextManager[Any]]


@contextlib.contextmanager
def _noop_span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    yield None


def _otel_span(name: str, attributes: dict[str, Any]) -> AbstractContextManager[Any]:
    from opentelemetry import trace

    return trace.get_tracer("shop.orders").start_as_current_span(name, attributes=attributes)


def _pulsetrace_business_span() -> tuple[BusinessSpan, str]:
    try:
        from pulsetrace.instrumentation import business_span
    except ImportError:
        return _otel_span, "plain OpenTelemetry span (pulsetrace.instrumentation.business_span not available)"

    def span(name: str, attributes: dict[str, Any]) -> AbstractContextManager[Any]:
        return business_span(name, tier="business", **attributes)

    return span, "pulsetrace.instrumentation.business_span"


def _xray_span(recorder: Any) -> BusinessSpan:
    @contextlib.contextmanager
    def span(name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        with recorder.in_subsegment(name) as sub:
            for key, value in attributes.items():
                sub.put_annotation(key.replace(".", "_"), value)
            yield sub

    return span


def create_app() -> Any:
    mode = os.environ.get("BENCH_MODE", "none")
    state: dict[str, Any] = {}
    ids = itertools.count(1)
    business: BusinessSpan = _noop_span
    business_kind = "no-op"
    recorder: Any = None

    if mode in ("otel", "otel-lean"):
        business, business_kind = _otel_span, "plain OpenTelemetry span"
    elif mode == "pulsetrace":
        business, business_kind = _pulsetrace_business_span()
    elif mode == "xray":
        from aws_xray_sdk.core import patch_all, xray_recorder

        recorder = xray_recorder
        business, business_kind = _xray_span(recorder), "X-Ray subsegment"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if recorder is not None:
            from aws_xray_sdk.core.async_context import AsyncContext

            recorder.configure(service="shop-api", sampling=False, context=AsyncContext(),
                               daemon_address=os.environ["BENCH_XRAY_DAEMON"], context_missing="LOG_ERROR",
                               plugins=())
            patch_all()  # before the clients are made: it replaces httpx.AsyncClient
        # The libraries' default pool sizes: what a service gets unless someone tunes them.
        state["pool"] = await asyncpg.create_pool(os.environ["BENCH_DB_DSN"])
        state["cache"] = aredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        state["http"] = httpx.AsyncClient(base_url=os.environ["BENCH_DOWNSTREAM_URL"], timeout=10.0)
        try:
            yield
        finally:
            await state["http"].aclose()
            await state["cache"].aclose()
            await state["pool"].close()

    async def create_order(request: Request) -> JSONResponse:
        payload = await request.json()
        order_id = next(ids)
        item = str(payload.get("item", "book"))
        amount = float(payload.get("amount", 0))
        with business("order.create", {"order.id": order_id, "order.amount": amount,
                                       "payment.method": str(payload.get("method", "card"))}):
            async with state["pool"].acquire() as conn:
                row = await conn.fetchrow("SELECT $1::bigint AS id, $2::numeric(10,2) AS amount, now() AS at",
                                          order_id, amount)
            key = f"order:{order_id % 1000}"
            await state["cache"].set(key, item, ex=300)
            cached = await state["cache"].get(key)
            stock = await state["http"].get("/stock", params={"item": item})
        return JSONResponse({"order": row["id"], "amount": float(row["amount"]), "cached": cached.decode(),
                             "stock": stock.json()["in_stock"]}, status_code=201)

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"mode": mode, "business_span": business_kind, "pid": os.getpid()})

    app: Any = Starlette(routes=[Route("/orders", create_order, methods=["POST"]), Route("/bench/info", info)],
                         lifespan=lifespan)
    if mode == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app)
    elif mode == "otel-lean":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])
    elif mode == "xray":
        from benchmarks.xray_asgi import XRayASGIMiddleware

        app = XRayASGIMiddleware(app, recorder)
    return app
