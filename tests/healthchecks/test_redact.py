"""Redaction: known secrets and credential patterns never survive into a detail line."""

from __future__ import annotations

import base64

from pulsetrace.healthchecks.redact import MASK, Redactor, probe_secrets, url_secrets
from tests.healthchecks.support import health_config


def test_known_secret_values_are_masked_wherever_they_appear() -> None:
    r = Redactor(["s3cr3t-pw", "tok_ABC123"])
    out = r.scrub("auth failed for s3cr3t-pw; retry with tok_ABC123 (s3cr3t-pw)")
    assert "s3cr3t-pw" not in out and "tok_ABC123" not in out
    assert out.count(MASK) == 3


def test_url_quoted_and_basic_auth_forms_are_masked() -> None:
    r = Redactor(["p@ss/word", "key:p@ss/word"])
    assert "p%40ss%2Fword" not in r.scrub("postgresql://u:p%40ss%2Fword@h/db")
    b64 = base64.b64encode(b"key:p@ss/word").decode()
    assert b64 not in r.scrub(f"Authorization: Basic {b64}")


def test_generic_credential_patterns_are_masked_without_knowing_the_secret() -> None:
    r = Redactor()
    out = r.scrub("connect postgresql://app:hunter2@db:5432/shop?sslpassword=zzz failed; token=abc123 "
                  "Authorization: Bearer eyJhbGciOi")
    for secret in ("hunter2", "zzz", "abc123", "eyJhbGciOi"):
        assert secret not in out
    assert "postgresql://app:" in out  # the user and host stay readable


def test_short_secrets_are_not_searched_for() -> None:
    assert Redactor(["ab"]).scrub("abcab") == "abcab"


def test_secrets_are_collected_from_every_probe_field() -> None:
    cfg = health_config([
        {"name": "db", "type": "postgres", "dsn": "postgresql://app:pg-pw-1@127.0.0.1/shop"},
        {"name": "gw", "type": "http", "url": "https://gw.test/status?api_key=gw-key-2",
         "headers": {"Authorization": "Bearer gw-token-3"}, "username": "rzp_id", "password": "gw-secret-4"},
        {"name": "rf", "type": "rfid", "source": {"redis_url": "redis://:rd-pw-5@127.0.0.1:6379/0"}},
        {"name": "c", "type": "custom", "target": "x.y:Z", "options": {"api_token": "opt-tok-6", "size": "7"}},
    ], token="health-tok-7")
    r = Redactor.from_config(cfg)
    for secret in ("pg-pw-1", "gw-key-2", "gw-token-3", "gw-secret-4", "rd-pw-5", "opt-tok-6", "health-tok-7"):
        assert secret in r, secret
    assert "7" not in r  # a non-secret option stays


def test_url_secrets_of_a_url_without_credentials_is_empty() -> None:
    assert url_secrets("https://example.test/status") == []
    assert probe_secrets(health_config([{"name": "x", "type": "redis", "url": "redis://127.0.0.1/0"}])
                         .health.probes[0]) == []
