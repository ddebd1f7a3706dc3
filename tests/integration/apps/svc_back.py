"""Test app: the downstream service."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def inner(request: Request) -> PlainTextResponse:
    return PlainTextResponse("inner")


app = Starlette(routes=[Route("/inner", inner)])
