"""Test app: a payments route that fails one request in ten (the gateway declines), as a business operation."""

from __future__ import annotations

import itertools

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pulsetrace import business_operation, record_outcome

_counter = itertools.count(1)


@business_operation("payment.create", tier="critical")
async def create_payment(n: int) -> bool:
    ok = n % 10 != 0
    record_outcome(success=ok, reason=None if ok else "gateway_declined")
    return ok


async def payments(request: Request) -> JSONResponse:
    ok = await create_payment(next(_counter))
    return JSONResponse({"ok": ok}, status_code=201 if ok else 402)


app = Starlette(routes=[Route("/payments", payments, methods=["POST"])])
