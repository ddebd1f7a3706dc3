"""Real outages seen through the health service: PostgreSQL stopped, Redis frozen, bad gateways."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulsetrace.healthchecks.handle import HealthHandle, start_in_thread
from tests.healthchecks.support import Answer, Blackhole, Gateway, health_config, make_cert
from tests.servers import PostgresServer, RedisServer


def get(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(fn: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``fn()`` held; raises AssertionError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if fn():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def status(handle: HealthHandle, probe: str) -> str:
    return str(handle.service.details()["probes"][probe]["status"])


def test_postgres_stopped_turns_down_then_up_critical_503_non_critical_200(postgres_own: PostgresServer) -> None:
    interval, timeout, threshold = 0.5, 0.4, 2

    def service(critical: bool) -> HealthHandle:
        return start_in_thread(health_config([{"name": "db", "type": "postgres", "dsn": postgres_own.dsn,
                                               "interval": f"{interval}s", "timeout": f"{timeout}s",
                                               "critical": critical}], failure_threshold=threshold,
                                             success_threshold=threshold))

    critical, relaxed = service(True), service(False)
    try:
        wait_until(lambda: status(critical, "db") == "UP" and status(relaxed, "db") == "UP", 10)
        assert get(critical.port) == (200, {"status": "UP", "stale": False})
        postgres_own.stop()
        took = wait_until(lambda: status(critical, "db") == "DOWN", 10)
        assert took <= (interval * 1.1 + timeout) * threshold + 1.0  # generous: two busy cores
        assert get(critical.port) == (503, {"status": "DOWN", "stale": False})
        wait_until(lambda: status(relaxed, "db") == "DOWN", 5)
        assert get(relaxed.port) == (200, {"status": "DEGRADED", "stale": False})
        detail = critical.service.details()["probes"]["db"]["detail"]
        assert "connect failed" in detail and postgres_own.password not in detail
        postgres_own.start()
        wait_until(lambda: status(critical, "db") == "UP" and status(relaxed, "db") == "UP", 10)
        assert get(critical.port)[0] == 200 and get(relaxed.port) == (200, {"status": "UP", "stale": False})
        events = [(t["from"], t["to"]) for t in critical.service.details()["probes"]["db"]["transitions"]]
        assert events == [("UNKNOWN", "UP"), ("UP", "DOWN"), ("DOWN", "UP")]
    finally:
        critical.stop(1.0)
        relaxed.stop(1.0)


def test_frozen_redis_is_down_at_the_timeout_while_other_probes_keep_their_cadence(
        redis_own: RedisServer, postgres_server: PostgresServer) -> None:
    gw = Gateway()
    handle = start_in_thread(health_config([
        {"name": "cache", "type": "redis", "url": redis_own.url, "interval": "0.4s", "timeout": "0.3s"},
        {"name": "db", "type": "postgres", "dsn": postgres_server.dsn, "interval": "0.3s", "timeout": "0.25s"},
        {"name": "pay", "type": "http", "url": gw.url, "interval": "0.2s", "timeout": "0.15s"},
    ], failure_threshold=2, success_threshold=2))
    probes = handle.service.probes
    try:
        wait_until(lambda: all(status(handle, p) == "UP" for p in ("cache", "db", "pay")), 10)
        redis_own.freeze()
        try:
            db_before, pay_before = probes["db"].runner.checks, probes["pay"].runner.checks
            took = wait_until(lambda: status(handle, "cache") == "DOWN", 5)
            time.sleep(1.0)
            window = took + 1.0
            cache = handle.service.details()["probes"]["cache"]
            db_checks = probes["db"].runner.checks - db_before
            pay_checks = probes["pay"].runner.checks - pay_before
            assert status(handle, "db") == "UP" and status(handle, "pay") == "UP"
        finally:
            redis_own.thaw()
        assert took < 2.5
        assert "timed out" in cache["detail"] or "Timeout" in cache["detail"]
        assert cache["latency_ms"] <= 600  # the check ended at the timeout, not when Redis woke up
        assert db_checks >= 0.6 * window / 0.3 and pay_checks >= 0.6 * window / 0.2  # cadences held
        wait_until(lambda: status(handle, "cache") == "UP", 5)
    finally:
        handle.stop(1.0)
        gw.close()


def test_bad_gateways_each_get_the_right_status(tmp_path: Path) -> None:
    ok, failing, slow = Gateway(), Gateway(), Gateway()
    failing.answer = Answer(status=500)
    slow.answer = Answer(delay=3.0)
    cert, key = make_cert(tmp_path, not_before_days=-30, not_after_days=-1)
    expired = Gateway(tls=(cert, key))
    hole = Blackhole()
    common = {"type": "http", "interval": "1.5s", "timeout": "1s"}
    handle = start_in_thread(health_config([
        {"name": "ok", "url": ok.url, **common},
        {"name": "failing", "url": failing.url, **common},
        {"name": "slow", "url": slow.url, **common},
        {"name": "expired", "url": expired.url, "ca_file": str(cert), **common},
        {"name": "silent", "url": f"http://127.0.0.1:{hole.port}/", **common},
    ]))
    try:
        wait_until(lambda: all(p["last_checked"] for p in handle.service.details()["probes"].values()), 10)
        probes = handle.service.details()["probes"]
        assert probes["ok"]["status"] == "UP"
        assert probes["failing"]["status"] == "DOWN" and probes["failing"]["detail"] == "HTTP 500 (expected 200)"
        assert probes["slow"]["status"] == "DOWN" and "timed out" in probes["slow"]["detail"]
        assert probes["expired"]["status"] == "DOWN" and "certificate has expired" in probes["expired"]["detail"]
        assert probes["silent"]["status"] == "DOWN" and "timed out" in probes["silent"]["detail"]
        for name in ("slow", "silent"):
            assert 900 <= probes[name]["latency_ms"] <= 1600
        assert get(handle.port) == (200, {"status": "DEGRADED", "stale": False})  # none is critical
    finally:
        handle.stop(1.0)
        for g in (ok, failing, slow, expired):
            g.close()
        hole.close()
