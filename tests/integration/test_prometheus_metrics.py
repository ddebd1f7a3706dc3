"""``/metrics`` has the service's own series: requests, errors, faults and latency per operation, business
metrics and the health score, under ``pulsetrace run`` with two uvicorn workers behind one health server.

The text is parsed with ``prometheus_client``'s text-format parser (the reference implementation of the
format); every value must equal the traffic sent, however it was spread over the workers.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service_runner import APPS, ROOT, start_service, wait_for, write_config
from tests.servers import RedisServer, free_port

EMAIL = "carol.signup@example.com"

APP = textwrap.dedent('''
    import pulsetrace
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pulsetrace.instrumentation import business_operation, record_outcome


    @business_operation("payment.create", tier="critical", value="amount", value_metric="Revenue")
    async def create_payment(amount: float, fail: bool) -> bool:
        record_outcome(success=not fail)
        return not fail


    async def pay(request: Request) -> JSONResponse:
        q = request.query_params
        if q.get("crash") == "1":
            return JSONResponse({"error": "gateway exploded"}, status_code=500)
        ok = await create_payment(float(q["amount"]), q.get("fail") == "1")
        return JSONResponse({"ok": ok}, status_code=201 if ok else 402)


    async def signup(request: Request) -> JSONResponse:
        pulsetrace.count("UserRegistrations", method=request.query_params["method"],
                         contact=request.query_params["contact"])
        return JSONResponse({"ok": True})


    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["user_id"]})


    app = Starlette(routes=[Route("/payments", pay, methods=["POST"]), Route("/signup", signup, methods=["POST"]),
                            Route("/users/{user_id}", user)])
''')

AMOUNTS = [100.0 + 7.25 * i for i in range(30)]  # 30 payments, every tenth declined
SIGNUPS = {"google": 4, "email": 2, "apple": 1}


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over the series of ``family`` whose labels include ``labels``."""
    return sum(s.value for s in fams[family].samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.parametrize("mode", ["emf", "off"], ids=["with-cloudwatch", "prometheus-only"])
def test_metrics_endpoint_counts_the_traffic_of_every_worker(tmp_path: Path, redis_server: RedisServer,
                                                             mode: str) -> None:
    health_port = free_port()
    (tmp_path / "promapp.py").write_text(APP)
    config = write_config(tmp_path / "pulsetrace.yaml", tmp_path / "store", health_port=health_port, extra={
        "health": {"probes": [{"name": "cache", "type": "redis", "url": redis_server.url, "interval": "1s",
                               "timeout": "1s", "critical": True, "sla": 99.5}]},
        "metrics": {"cloudwatch": {"mode": mode, "emf_output": f"file:{tmp_path / 'emf.log'}", "interval": "60s"}},
    })
    service = start_service(tmp_path, config, "promapp:app", workers=2, name="prom",
                            env={"PYTHONPATH": f"{tmp_path}:{APPS}:{ROOT}"})
    metrics_url = f"http://127.0.0.1:{health_port}/metrics"
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            for i, amount in enumerate(AMOUNTS):
                r = http.post("/payments", params={"amount": amount, "fail": "1" if i % 10 == 0 else "0"})
                assert r.status_code == (402 if i % 10 == 0 else 201), service.output()
            for _ in range(2):
                assert http.post("/payments", params={"crash": "1"}).status_code == 500
            for i in range(12):
                assert http.get(f"/users/u{1000 + i}").status_code == 200
            for method, n in SIGNUPS.items():
                for _ in range(n):
                    assert http.post("/signup", params={"method": method, "contact": EMAIL}).status_code == 200

        def scraped() -> dict[str, Any] | None:
            text = httpx.get(metrics_url, timeout=10).text
            fams = families(text)
            done = ("pulsetrace_requests" in fams
                    and value(fams, "pulsetrace_requests", "pulsetrace_requests_total", operation="POST /payments") == 32
                    and "pulsetrace_business_user_registrations" in fams
                    and value(fams, "pulsetrace_health_score", "pulsetrace_health_score") == 100)
            return {"text": text, "fams": fams} if done else None

        got = wait_for(scraped, timeout=40, interval=0.5)
        assert got, httpx.get(metrics_url, timeout=10).text
    finally:
        service.stop()
    fams, text = got["fams"], got["text"]
    pay = {"operation": "POST /payments"}
    assert value(fams, "pulsetrace_requests", "pulsetrace_requests_total", **pay) == 32
    assert value(fams, "pulsetrace_errors", "pulsetrace_errors_total", **pay) == 3  # the 402s
    assert value(fams, "pulsetrace_faults", "pulsetrace_faults_total", **pay) == 2  # the 500s
    assert value(fams, "pulsetrace_requests", "pulsetrace_requests_total", operation="payment.create",
                 tier="critical") == 30
    assert value(fams, "pulsetrace_requests", "pulsetrace_requests_total", operation="GET /users/{user_id}") == 12
    assert fams["pulsetrace_latency_seconds"].type == "histogram"
    assert value(fams, "pulsetrace_latency_seconds", "pulsetrace_latency_seconds_count", **pay) == 32
    buckets = [(float(s.labels["le"]), s.value) for s in fams["pulsetrace_latency_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["operation"] == "POST /payments"]
    counts = [c for _, c in sorted(buckets)]
    assert counts == sorted(counts) and counts[-1] == 32  # cumulative, +Inf holds them all
    revenue = fams["pulsetrace_business_revenue"]
    assert revenue.type == "summary"
    taken = [a for i, a in enumerate(AMOUNTS) if i % 10]
    assert value(fams, "pulsetrace_business_revenue", "pulsetrace_business_revenue_sum",
                 Operation="payment.create", Outcome="success") == sum(taken)
    assert value(fams, "pulsetrace_business_revenue", "pulsetrace_business_revenue_count",
                 Outcome="success") == len(taken)
    for method, n in SIGNUPS.items():
        assert value(fams, "pulsetrace_business_user_registrations", "pulsetrace_business_user_registrations_total",
                     method=method, contact="redacted") == n
    assert EMAIL not in text and "example.com" not in text
    assert "u1000" not in text  # ids never become label values
    assert (tmp_path / "emf.log").exists() == (mode == "emf")  # prometheus-only: nothing for CloudWatch
