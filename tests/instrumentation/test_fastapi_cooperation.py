"""FastAPI's built-in telemetry folded into pulsetrace's server span, in process (a real FastAPI app
driven through httpx's ASGI transport): one server span per request whichever way FastAPI is
configured, named for the route, FastAPI's operation spans as its children; every patch undone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import fastapi.applications
import httpx
import pytest
import starlette.applications
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pulsetrace.instrumentation import framework_starlette
from tests.otel_globals import reset_otel_globals


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    reset_otel_globals()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # FastAPI's own telemetry turns on only with a configured provider
    undos = [framework_starlette.activate(starlette.applications, provider),
             framework_starlette.activate(fastapi.applications, provider)]
    yield exporter
    for undo in reversed(undos):
        undo()
    reset_otel_globals()


def _app(**kwargs: object) -> FastAPI:
    app = FastAPI(**kwargs)  # type: ignore[arg-type]

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    return app


def _get(app: FastAPI, path: str) -> int:
    async def go() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return (await client.get(path)).status_code

    return asyncio.run(go())


def _servers(exporter: InMemorySpanExporter) -> list[object]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]


def test_fastapi_telemetry_names_our_server_span_and_its_operation_spans_are_children(
        traced: InMemorySpanExporter) -> None:
    assert _get(_app(), "/items/7") == 200
    spans = traced.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    server = servers[0]
    assert server.instrumentation_scope.name == "pulsetrace.asgi"
    assert server.name == "GET /items/{item_id}" and server.attributes["http.route"] == "/items/{item_id}"
    others = [s for s in spans if s is not server]
    assert others, "FastAPI's operation spans are expected with operation_spans on"
    assert {s.context.trace_id for s in spans} == {server.context.trace_id}
    assert all(s.parent is not None for s in others)


def test_one_server_span_when_fastapi_telemetry_is_off_or_its_record_cannot_be_built(
        traced: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _get(_app(telemetry={"tracing": False}), "/items/1") == 200
    assert len(_servers(traced)) == 1
    traced.clear()
    monkeypatch.setattr(framework_starlette, "_request_telemetry", lambda *args: None)  # FastAPI changed shape
    assert _get(_app(), "/items/2") == 200
    servers = _servers(traced)
    assert len(servers) == 1 and servers[0].name == "GET /items/{item_id}"  # type: ignore[attr-defined]


def test_the_patches_are_undone() -> None:
    provider = TracerProvider()
    before = (fastapi.applications.FastAPI.__call__, starlette.applications.Starlette.__call__)
    undos = [framework_starlette.activate(starlette.applications, provider),
             framework_starlette.activate(fastapi.applications, provider)]
    assert fastapi.applications.FastAPI.__call__ is not before[0]
    for undo in reversed(undos):
        undo()
    assert (fastapi.applications.FastAPI.__call__, starlette.applications.Starlette.__call__) == before
