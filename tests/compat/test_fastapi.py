"""A FastAPI app (current release, its built-in telemetry left on) under ``pulsetrace run``: uvicorn
``--workers 2`` and hypercorn; asyncpg, redis.asyncio, httpx, aiohttp and boto3 S3 on moto. One trace
per request: FastAPI's own telemetry folds into pulsetrace's server span instead of starting a second
trace. Plus the same app under ``opentelemetry-instrument`` with pulsetrace's distro."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.support import (
    BIN, EXIT_DEADLINE_S, LoopbackService, RunningApp, check_one_trace, children_of_kind, exception_events, get,
    request_trace, start_app, stop_app,
)
from tests.servers import AWS_TEST_ENV, MotoServer, PostgresServer, RedisServer, free_port

pytestmark = pytest.mark.timeout(240)

APP = """
import os

import aiohttp
import asyncpg
import boto3
import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException

app = FastAPI()
state = {}


@app.on_event("startup")
async def startup():
    state["pool"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=2)
    state["cache"] = aioredis.from_url(os.environ["REDIS_URL"])
    state["s3"] = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    try:
        state["s3"].create_bucket(Bucket="receipts")
    except Exception:
        pass


@app.get("/carts/{cart_id}")
async def cart(cart_id: str):
    async with state["pool"].acquire() as conn:
        total = await conn.fetchval("SELECT $1::int + 1", len(cart_id))
    await state["cache"].set(f"cart:{cart_id}", total)
    async with httpx.AsyncClient() as client:
        stock = (await client.get(f"{os.environ['DOWNSTREAM_URL']}/stock/{cart_id}")).json()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{os.environ['DOWNSTREAM_URL']}/price/{cart_id}") as resp:
            price = await resp.json()
    state["s3"].put_object(Bucket="receipts", Key=f"{cart_id}.json", Body=b"{}")
    return {"cart": cart_id, "total": total, "stock": stock["ok"], "price": price["ok"]}


@app.get("/explode")
async def explode():
    raise ZeroDivisionError("tax rate missing")


@app.get("/missing/{item}")
async def missing(item: str):
    raise HTTPException(status_code=404, detail="no such item")
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer,
            moto_server: MotoServer) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("fastapi")
    (root / "shopapi.py").write_text(textwrap.dedent(APP))
    downstream = LoopbackService()
    env = {"DATABASE_URL": postgres_server.dsn, "REDIS_URL": redis_server.url, "DOWNSTREAM_URL": downstream.url,
           **AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_server.url}
    yield root, env
    downstream.close()


SERVERS = {
    "uvicorn-workers": lambda port: [str(BIN / "uvicorn"), "shopapi:app", "--workers", "2", "--host", "127.0.0.1",
                                     "--port", str(port), "--log-level", "warning"],
    "gunicorn-uvicorn-preload": lambda port: [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
                                              "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "shopapi:app"],
    "hypercorn": lambda port: [str(BIN / "hypercorn"), "shopapi:app", "--bind", f"127.0.0.1:{port}"],
    "granian": lambda port: [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2", "shopapi:app"],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def app(request: pytest.FixtureRequest, project: tuple[Path, dict[str, str]],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningApp]]:
    root, env = project
    port = free_port()
    running = start_app(tmp_path_factory.mktemp(request.param), f"fastapi-{request.param}",
                        SERVERS[request.param](port), port=port, cwd=root, env=env)
    yield request.param, running
    stop_app(running)


def _check_cart_trace(running: RunningApp, path: str) -> None:
    status, body = get(running.url + path)
    assert status == 200, (body, running.output())
    spans = request_trace(running.store, path)
    root = check_one_trace(spans, name="GET /carts/{cart_id}", route="/carts/{cart_id}")
    assert root.attributes["http.response.status_code"] == 200
    assert "sampling.tier" in root.attributes  # pulsetrace's span, not FastAPI's own
    clients = children_of_kind(spans, "client")
    systems = {s.attributes.get("db.system", s.attributes.get("db.system.name")) for s in clients}
    assert {"postgresql", "redis"} <= systems, [s.name for s in clients]
    http = [s for s in clients if s.attributes.get("http.request.method", s.attributes.get("http.method"))
            and s.attributes.get("rpc.system") != "aws-api"]
    assert len(http) >= 2, [s.name for s in clients]  # httpx and aiohttp
    assert [s for s in clients if s.attributes.get("rpc.system") == "aws-api"
            and s.attributes.get("rpc.service") == "S3"], [(s.name, s.attributes) for s in clients]


def test_a_request_is_one_trace_with_every_client_as_a_child(app: tuple[str, RunningApp]) -> None:
    server, running = app
    for i in range(3):
        _check_cart_trace(running, f"/carts/c-{server}-{i}")


def test_an_unhandled_exception_is_recorded_on_the_server_span(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/explode")
    assert status == 500
    root = check_one_trace(request_trace(running.store, "/explode"), name="GET /explode", route="/explode")
    assert root.status == "error"
    assert [e["attributes"]["exception.type"] for e in exception_events(root)] == ["ZeroDivisionError"]


def test_an_http_exception_keeps_its_status_and_route(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/missing/thing")
    assert status == 404
    root = check_one_trace(request_trace(running.store, "/missing/thing"), name="GET /missing/{item}",
                           route="/missing/{item}")
    assert root.attributes["http.response.status_code"] == 404 and not exception_events(root)


def test_zz_the_server_exits_cleanly_soon_after_sigterm(app: tuple[str, RunningApp]) -> None:
    _, running = app
    took = stop_app(running)
    assert took <= EXIT_DEADLINE_S, f"took {took:.2f} s\n{running.output()}"


def test_under_opentelemetry_instrument_botocore_is_traced_and_nothing_is_warned(
        project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = project
    port = free_port()
    command = [str(BIN / "uvicorn"), "shopapi:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    running = start_app(tmp_path, "fastapi-otel-instrument", command, port=port, cwd=root,
                        env={**env, "OTEL_PYTHON_DISTRO": "pulsetrace", "OTEL_PYTHON_CONFIGURATOR": "pulsetrace"},
                        wrapper=[str(BIN / "opentelemetry-instrument")])
    try:
        _check_cart_trace(running, "/carts/under-otel-instrument")
    finally:
        stop_app(running)
    output = running.output()
    assert "not activated" not in output and "partially initialized" not in output, output
    assert "Traceback" not in output, output
