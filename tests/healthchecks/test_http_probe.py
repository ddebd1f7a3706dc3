"""HTTP probe and the razorpay preset against real loopback gateways (plain, TLS, silent)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.http_probe import HttpProbe
from pulsetrace.healthchecks.razorpay import RazorpayProbe
from pulsetrace.healthchecks.redact import Redactor, probe_secrets
from tests.healthchecks.support import Answer, Blackhole, Gateway, make_cert, probe_cfg, probe_context


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    gw.close()


async def check(url: str, **fields: Any) -> Any:
    fields.setdefault("timeout", "1s")
    cfg = probe_cfg(type="http", url=url, **fields)
    probe = (RazorpayProbe if cfg.preset else HttpProbe)(cfg, probe_context(redactor=Redactor(probe_secrets(cfg))))
    try:
        return await probe.check()
    finally:
        await probe.aclose()


async def test_expected_status_is_up(gateway: Gateway) -> None:
    result = await check(gateway.url + "/status")
    assert result.status is Status.UP and result.measurements["status_code"] == 200


async def test_server_error_is_down(gateway: Gateway) -> None:
    gateway.answer = Answer(status=500, body=b"boom")
    result = await check(gateway.url + "/status")
    assert result.status is Status.DOWN and result.detail == "HTTP 500 (expected 200)"


async def test_slow_answer_over_the_latency_threshold_is_degraded(gateway: Gateway) -> None:
    gateway.answer = Answer(delay=0.3)
    result = await check(gateway.url, thresholds={"latency_ms": 100})
    assert result.status is Status.DEGRADED and "slow response" in result.detail


async def test_gateway_answering_after_3s_is_down_at_the_timeout(gateway: Gateway) -> None:
    gateway.answer = Answer(delay=3.0)
    started = time.monotonic()
    result = await check(gateway.url, timeout="1s")
    assert result.status is Status.DOWN and "timed out" in result.detail
    assert time.monotonic() - started < 2.5


async def test_connection_accepted_but_never_answered_is_down_at_the_timeout() -> None:
    hole = Blackhole()
    try:
        started = time.monotonic()
        result = await check(f"http://127.0.0.1:{hole.port}/status", timeout="0.5s")
        took = time.monotonic() - started
    finally:
        hole.close()
    assert result.status is Status.DOWN and "timed out" in result.detail
    assert 0.4 < took < 2.0


async def test_json_condition_on_the_body(gateway: Gateway) -> None:
    gateway.json({"status": {"indicator": "none"}, "queue": 3})
    assert (await check(gateway.url, json_condition='/status/indicator == "none" and queue < 10')).status is Status.UP
    gateway.json({"status": {"indicator": "major"}})
    result = await check(gateway.url, json_condition='/status/indicator == "none"')
    assert result.status is Status.DOWN and "json_condition not met" in result.detail
    gateway.answer = Answer(body=b"<html>")
    assert "not JSON" in (await check(gateway.url, json_condition="ok")).detail


async def test_headers_are_sent_and_never_shown(gateway: Gateway) -> None:
    gateway.answer = Answer(status=401, body=b'{"error": "bad token Bearer gw-T0ken-99"}')
    result = await check(gateway.url, headers={"Authorization": "Bearer gw-T0ken-99"})
    assert gateway.requests[-1]["headers"]["Authorization"] == "Bearer gw-T0ken-99"
    assert result.status is Status.DOWN and "gw-T0ken-99" not in result.detail


def tls_gateway(tmp_path: Path, before: float, after: float) -> tuple[Gateway, Path]:
    cert, key = make_cert(tmp_path / f"c{before}{after}", not_before_days=before, not_after_days=after)
    return Gateway(tls=(cert, key)), cert


async def test_valid_certificate_is_up_with_days_left(tmp_path: Path) -> None:
    gw, cert = tls_gateway(tmp_path, -1, 90)
    try:
        result = await check(gw.url, ca_file=str(cert))
    finally:
        gw.close()
    assert result.status is Status.UP, result.detail
    assert 89 < float(result.measurements["cert_days_left"]) < 90.1


async def test_certificate_near_expiry_is_degraded(tmp_path: Path) -> None:
    gw, cert = tls_gateway(tmp_path, -30, 5)
    try:
        result = await check(gw.url, ca_file=str(cert), cert_expiry_days=14)
    finally:
        gw.close()
    assert result.status is Status.DEGRADED and "expires in 5.0 days" in result.detail


async def test_expired_self_signed_certificate_is_down(tmp_path: Path) -> None:
    gw, cert = tls_gateway(tmp_path, -60, -2)
    try:
        verified = await check(gw.url, ca_file=str(cert))
        unverified = await check(gw.url, verify_tls=False)
    finally:
        gw.close()
    assert verified.status is Status.DOWN and "certificate has expired" in verified.detail
    assert unverified.status is Status.DOWN and "expired 2.0 days ago" in unverified.detail


async def test_untrusted_certificate_is_down(tmp_path: Path) -> None:
    gw, _ = tls_gateway(tmp_path, -1, 90)
    try:
        result = await check(gw.url)
    finally:
        gw.close()
    assert result.status is Status.DOWN and "TLS certificate rejected" in result.detail


# -- razorpay preset -----------------------------------------------------------------------------------


def downtime(method: str, severity: str, status: str = "started", **extra: Any) -> dict[str, Any]:
    return {"id": f"down_{method}{severity}", "entity": "payment.downtime", "method": method,
            "begin": time.time() - 600, "end": None, "status": status, "scheduled": False, "severity": severity,
            "instrument": {"bank": "HDFC"}, **extra}


async def razorpay(gw: Gateway, **fields: Any) -> Any:
    return await check(gw.url, preset="razorpay", username="rzp_test_key", password="rzp-Secr3t-42", **fields)


async def test_razorpay_sends_basic_auth_to_the_downtime_api(gateway: Gateway) -> None:
    gateway.json({"entity": "collection", "count": 0, "items": []})
    result = await razorpay(gateway)
    assert result.status is Status.UP and result.detail == "no active downtime"
    req = gateway.requests[-1]
    assert req["path"] == "/v1/payments/downtimes"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"rzp_test_key:rzp-Secr3t-42").decode()


async def test_razorpay_high_severity_is_down_and_names_the_method(gateway: Gateway) -> None:
    gateway.json({"items": [downtime("upi", "high"), downtime("card", "medium")]})
    result = await razorpay(gateway)
    assert result.status is Status.DOWN
    assert "upi high" in result.detail and "card medium" in result.detail
    assert result.measurements["downtime_methods"] == ["card", "upi"]


async def test_razorpay_medium_or_low_is_degraded_and_resolved_or_future_ones_are_ignored(gateway: Gateway) -> None:
    gateway.json({"items": [downtime("netbanking", "low"), downtime("card", "high", status="resolved"),
                            downtime("upi", "high", status="scheduled"),
                            downtime("wallet", "high", begin=time.time() + 3600)]})
    result = await razorpay(gateway)
    assert result.status is Status.DEGRADED and result.measurements["downtimes_active"] == 1


async def test_razorpay_methods_option_limits_what_counts(gateway: Gateway) -> None:
    gateway.json({"items": [downtime("emi", "high")]})
    assert (await razorpay(gateway, options={"methods": ["card", "upi"]})).status is Status.UP


async def test_razorpay_refused_credentials_are_down_without_showing_them(gateway: Gateway) -> None:
    gateway.answer = Answer(status=401, body=b'{"error": "key rzp_test_key secret rzp-Secr3t-42 invalid"}')
    result = await razorpay(gateway)
    assert result.status is Status.DOWN and "refused the credentials" in result.detail
    assert "rzp-Secr3t-42" not in result.detail


async def test_razorpay_credentials_from_the_environment(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAZORPAY_KEY_ID", "env_key")
    monkeypatch.setenv("RAZORPAY_KEY_SECRET", "env-Secr3t")
    gateway.json({"items": []})
    assert (await check(gateway.url, preset="razorpay")).status is Status.UP
    assert gateway.requests[-1]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"env_key:env-Secr3t").decode()
