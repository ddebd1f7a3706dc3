"""The demo payment gateway: charges succeed, are declined, fail with 500 or are slow, by chance.

``DEMO_GATEWAY_FAIL_RATE`` (default 0.05) sets the share of 500s: the bank authorisation
(a business operation) raises, so the failing trace carries the exception and its stack
trace, the way a real gateway's would. It also serves ``/status`` for the health probe and
a Razorpay-style downtime list.
"""

from __future__ import annotations

import asyncio
import os
import random

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pulsetrace.instrumentation import business_operation

_FAIL = float(os.environ.get("DEMO_GATEWAY_FAIL_RATE", "0.05"))


class UpstreamBankTimeout(Exception):
    """The acquiring bank did not answer in time."""


@business_operation("bank.authorize", tier="critical", attributes=["method"])
async def authorize(method: str, roll: float) -> None:
    await asyncio.sleep(random.uniform(0.002, 0.015))
    if roll < _FAIL:
        raise UpstreamBankTimeout(f"acquirer did not answer within 3 retries (method {method})")


async def charge(request: Request) -> JSONResponse:
    body = await request.json()
    roll = random.random()
    try:
        await authorize(str(body.get("method", "")), roll)
    except UpstreamBankTimeout:
        return JSONResponse({"error": "upstream bank timeout"}, status_code=500)
    if roll < _FAIL + 0.03:
        return JSONResponse({"status": "declined"})
    if roll > 0.98:
        await asyncio.sleep(0.25)
    return JSONResponse({"status": "captured", "payment_id": f"pay_{random.randrange(10**9):09d}",
                         "amount": body.get("amount")})


async def status(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def downtimes(request: Request) -> JSONResponse:
    return JSONResponse({"entity": "collection", "count": 0, "items": []})


app = Starlette(routes=[
    Route("/v1/charge", charge, methods=["POST"]),
    Route("/status", status, methods=["GET"]),
    Route("/v1/payments/downtimes", downtimes, methods=["GET"]),
])
