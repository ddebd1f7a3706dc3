"""Two real services over loopback: B follows A's sampling decision, in W3C and in X-Ray headers.

Three uvicorn processes, each running the agent (tiered sampler, local store) and
the ASGI middleware: front A samples 50 % of its traffic; back B0 would keep
nothing on its own (every tier 0 %) and back B1 everything (every tier 100 %).
A calls both for each request, propagating its context in one header format
only. If B made its own decision, B0 would miss A's sampled traces and B1 would
store traces A dropped: half traces. Both must match A exactly.

The services are this module's ``service_app`` (chosen by ``PT_ROLE``), started by
uvicorn in subprocesses; nothing runs at import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_runner import Service, all_spans, start_service, wait_for, write_config

TIERS = ("critical", "business", "general", "health")


def _sampling(rate: float) -> dict[str, Any]:
    return {"tiers": {t: {"rate": rate, "reservoir": 0} for t in TIERS}, "keep_errors": False, "slow_ms": 0}


# --- the services (run in the subprocesses) -----------------------------------------------------


def _build_service() -> Any:
    from opentelemetry import trace
    from opentelemetry.propagators.aws import AwsXRayPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pulsetrace import runtime
    from pulsetrace.instrumentation.asgi import PulseTraceMiddleware

    runtime.start(os.environ["PT_CONFIG"], instrument=False)
    propagators = {"w3c": TraceContextTextMapPropagator(), "xray": AwsXRayPropagator()}

    def here() -> dict[str, Any]:
        ctx = trace.get_current_span().get_span_context()
        return {"trace_id": f"{ctx.trace_id:032x}", "sampled": ctx.trace_flags.sampled}

    async def call(request: Request) -> JSONResponse:
        headers: dict[str, str] = {}
        propagators[request.query_params["format"]].inject(headers)
        down = []
        async with httpx.AsyncClient(timeout=10) as client:
            for url in os.environ["PT_DOWNSTREAM"].split(","):
                down.append((await client.get(url + "/work", headers=headers)).json())
        return JSONResponse({**here(), "headers": sorted(headers), "down": down})

    async def work(request: Request) -> JSONResponse:
        return JSONResponse(here())

    routes = [Route("/call", call)] if os.environ["PT_ROLE"] == "front" else [Route("/work", work)]
    return PulseTraceMiddleware(Starlette(routes=routes))


class _LazyService:
    """Builds the service (and starts the agent) on uvicorn's first call, not at import."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = _build_service()
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self._app(scope, receive, send)


service_app = _LazyService()


# --- the test ---------------------------------------------------------------------------------------


APP = "tests.integration.test_propagation_follow:service_app"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Service, Path]]]:
    tmp = tmp_path_factory.mktemp("propagation")
    started: dict[str, tuple[Service, Path]] = {}
    try:
        for name, rate in (("b0", 0.0), ("b1", 1.0)):
            store = tmp / f"store-{name}"
            cfg = write_config(tmp / f"{name}.yaml", store, service=f"back-{name}", sampling=_sampling(rate))
            svc = start_service(tmp, cfg, APP, wrapper=[], name=name,
                                env={"PT_CONFIG": str(cfg), "PT_ROLE": "back"})
            started[name] = (svc, store)
        store = tmp / "store-a"
        cfg = write_config(tmp / "a.yaml", store, service="front", sampling=_sampling(0.5))
        svc = start_service(tmp, cfg, APP, wrapper=[], name="a", env={
            "PT_CONFIG": str(cfg), "PT_ROLE": "front",
            "PT_DOWNSTREAM": ",".join(started[n][0].url for n in ("b0", "b1"))})
        started["a"] = (svc, store)
        yield started
    finally:
        for svc, _ in started.values():
            svc.stop()


def _stored_traces(store: Path, service: str) -> set[str]:
    return {s.trace_id for s in all_spans(store) if s.service == service and s.kind == "server"}


@pytest.mark.parametrize(("fmt", "header"), [("w3c", "traceparent"), ("xray", "X-Amzn-Trace-Id")])
def test_downstream_follows_the_upstream_decision_for_every_request(
        services: dict[str, tuple[Service, Path]], fmt: str, header: str) -> None:
    front, store_a = services["a"]
    results = []
    with httpx.Client(timeout=20) as client:
        for _ in range(40):
            r = client.get(front.url + "/call", params={"format": fmt})
            assert r.status_code == 200, front.output()
            results.append(r.json())
    assert all(res["headers"] == [header] for res in results)  # one format at a time
    for res in results:
        b0, b1 = res["down"]
        assert b0["trace_id"] == b1["trace_id"] == res["trace_id"]
        assert b0["sampled"] == b1["sampled"] == res["sampled"], res
    sampled = {res["trace_id"] for res in results if res["sampled"]}
    dropped = {res["trace_id"] for res in results if not res["sampled"]}
    assert sampled and dropped  # A's 50 % really sampled some and dropped some

    # The stores agree: every trace A kept is complete downstream, and nothing A dropped is anywhere.
    mine = sampled | dropped

    def b1_has_all() -> bool:
        return sampled <= _stored_traces(services["b1"][1], "back-b1")

    assert wait_for(b1_has_all), "back-b1 did not store every trace front sampled"
    wait_for(lambda: sampled <= _stored_traces(store_a, "front"))
    stored = {name: _stored_traces(store, svc) & mine for name, store, svc in
              (("a", store_a, "front"), ("b0", services["b0"][1], "back-b0"), ("b1", services["b1"][1], "back-b1"))}
    assert stored["a"] == sampled
    assert stored["b0"] == sampled
    assert stored["b1"] == sampled
