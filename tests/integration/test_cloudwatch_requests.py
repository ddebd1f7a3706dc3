"""Request metrics from real traffic: ``pulsetrace run -- uvicorn`` with every tier sampled at 0.

A real uvicorn service (auto-instrumented by the wrapper: the ASGI middleware and the
business API feed the recorder) sends EMF over TCP to a listener standing in for the
CloudWatch agent. The documents must be valid EMF, count every request although no
trace is sampled, and carry no id in any dimension, whatever ids are in the paths and
in the business attributes.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.metrics.test_emf_outputs import TcpCollector, totals
from tests.agent.metrics.test_emf_spec import validate_emf
from tests.integration.service_runner import APPS, ROOT, all_spans, start_service, wait_for, write_config

NONE_SAMPLED = {"tiers": {t: {"rate": 0.0, "reservoir": 0} for t in ("critical", "business", "general", "health")},
                "keep_errors": False}

APP = textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pulsetrace.instrumentation import business_operation, record_outcome


    @business_operation("payment.create", tier="critical")
    async def create_payment(user_id: str, school_id: str, amount: float, fail: bool) -> bool:
        from pulsetrace.instrumentation import set_business_attributes
        set_business_attributes(user_id=user_id, school_id=school_id, payment_amount=amount)
        record_outcome(success=not fail, reason="declined" if fail else None)
        return not fail


    async def payments(request: Request) -> JSONResponse:
        q = request.query_params
        ok = await create_payment(q["user"], q["school"], 12.5, q.get("fail") == "1")
        return JSONResponse({"ok": ok}, status_code=201 if ok else 402)


    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["user_id"]})


    app = Starlette(routes=[Route("/payments", payments, methods=["POST"]),
                            Route("/users/{user_id}", user)])
''')


@pytest.fixture
def collector() -> Iterator[TcpCollector]:
    c = TcpCollector()
    yield c
    c.stop()


def dimension_values(docs: list[dict[str, Any]]) -> set[str]:
    out = set()
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dset in directive["Dimensions"]:
                out.update(str(doc[k]) for k in dset)
    return out


def test_every_request_is_counted_unsampled_and_no_dimension_carries_an_id(
        tmp_path: Path, collector: TcpCollector) -> None:
    (tmp_path / "cwapp.py").write_text(APP)
    store = tmp_path / "store"
    config = write_config(tmp_path / "pulsetrace.yaml", store, sampling=NONE_SAMPLED, extra={
        "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"tcp://127.0.0.1:{collector.port}",
                                   "interval": "1s"}},
        "tracing": {"pii": {"hash_keys": ["user.id"], "hash_secret": "k3y"}},
    })
    service = start_service(tmp_path, config, "cwapp:app", name="cw", env={
        "PYTHONPATH": f"{tmp_path}:{APPS}:{ROOT}"})
    users = [f"u-{n:06d}" for n in range(300)]
    schools = [f"school-{n}" for n in range(7)]
    try:
        with httpx.Client(base_url=service.url, timeout=20) as http:
            for i in range(300):
                r = http.post("/payments", params={"user": users[i], "school": schools[i % 7],
                                                   "fail": "1" if i % 10 == 0 else "0"})
                assert r.status_code == (402 if i % 10 == 0 else 201), service.output()
            for i in range(40):
                assert http.get(f"/users/{users[i]}").status_code == 200
            for i in range(20):
                assert http.get(f"/orders/{9000 + i}/items").status_code == 404

        def counted() -> list[dict[str, Any]] | None:
            docs = collector.docs()
            return docs if totals(docs, "Requests", Operation="POST /payments") >= 300 else None

        wait_for(counted, timeout=20)
    finally:
        service.stop()
    docs = collector.docs()
    assert docs, service.output()
    for doc in docs:
        assert validate_emf(doc) == [], doc
    assert all_spans(store) == []  # not one trace was sampled ...
    assert totals(docs, "Requests", Operation="POST /payments") == 300  # ... and every request is counted
    assert totals(docs, "Errors", Operation="POST /payments") == 30  # the 402s
    assert totals(docs, "Faults", Operation="POST /payments") == 0
    assert totals(docs, "Requests", Operation="payment.create") == 300
    assert totals(docs, "Errors", Operation="payment.create") == 30  # failed outcomes
    assert totals(docs, "Requests", Operation="GET /users/{user_id}") == 40
    # 404s that matched no route fold into one bucket (bot scans must not eat the operation budget)
    assert totals(docs, "Requests", Operation="GET {unmatched}") == 20
    assert totals(docs, "Errors", Operation="GET {unmatched}") == 20
    assert totals(docs, "Requests", Tier="critical") == 600  # /payments* by rule, payment.create as declared
    assert totals(docs, "Latency", Operation="POST /payments") == 300

    operations = {doc["Operation"] for doc in docs if "Operation" in doc}
    assert operations == {"POST /payments", "payment.create", "GET /users/{user_id}", "GET {unmatched}"}
    assert {doc["Tier"] for doc in docs if "Tier" in doc} <= {"critical", "business", "general", "health"}
    for v in dimension_values(docs):  # self-metrics' Reason/Exporter values included
        assert not any(u in v for u in users) and not any(s in v for s in schools), v
        assert not re.search(r"[0-9a-f]{12,}", v), v  # no hashed PII key either
        assert not re.search(r"\d{3,}", v), v
