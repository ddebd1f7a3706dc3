"""No alarm watches a metric that never arrives: the rendered alarms against the EMF documents of a real run.

``pulsetrace run -- uvicorn`` with real PostgreSQL and Redis probes and every alarm key set writes EMF to a
file (the app workers their request and business metrics, the supervisor its health metrics). Every alarm
on the agent's own namespace (metric alarms and each metric of a metric-math alarm) must name a metric,
a namespace and exactly the dimension set and values of a series found in those documents, with a
statistic the series supports (a percentile needs a distribution: ``Values``/``Counts``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import httpx

from pulsetrace.metrics.render import build_plan
from pulsetrace.validation import load_config
from tests.integration.service_runner import APPS, ROOT, start_service, wait_for, write_config
from tests.servers import PostgresServer, RedisServer

APP = textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pulsetrace.instrumentation import business_operation


    @business_operation("payment.create", tier="critical", value="amount", value_metric="Revenue")
    async def create_payment(amount: float) -> None:
        return None


    async def pay(request: Request) -> JSONResponse:
        await create_payment(float(request.query_params.get("amount", "10")))
        return JSONResponse({"ok": True}, status_code=201)


    app = Starlette(routes=[Route("/payments", pay, methods=["POST"])])
''')


def series(docs: list[dict[str, Any]]) -> dict[tuple[str, str, frozenset[tuple[str, str]]], bool]:
    """(namespace, metric, dimension items) → whether it came as a distribution."""
    out: dict[tuple[str, str, frozenset[tuple[str, str]]], bool] = {}
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dset in directive["Dimensions"]:
                dims = frozenset((k, str(doc[k])) for k in dset)
                for m in directive["Metrics"]:
                    value = doc[m["Name"]]
                    key = (directive["Namespace"], m["Name"], dims)
                    out[key] = out.get(key, False) or (isinstance(value, dict) and "Values" in value)
    return out


def watched(plan: Any) -> list[tuple[str, str, str, frozenset[tuple[str, str]], str]]:
    """(alarm, namespace, metric, dimension items, statistic) of every metric every alarm reads."""
    out = []
    for alarm in plan.metric_alarms:
        p = alarm.params
        if "MetricName" in p:
            out.append((alarm.name, p["Namespace"], p["MetricName"],
                        frozenset((d["Name"], d["Value"]) for d in p["Dimensions"]),
                        p.get("Statistic") or p["ExtendedStatistic"]))
        for q in p.get("Metrics", []):
            if "MetricStat" in q:
                m = q["MetricStat"]["Metric"]
                out.append((alarm.name, m["Namespace"], m["MetricName"],
                            frozenset((d["Name"], d["Value"]) for d in m["Dimensions"]), q["MetricStat"]["Stat"]))
    return out


def test_every_alarm_on_the_agent_namespace_matches_a_series_of_a_real_run(
        tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer) -> None:
    emf = tmp_path / "emf.log"
    (tmp_path / "alarmapp.py").write_text(APP)
    config = write_config(tmp_path / "pulsetrace.yaml", tmp_path / "store", extra={
        "health": {"probes": [
            {"name": "db", "type": "postgres", "dsn": postgres_server.dsn, "interval": "1s", "timeout": "1s", "critical": True,
             "sla": 99.9},
            {"name": "payments-cache", "type": "redis", "url": redis_server.url, "interval": "1s", "timeout": "1s", "sla": 99.5},
        ]},
        "metrics": {"cloudwatch": {
            "mode": "emf", "emf_output": f"file:{emf}", "interval": "1s", "namespace": "Shop/AlarmCheck",
            "failure_alarms": {"payment.create": 5, "POST /payments": 5},
            "latency_alarms": {"POST /payments": 1000, "payment.create": 500}, "latency_percentile": "p99",
            "error_count_alarms": {"payment.create": 10}, "fault_rate_alarm": 5, "fault_count_alarm": 50,
            "health_score_alarm": 85, "runbook_url": "https://runbooks.example.test/{alarm}",
            "areas": {"payment": ["payment.create", "payments-cache"]}},
            "aws_resources": {"rds": {"instance": "shop-db"}}},
    })
    service = start_service(tmp_path, config, "alarmapp:app", name="alarms",
                            env={"PYTHONPATH": f"{tmp_path}:{APPS}:{ROOT}"})
    plan = build_plan(load_config(str(config)))
    reads = [r for r in watched(plan) if r[1] == "Shop/AlarmCheck"]

    def docs() -> list[dict[str, Any]]:
        return [json.loads(x) for x in emf.read_text().splitlines() if x.strip()] if emf.exists() else []

    def missing() -> list[Any]:
        found = series(docs())
        return [r for r in reads if (r[1], r[2], r[3]) not in found]

    try:
        with httpx.Client(base_url=service.url, timeout=20) as http:
            for i in range(30):
                assert http.post("/payments", params={"amount": 10 + i}).status_code == 201

        wait_for(lambda: not missing(), timeout=40, interval=0.5)
    finally:
        service.stop()
    assert len(reads) >= 20 and {r[2] for r in reads} >= {
        "Requests", "Errors", "Faults", "Latency", "HealthStatus", "HealthScore", "Availability", "BurnRate",
        "ProbeUp"}
    assert missing() == []
    found = series(docs())
    for alarm, ns, metric, dims, stat in reads:
        if stat.startswith("p"):  # a percentile is only computed from a distribution
            assert found[(ns, metric, dims)], (alarm, metric)
    # the resource alarm reads AWS's namespace, never the agent's
    assert all(r[1] == "AWS/RDS" for r in watched(plan) if "rds" in r[0])
