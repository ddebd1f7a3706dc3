"""Dependencies failing during traffic: PostgreSQL killed and restarted, Redis frozen, the gateway hanging.

One service under ``pulsetrace run`` with three probes (``db`` critical, ``cache`` and
``payments`` not), every probe at a 0.5 s interval, 0.4 s timeout and thresholds of 2,
serves four routes for the whole test (one client thread on ``/hello``, three on the others): ``/hello`` needs
nothing, ``/db``, ``/cache`` and ``/pay`` each need one dependency (and answer 503
quickly when it is down, as a careful service does). The faults come one after another:

1. PostgreSQL stopped in ``immediate`` mode (the postmaster quits its backends at
   once, as a crash does; SIGKILL would leave a cluster that cannot restart cleanly),
   then started again;
2. Redis frozen with SIGSTOP (connections open, nothing answered), then thawed;
3. the payment gateway hanging: every request held 30 s (in production the
   promise is about a 30 s hang; here the hang lasts ``HANG_S`` = 4 s, enough for
   the probe's timeouts to reach their threshold twice over), then answering again.

Promised and asserted: ``/hello`` answers 200 throughout and no route ever answers
500; each probe turns DOWN within ``failure_threshold × (interval × (1 + jitter) +
timeout)`` plus 1 s of scheduling slack on two busy cores, and UP again within the
same bound after the dependency returns; ``/health`` is 503 while the critical
probe is DOWN and 200 DEGRADED while only a non-critical one is; every probe keeps
running afterwards (its ``last_checked`` moves on), the span pipeline still exports
(spans of the last requests reach the store), and no thread of the supervisor or
the worker has died (their thread counts are what they were before the faults).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.healthchecks.support import Answer, Gateway
from tests.integration.service_runner import all_spans, wait_for, write_config
from tests.reliability.support import agent_tracebacks, start_rel_service, stop_tree, thread_count, traffic, worker_pids
from tests.servers import PostgresServer, RedisServer, free_port, wait_port

INTERVAL, TIMEOUT, THRESHOLD, JITTER = 0.5, 0.4, 2, 0.1
BOUND_S = THRESHOLD * (INTERVAL * (1 + JITTER) + TIMEOUT) + 1.0
HANG_S = 4.0


def _health(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _probe(port: int, name: str) -> dict[str, Any]:
    probe: dict[str, Any] = _health(port, "/health/details")[1]["probes"][name]
    return probe


def _until_status(port: int, name: str, status: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _probe(port, name)["status"] == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{name} not {status} within {timeout:.1f}s: {_probe(port, name)}")


def test_dependencies_failing_during_traffic(tmp_path: Path, postgres_own: PostgresServer, redis_own: RedisServer
                                             ) -> None:
    gateway = Gateway()
    health_port = free_port()
    common = {"interval": f"{INTERVAL}s", "timeout": f"{TIMEOUT}s", "jitter": JITTER}
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, health_port=health_port, extra={"health": {
        "failure_threshold": THRESHOLD, "success_threshold": THRESHOLD,
        "probes": [{"name": "db", "type": "postgres", "dsn": postgres_own.dsn, "critical": True, **common},
                   {"name": "cache", "type": "redis", "url": redis_own.url, **common},
                   {"name": "payments", "type": "http", "url": gateway.url + "/status", **common}]}})
    svc = start_rel_service(tmp_path, cfg, env={"DB_DSN": postgres_own.dsn, "REDIS_URL": redis_own.url,
                                                "PAY_URL": gateway.url + "/pay"})
    try:
        wait_port(health_port, 20)
        for name in ("db", "cache", "payments"):
            _until_status(health_port, name, "UP", 15)
        worker = worker_pids(svc)[0]
        with traffic(svc.url, ["/hello"], threads=1) as plain, \
                traffic(svc.url, ["/db", "/cache", "/pay"], threads=3) as load:
            time.sleep(1.0)
            threads_before = {svc.proc.pid: thread_count(svc.proc.pid), worker: thread_count(worker)}
            assert _health(health_port) == (200, {"status": "UP", "stale": False})

            # 1. PostgreSQL dies, and comes back
            t0 = time.monotonic()
            postgres_own.stop("immediate")
            assert _until_status(health_port, "db", "DOWN", BOUND_S + 5) <= BOUND_S
            assert _health(health_port)[0] == 503  # critical probe down: the ALB takes us out
            time.sleep(1.0)
            assert 503 in load.since(t0, "/db"), "the /db route never noticed the outage"
            postgres_own.start()
            t1 = time.monotonic()
            assert _until_status(health_port, "db", "UP", BOUND_S + 5) <= BOUND_S
            assert wait_for(lambda: 200 in load.since(t1 + 0.5, "/db"), timeout=10), "/db never recovered"

            # 2. Redis frozen, then thawed
            t2 = time.monotonic()
            redis_own.freeze()
            try:
                assert _until_status(health_port, "cache", "DOWN", BOUND_S + 5) <= BOUND_S
                assert _health(health_port) == (200, {"status": "DEGRADED", "stale": False})
                time.sleep(1.0)
            finally:
                redis_own.thaw()
            assert 503 in load.since(t2, "/cache")
            t3 = time.monotonic()
            assert _until_status(health_port, "cache", "UP", BOUND_S + 5) <= BOUND_S
            assert wait_for(lambda: 200 in load.since(t3 + 0.5, "/cache"), timeout=10), "/cache never recovered"

            # 3. the payment gateway hangs, then answers again
            t4 = time.monotonic()
            gateway.answer = Answer(delay=30.0)
            try:
                assert _until_status(health_port, "payments", "DOWN", BOUND_S + 5) <= BOUND_S
                assert _health(health_port)[0] == 200
                time.sleep(max(0.0, HANG_S - (time.monotonic() - t4)))
            finally:
                gateway.answer = Answer()
            assert 503 in load.since(t4, "/pay")
            t5 = time.monotonic()
            assert _until_status(health_port, "payments", "UP", BOUND_S + 5) <= BOUND_S
            assert wait_for(lambda: 200 in load.since(t5 + 1.5, "/pay"), timeout=10), "/pay never recovered"
            assert _health(health_port) == (200, {"status": "UP", "stale": False})

        hello = plain.since(0)
        # /hello kept answering and only with 200s; not a request count, which a busy machine may not reach
        assert len(hello) >= 10 and set(hello) == {200}, f"/hello answered {sorted(set(hello))}"
        every = {s for (_t, _p, s) in load.outcomes + plain.outcomes}
        assert 500 not in every and every <= {200, 503}, every

        # every probe still runs, the exporter still exports, no thread died
        checked = {n: _probe(health_port, n)["last_checked"] for n in ("db", "cache", "payments")}
        time.sleep(INTERVAL * 3)
        for name, before in checked.items():
            assert _probe(health_port, name)["last_checked"] > before, f"probe {name} stopped running"
        marker = uuid.uuid4().hex[:12]
        for _ in range(5):
            assert httpx.get(f"{svc.url}/hello?m={marker}", timeout=10).status_code == 200
        assert wait_for(lambda: len([s for s in all_spans(store) if marker in str(s.attributes.get("url.query"))])
                        == 5, timeout=15), "spans stopped reaching the store"
        threads_after = {pid: thread_count(pid) for pid in threads_before}
        assert threads_after == threads_before
        assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())
    finally:
        stop_tree(svc)
        gateway.close()
