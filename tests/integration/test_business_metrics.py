"""Business metrics from code (``pulsetrace.metric``/``count``, ``business_operation(value=...)``) under
``pulsetrace run`` with two uvicorn workers: EMF to a file, and PutMetricData to moto in server mode.

Known traffic must give exactly its sums and counts however the requests were spread over the
workers; a dimension with 10,000 distinct values must stay within the budget with the overflow
counted; an e-mail address passed as a dimension value must appear in no output at all.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.agent.metrics.test_emf_spec import validate_emf
from tests.integration.service_runner import APPS, ROOT, Service, start_service, wait_for, write_config
from tests.servers import MotoServer

EMAIL = "alice.payer@example.com"

APP = textwrap.dedent('''
    import pulsetrace
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pulsetrace.instrumentation import business_operation, record_outcome


    @business_operation("payment.create", tier="critical", value="amount", value_metric="Revenue")
    async def create_payment(amount: float, method: str, fail: bool) -> bool:
        record_outcome(success=not fail, reason="declined" if fail else None)
        return not fail


    async def pay(request: Request) -> JSONResponse:
        q = request.query_params
        amount = float(q["amount"])
        ok = await create_payment(amount, q["method"], q.get("fail") == "1")
        # the payer's e-mail as a dimension value, by mistake: it must never leave the process
        pulsetrace.metric("PaymentAmount", amount, unit="None", method=q["method"], payer=q["payer"])
        return JSONResponse({"ok": ok}, status_code=201 if ok else 402)


    async def signup(request: Request) -> JSONResponse:
        pulsetrace.count("UserRegistrations", method=request.query_params["method"],
                         contact=request.query_params["contact"])
        return JSONResponse({"ok": True})


    async def burst(request: Request) -> JSONResponse:
        # a dimension fed with request data: 10,000 distinct values in one process
        n = int(request.query_params["n"])
        for i in range(n):
            word = "".join("abcdefghijklmnopqrstuvwxyz"[(i // 26 ** k) % 26] for k in range(3))
            pulsetrace.count("Tagged", tag=f"city-{word}")  # not an id: a name, one of 10,000
        return JSONResponse({"n": n})


    app = Starlette(routes=[Route("/pay", pay, methods=["POST"]), Route("/signup", signup, methods=["POST"]),
                            Route("/burst", burst, methods=["POST"])])
''')

#: 40 payments: amounts 10.25 … (known total), four methods, every tenth one declined.
PAYMENTS = [(10.25 + i * 3.5, ("upi", "card", "netbanking", "wallet")[i % 4], i % 10 == 0) for i in range(40)]
SIGNUPS = {"google": 4, "email": 2, "apple": 1}  # 7 sign-ups by method


def drive(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        for amount, method, fail in PAYMENTS:
            r = http.post("/pay", params={"amount": amount, "method": method, "fail": "1" if fail else "0",
                                          "payer": EMAIL})
            assert r.status_code == (402 if fail else 201), service.output()
        for method, n in SIGNUPS.items():
            for _ in range(n):
                assert http.post("/signup", params={"method": method, "contact": EMAIL}).status_code == 200
        assert http.post("/burst", params={"n": 10_000}).status_code == 200


def emf_docs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stat(docs: list[dict[str, Any]], metric: str, field: str, **dims: str) -> float:
    """``field`` (Sum, Count, Min, Max) of ``metric`` over the documents of exactly Service, Environment + dims."""
    want = {"Service", "Environment", *dims}
    out: list[float] = []
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if (any(set(ds) == want for ds in directive["Dimensions"]) and all(doc.get(k) == v for k, v in dims.items())
                    and any(m["Name"] == metric for m in directive["Metrics"])):
                value = doc[metric]
                out.append(value[field] if isinstance(value, dict) else value)
    if field == "Min":
        return min(out)
    if field == "Max":
        return max(out)
    return sum(out)


def config(tmp_path: Path, cloudwatch: dict[str, Any]) -> Path:
    return write_config(tmp_path / "pulsetrace.yaml", tmp_path / "store", extra={
        "metrics": {"cloudwatch": {"interval": "1s", "max_dimension_values": 50, **cloudwatch}}})


def run_service(tmp_path: Path, cfg: Path, env: dict[str, str] | None = None) -> Service:
    (tmp_path / "bizapp.py").write_text(APP)
    return start_service(tmp_path, cfg, "bizapp:app", workers=2, name="biz",
                         env={"PYTHONPATH": f"{tmp_path}:{APPS}:{ROOT}", **(env or {})})


def test_known_traffic_gives_exact_sums_over_two_workers_in_emf_and_no_email_or_unbounded_dimension(
        tmp_path: Path) -> None:
    emf = tmp_path / "emf.log"
    service = run_service(tmp_path, config(tmp_path, {"mode": "emf", "emf_output": f"file:{emf}"}))
    try:
        drive(service)
        wait_for(lambda: stat(emf_docs(emf), "UserRegistrations", "Sum", method="apple") >= 1
                 and stat(emf_docs(emf), "Tagged", "Sum", tag="other") > 0, timeout=30)
    finally:
        service.stop()
    text = emf.read_text()
    docs = emf_docs(emf)
    for doc in docs:
        assert validate_emf(doc) == [], doc
    taken = [a for a, _, fail in PAYMENTS if not fail]
    declined = [a for a, _, fail in PAYMENTS if fail]
    revenue = {"Operation": "payment.create", "Outcome": "success"}
    assert stat(docs, "Revenue", "Sum", **revenue) == sum(taken)
    assert stat(docs, "Revenue", "Count", **revenue) == len(taken) == 36
    assert stat(docs, "Revenue", "Sum", Operation="payment.create", Outcome="failure") == sum(declined)
    assert stat(docs, "Revenue", "Min", **revenue) == min(taken)
    assert stat(docs, "Revenue", "Max", **revenue) == max(taken)
    for method in ("upi", "card", "netbanking", "wallet"):
        mine = [a for a, m, _ in PAYMENTS if m == method]
        assert stat(docs, "PaymentAmount", "Sum", method=method, payer="redacted") == sum(mine)
        assert stat(docs, "PaymentAmount", "Count", method=method, payer="redacted") == len(mine)
    for method, n in SIGNUPS.items():
        assert stat(docs, "UserRegistrations", "Sum", method=method, contact="redacted") == n
    # 10,000 distinct tags: 50 kept, the rest folded into `other` and every folded call counted
    tags = {doc["tag"] for doc in docs if "tag" in doc}
    assert len(tags) == 51 and "other" in tags
    assert stat(docs, "Tagged", "Sum", tag="other") == 10_000 - 50
    assert stat(docs, "MetricsDimensionOverflow", "Sum", Reason="Tagged") == 10_000 - 50
    assert EMAIL not in text and "example.com" not in text


def test_known_traffic_reaches_cloudwatch_through_put_metric_data(aws_env: dict[str, str], moto_server: MotoServer,
                                                                  tmp_path: Path) -> None:
    namespace = f"PulseTraceBiz/{uuid.uuid4().hex[:8]}"
    # moto can take seconds to parse a body on a busy machine: a call it answered after the client gave
    # up would be sent again and counted twice (CloudWatch has no idempotent put), so a generous timeout
    cfg = config(tmp_path, {"mode": "api", "namespace": namespace, "endpoint_url": moto_server.url,
                            "region": "us-east-1", "timeout": "30s"})
    service = run_service(tmp_path, cfg, env=aws_env)
    cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto_server.url)

    def total(metric: str, statistic: str, **dims: str) -> float:
        now = dt.datetime.now(dt.timezone.utc)
        points = cw.get_metric_statistics(
            Namespace=namespace, MetricName=metric,
            Dimensions=[{"Name": k, "Value": v} for k, v in {"Service": "shop-api", "Environment": "test",
                                                            **dims}.items()],
            StartTime=now - dt.timedelta(minutes=30), EndTime=now + dt.timedelta(minutes=5), Period=3600,
            Statistics=[statistic])["Datapoints"]
        return sum(float(p[statistic]) for p in points)

    try:
        drive(service)
        wait_for(lambda: total("UserRegistrations", "Sum", method="google", contact="redacted") >= 4
                 and total("Revenue", "SampleCount", Operation="payment.create", Outcome="success") >= 36,
                 timeout=40, interval=0.5)
    finally:
        service.stop()
    taken = [a for a, _, fail in PAYMENTS if not fail]
    assert total("Revenue", "Sum", Operation="payment.create", Outcome="success") == sum(taken)
    assert total("Revenue", "SampleCount", Operation="payment.create", Outcome="success") == 36
    for method, n in SIGNUPS.items():
        assert total("UserRegistrations", "Sum", method=method, contact="redacted") == n
    listed = [m for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace) for m in page["Metrics"]]
    values = {d["Value"] for m in listed for d in m["Dimensions"]}
    assert EMAIL not in values and not any("example.com" in v for v in values)
    assert len({d["Value"] for m in listed if m["MetricName"] == "Tagged" for d in m["Dimensions"]
                if d["Name"] == "tag"}) == 51
