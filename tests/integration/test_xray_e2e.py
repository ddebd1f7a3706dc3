"""End to end: a real instrumented shop under ``pulsetrace run`` → X-Ray (moto) → the service graph.

The shop is a Starlette app served by uvicorn, auto-instrumented by the agent, calling
a real PostgreSQL (asyncpg), a real Redis, a payment gateway on loopback that answers
500 when asked to fail, and DynamoDB (moto server). Its spans leave through
``xray-udp`` to a real UDP socket on loopback whose datagrams are relayed into moto's
PutTraceSegments, the way the X-Ray daemon relays them, or through ``xray-api``
straight to moto. Then what X-Ray holds is read back and drawn:
client → shop-api → {payment host, shop@127.0.0.1, the Redis node, DynamoDB}.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from pulsetrace.views.servicemap import build_graph, fetch_xray_documents
from tests.agent.xray.test_xray_corpus import schema_validator
from tests.agent.exporters.test_xray_udp import UdpDaemon
from tests.integration.service_runner import APPS, ROOT, start_service, write_config
from tests.integration.test_xray_transport import ids_in, relay, stored_documents
from tests.servers import MotoServer, PostgresServer, RedisServer, free_port

SHOP_APP = '''
"""The e2e shop: one payment touches PostgreSQL, Redis, the payment gateway and DynamoDB."""
import os
import uuid

import asyncpg
import boto3
import httpx
import redis.asyncio as aredis
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_dynamodb = None


def dynamodb():
    global _dynamodb
    if _dynamodb is None:
        _dynamodb = boto3.client("dynamodb")  # region and endpoint (moto) from the environment
    return _dynamodb


async def pay(request: Request) -> JSONResponse:
    conn = await asyncpg.connect(os.environ["DB_DSN"])
    try:
        amount = await conn.fetchval("SELECT 41 + 1")
    finally:
        await conn.close()
    cache = aredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await cache.incr("shop:payments")
    finally:
        await cache.aclose()
    async with httpx.AsyncClient() as client:
        charge = await client.post(os.environ["GATEWAY_URL"] + "/charge",
                                   params={"fail": request.query_params.get("fail", "0")})
    dynamodb().put_item(TableName="orders", Item={"id": {"S": str(uuid.uuid4())}, "amount": {"N": str(amount)}})
    ok = charge.status_code == 200
    trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    return JSONResponse({"paid": ok, "trace_id": trace_id}, status_code=200 if ok else 502)


app = Starlette(routes=[Route("/payments", pay, methods=["POST"])])
'''

REQUESTS = 6
FAILING = 2


class PaymentGateway:
    """A payment gateway on loopback (not instrumented: a third party): 500 when asked to fail."""

    def __init__(self) -> None:
        self.charges = 0

        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                gateway.charges += 1
                fail = "fail=1" in self.path
                body = json.dumps({"status": "declined" if fail else "captured"}).encode()
                self.send_response(500 if fail else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-gateway", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[PaymentGateway]:
    gw = PaymentGateway()
    yield gw
    gw.close()


@pytest.fixture
def orders_table(aws_env: dict[str, str], moto_server: MotoServer) -> str:
    ddb = boto3.client("dynamodb", endpoint_url=moto_server.url, region_name="us-east-1")
    if "orders" not in ddb.list_tables()["TableNames"]:
        ddb.create_table(TableName="orders", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
    return "orders"


def _run_shop(tmp_path: Path, exporters: list[str], xray: dict[str, str], postgres: PostgresServer,
              redis_server: RedisServer, gateway: PaymentGateway) -> set[str]:
    """Run the shop, make the payments, stop it; the X-Ray trace ids of the requests."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "xray_shop.py").write_text(SHOP_APP)
    cfg = write_config(tmp_path / "shop.yaml", tmp_path / "store", service="shop-api",
                       exporters=exporters, extra={"tracing": {"xray": xray}})
    shop = start_service(tmp_path, cfg, "xray_shop:app", name="shop", env={
        "PYTHONPATH": os.pathsep.join([str(app_dir), str(APPS), str(ROOT)]),
        "DB_DSN": postgres.dsn, "REDIS_URL": redis_server.url, "GATEWAY_URL": gateway.url})
    trace_ids: set[str] = set()
    try:
        for i in range(REQUESTS):
            fail = i < FAILING
            r = httpx.post(shop.url + "/payments", params={"fail": "1" if fail else "0"}, timeout=30)
            assert r.status_code == (502 if fail else 200), shop.output()
            hex_id = r.json()["trace_id"]
            trace_ids.add(f"1-{hex_id[:8]}-{hex_id[8:]}")
    finally:
        code = shop.stop()  # SIGTERM: the agent flushes what it holds before exiting
    # uvicorn re-raises the signal after a graceful shutdown (128 + SIGTERM); the wrapper passes it on
    assert code in (0, 143), shop.output()
    assert gateway.charges == REQUESTS
    return trace_ids


