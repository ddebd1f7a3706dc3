"""Keep-errors end to end: a real uvicorn service, the agent with every tier at 0 %, the local store.

A request that raises is stored with all its local spans marked ``kept_by=error``,
a slow one with ``kept_by=slow``, and a fast good one not at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pulsetrace import runtime
from pulsetrace.validation import config_from_mapping
from pulsetrace.store import LocalStore, StoredSpan
from pulsetrace.instrumentation import business_span
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
from tests.servers import free_port, wait_port


class ThreadedUvicorn:
    """A real uvicorn server on loopback, in a thread of the test process (so the agent is in process)."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedUvicorn:
        self.thread.start()
        wait_port(self.port)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def boom(request: Request) -> PlainTextResponse:
    with business_span("order.create", order_id="o-1"):
        with trace.get_tracer("app").start_as_current_span("db.query"):
            pass
        raise RuntimeError("payment gateway said no")


async def slow(request: Request) -> PlainTextResponse:
    with trace.get_tracer("app").start_as_current_span("wait"):
        await asyncio.sleep(0.35)
    return PlainTextResponse("slow")


async def ok(request: Request) -> PlainTextResponse:
    with business_span("order.view", order_id="o-2"):
        pass
    return PlainTextResponse("ok")


TRACED = PulseTraceMiddleware(Starlette(routes=[Route("/boom", boom), Route("/slow", slow), Route("/ok", ok)]))


async def APP(scope: dict[str, object], receive: object, send: object) -> None:  # noqa: N802 - an ASGI app
    """The traced app; the exception re-raised after Starlette's 500 stops here, so that uvicorn
    does not close the connection under the client (which makes the client see a reset, not the 500)."""
    try:
        await TRACED(scope, receive, send)  # type: ignore[arg-type]
    except RuntimeError:
        pass


@pytest.fixture
def service(tmp_path: Path, clean_agent: None) -> Iterator[tuple[ThreadedUvicorn, Path]]:
    store = tmp_path / "store"
    cfg = config_from_mapping({
        "service": {"name": "shop-api"},
        "store": {"path": str(store)},
        "tracing": {"exporters": ["local"], "export_interval": 0.05, "sampling": {
            "tiers": {t: {"rate": 0.0, "reservoir": 0} for t in ("critical", "business", "general", "health")},
            "keep_errors": True, "slow_ms": 200}},
    }, env={})
    runtime.start(config=cfg, instrument=False)
    with ThreadedUvicorn(APP) as server:
        yield server, store


def stored_by_path(store: Path) -> dict[str, list[StoredSpan]]:
    running = runtime.current()
    assert running is not None and running.pipeline.force_flush(5000)
    s = LocalStore(store, create=False)
    try:
        spans = s.spans_since(0)
    finally:
        s.close()
    roots = {sp.trace_id: sp.attributes.get("url.path") for sp in spans if sp.kind == "server"}
    out: dict[str, list[StoredSpan]] = {}
    for sp in spans:
        out.setdefault(str(roots.get(sp.trace_id)), []).append(sp)
    return out


def test_raising_request_is_stored_whole_with_kept_by_error_slow_with_slow_and_fast_good_not(
        service: tuple[ThreadedUvicorn, Path]) -> None:
    server, store = service
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/slow").status_code == 200
        assert client.get("/ok").status_code == 200
    by_path = stored_by_path(store)
    assert set(by_path) == {"/boom", "/slow"}
    failed = by_path["/boom"]
    assert sorted(s.name for s in failed) == ["GET /boom", "db.query", "order.create"]
    assert {s.attributes["sampling.kept_by"] for s in failed} == {"error"}
    assert len({s.trace_id for s in failed}) == 1
    business = next(s for s in failed if s.name == "order.create")
    assert business.status == "error" and business.attributes["business.outcome"] == "failure"
    root = next(s for s in failed if s.kind == "server")
    assert root.attributes["sampling.tier"] == "general"
    slow_spans = by_path["/slow"]
    assert sorted(s.name for s in slow_spans) == ["GET /slow", "wait"]
    assert {s.attributes["sampling.kept_by"] for s in slow_spans} == {"slow"}
