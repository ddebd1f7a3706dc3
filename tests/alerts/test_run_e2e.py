"""Under ``pulsetrace run``: a business failure-rate alert from real requests (a payments route failing 10 %), and
a probe alert sent once by the supervisor, not by each worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.alerts.receivers import Receiver
from tests.alerts.support import channels_for
from tests.integration.service_runner import ALL_SAMPLED, start_service, write_config
from tests.servers import RedisServer


def post(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_route_failing_ten_percent_of_payments_raises_one_business_alert(tmp_path: Path,
                                                                             receivers: dict[str, Receiver]) -> None:
    config = write_config(tmp_path / "pulsetrace.yaml", tmp_path / "store", sampling=ALL_SAMPLED, extra={
        "alerts": {"channels": channels_for(receivers),
                   "routes": [{"severity": ["business"], "channels": ["hook", "ops"]}],
                   "group_wait": "1s", "evaluate_interval": "0.5s", "failure_window": "5m",
                   "failure_rates": {"payment.create": 5}, "failure_min_samples": 50}})
    svc = start_service(tmp_path, config, "tests.alerts.apps.payments:app")
    try:
        codes = [post(f"{svc.url}/payments") for _ in range(200)]
        assert codes.count(402) == 20 and codes.count(201) == 180
        hook = receivers["hook"].wait_for(1, timeout=60)
        ops = receivers["ops"].wait_for(1, timeout=30)
    finally:
        svc.stop()
    alert = hook[0]
    assert (alert["key"], alert["severity"], alert["status"]) == ("operation:payment.create", "business", "firing")
    assert 8.0 <= alert["value"] <= 12.0 and alert["threshold"] == 5
    assert alert["details"]["operation"] == "payment.create"
    assert ops[0]["attachments"][0]["color"] == "#36a64f"
    assert len(receivers["hook"].requests) == 1  # one alert, not one per failed payment
    assert not receivers["team"].requests and not receivers["oncall"].requests
    assert all(r.errors == [] for r in receivers.values())
    assert json.dumps(alert).count("payment.create") >= 2


def test_under_pulsetrace_run_the_supervisor_alone_sends_a_probe_alert(tmp_path: Path, receivers: dict[str, Receiver],
                                                                       redis_own: RedisServer) -> None:
    config = write_config(tmp_path / "pulsetrace.yaml", tmp_path / "store", sampling=ALL_SAMPLED, extra={
        "health": {"failure_threshold": 2, "success_threshold": 2, "probes": [
            {"name": "cache", "type": "redis", "url": redis_own.url, "interval": "0.5s", "timeout": "0.3s"}]},
        "alerts": {"channels": channels_for(receivers), "routes": [{"channels": ["hook"]}], "group_wait": "1s"}})
    svc = start_service(tmp_path, config, "tests.alerts.apps.payments:app", workers=2)
    try:
        redis_own.freeze()
        try:
            hook = receivers["hook"].wait_for(1, timeout=40)
        finally:
            redis_own.thaw()
        hook = receivers["hook"].wait_for(2, timeout=40)
        time.sleep(2)
    finally:
        svc.stop()
    # one message each way, from the supervisor: not one per uvicorn worker
    assert [(b["key"], b["status"], b["severity"]) for b in receivers["hook"].bodies()] == [
        ("probe:cache", "firing", "warning"), ("probe:cache", "resolved", "warning")]
    assert hook[0]["service"] == "shop-api"