def _assert_the_map(documents: list[dict[str, Any]], redis_port: int, gateway_port: int) -> None:
    validator = schema_validator()
    for doc in documents:
        validator.validate(doc)
    graph = build_graph(documents).to_json()
    nodes = {n["id"]: (n["requests"], n["faults"]) for n in graph["nodes"]}
    edges = {(e["source"], e["target"]): (e["requests"], e["errors"], e["faults"]) for e in graph["edges"]}
    redis_node = f"cache:redis@127.0.0.1:{redis_port}"
    gateway_node = f"http:127.0.0.1:{gateway_port}"  # an uninstrumented HTTP dependency: host:port
    assert set(nodes) == {"client", "service:shop-api", gateway_node, "database:shop@127.0.0.1", redis_node,
                          "aws:DynamoDB"}, graph
    assert edges == {
        ("client", "service:shop-api"): (REQUESTS, 0, FAILING),
        ("service:shop-api", gateway_node): (REQUESTS, 0, FAILING),
        ("service:shop-api", "database:shop@127.0.0.1"): (REQUESTS, 0, 0),
        ("service:shop-api", redis_node): (REQUESTS, 0, 0),
        ("service:shop-api", "aws:DynamoDB"): (REQUESTS, 0, 0),
    }, graph
    assert nodes[gateway_node] == (REQUESTS, FAILING)
    assert nodes["service:shop-api"] == (REQUESTS, FAILING)


def test_xray_udp_through_a_relayed_daemon_port_draws_the_shop_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str], moto_server: MotoServer,
        orders_table: str, postgres_server: PostgresServer, redis_server: RedisServer,
        gateway: PaymentGateway) -> None:
    monkeypatch.delenv("AWS_XRAY_DAEMON_ADDRESS", raising=False)
    daemon = UdpDaemon()
    try:
        expected = _run_shop(tmp_path, ["xray-udp"], {"daemon_address": daemon.address}, postgres_server, redis_server,
                  gateway)
        received = daemon.settle()  # the service has exited: everything it sent is on its way
        client = boto3.client("xray", endpoint_url=moto_server.url, region_name="us-east-1")
        relay(daemon.datagrams, client)
    finally:
        daemon.close()
    trace_ids = {d["trace_id"] for d in received}
    assert trace_ids == expected
    stored = stored_documents(client, sorted(trace_ids))
    assert sorted(ids_in(stored)) == sorted(ids_in(received))  # BatchGetTraces returns every document
    _assert_the_map(stored, redis_server.port, gateway.server.server_address[1])


def test_xray_api_straight_to_put_trace_segments_draws_the_shop_map(
        tmp_path: Path, aws_env: dict[str, str], moto_server: MotoServer, orders_table: str,
        postgres_server: PostgresServer, redis_server: RedisServer, gateway: PaymentGateway) -> None:
    started = time.time() - 1
    expected = _run_shop(tmp_path, ["xray-api"], {"region": "us-east-1"}, postgres_server, redis_server, gateway)
    client = boto3.client("xray", endpoint_url=moto_server.url, region_name="us-east-1")
    # What `pulsetrace servicemap --source xray` does: summaries for the window, then the documents.
    # (moto's store is shared by the session: keep this test's traces.)
    found = [json.loads(d) for d in fetch_xray_documents(client, started, time.time() + 1)]
    documents = [d for d in found if d["trace_id"] in expected]
    assert {d["trace_id"] for d in documents} == expected
    assert sorted(ids_in(documents)) == sorted(ids_in(stored_documents(client, sorted(expected))))
    _assert_the_map(documents, redis_server.port, gateway.server.server_address[1])
