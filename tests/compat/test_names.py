"""Names on the map: a Flask app under gunicorn calls two uninstrumented services on one host, different ports.

Asserted from what ``pulsetrace servicemap --json`` draws out of the local store (the same X-Ray
translation the exporters send): the two services are two ``http`` nodes named ``host:port``,
each with its own edge and request count; and the WSGI server span carries ``server.port``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.support import BIN, LoopbackService, RunningApp, get, request_trace, start_app, stop_app
from tests.integration.service_runner import ROOT
from tests.servers import free_port

pytestmark = pytest.mark.timeout(240)

APP = """
import os

import requests
from flask import Flask

app = Flask(__name__)


@app.get("/checkout/<ref>")
def checkout(ref):
    stock = requests.get(os.environ["STOCK_URL"] + "/reserve", timeout=10).json()
    price = requests.get(os.environ["PRICING_URL"] + "/quote", timeout=10).json()
    return {"ref": ref, "stock": stock["ok"], "price": price["ok"]}
"""


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[LoopbackService, LoopbackService]]:
    stock, pricing = LoopbackService(), LoopbackService()
    yield stock, pricing
    stock.close()
    pricing.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory,
         services: tuple[LoopbackService, LoopbackService]) -> Iterator[RunningApp]:
    root = tmp_path_factory.mktemp("names")
    (root / "shop.py").write_text(textwrap.dedent(APP))
    port = free_port()
    stock, pricing = services
    app = start_app(root, "names-shop", [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "shop:app"],
                    port=port, cwd=root, env={"STOCK_URL": stock.url, "PRICING_URL": pricing.url})
    yield app
    stop_app(app)


def servicemap(config: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "servicemap", "--json", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_two_services_on_one_host_are_two_nodes_named_host_port(
        shop: RunningApp, services: tuple[LoopbackService, LoopbackService]) -> None:
    paths = [f"/checkout/c{i}" for i in range(3)]
    for path in paths:
        status, body = get(shop.url + path)
        assert status == 200, (body, shop.output())
    for path in paths:
        request_trace(shop.store, path)  # every request's spans are stored
    graph = servicemap(shop.store.parent / "pulsetrace-names-shop.yaml")
    stock, pricing = services
    stock_node, pricing_node = f"http:127.0.0.1:{stock.port}", f"http:127.0.0.1:{pricing.port}"
    nodes = {n["id"]: n for n in graph["nodes"]}  # type: ignore[attr-defined]
    assert stock_node in nodes and pricing_node in nodes, sorted(nodes)
    assert "http:127.0.0.1" not in nodes
    assert nodes[stock_node]["name"] == f"127.0.0.1:{stock.port}" and nodes[stock_node]["type"] == "http"
    edges = {(e["source"], e["target"]): e["requests"] for e in graph["edges"]}  # type: ignore[attr-defined]
    assert edges[("service:names-shop", stock_node)] == len(paths)
    assert edges[("service:names-shop", pricing_node)] == len(paths)


def test_wsgi_server_spans_carry_server_port(shop: RunningApp) -> None:
    status, _ = get(shop.url + "/checkout/port")
    assert status == 200
    (server,) = [s for s in request_trace(shop.store, "/checkout/port") if s.kind == "server"]
    assert server.attributes["server.port"] == shop.port
    assert server.attributes["server.address"] == "127.0.0.1"


ASGI_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ping(request):
    return PlainTextResponse("pong")


app = Starlette(routes=[Route("/ping", ping)])
"""


def start_up_lines(output: str, service: str) -> tuple[list[str], list[str]]:
    lines = output.splitlines()
    return ([line for line in lines if line.startswith(f"pulsetrace: {service} (pid ")],
            [line for line in lines if line.startswith(f"pulsetrace run: {service}:")])


def test_the_start_up_line_is_one_line_per_role_and_lists_what_is_instrumented(shop: RunningApp) -> None:
    app_lines, supervisor_lines = start_up_lines(shop.output(), "names-shop")
    assert len(app_lines) == 1 and len(supervisor_lines) == 1, shop.output()
    (line,) = app_lines
    assert "traces to local" in line and "logs: trace ids" in line
    waiting = line.split("on first import: ", 1)[1].split(";", 1)[0].split(", ")
    assert {"flask", "requests"} <= set(waiting), line  # activated lazily, when the app imports them
    (health,) = supervisor_lines
    assert "health on http://127.0.0.1:" in health and "behind an ALB set health.listen to 0.0.0.0:" in health


@pytest.mark.parametrize("quiet", [False, True], ids=["spawned-workers", "quiet"])
def test_spawned_workers_do_not_repeat_it_and_pulsetrace_quiet_silences_it(tmp_path: Path, quiet: bool) -> None:
    (tmp_path / "pingapp.py").write_text(textwrap.dedent(ASGI_APP))
    port = free_port()
    app = start_app(tmp_path, "names-ping", [str(BIN / "uvicorn"), "pingapp:app", "--workers", "2",
                                             "--port", str(port)], port=port, cwd=tmp_path,
                    env={"PULSETRACE_QUIET": "1"} if quiet else None)
    try:
        for _ in range(4):
            assert get(app.url + "/ping")[0] == 200
    finally:
        stop_app(app)
    app_lines, supervisor_lines = start_up_lines(app.output(), "names-ping")
    if quiet:
        assert app_lines == supervisor_lines == [], app.output()
    else:
        assert len(app_lines) == 1 and len(supervisor_lines) == 1, app.output()
        assert "starlette" in app_lines[0]
