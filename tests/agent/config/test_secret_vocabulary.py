"""One secret vocabulary: the config masker, the health-detail redaction and the span scrubber agree.

Each row is a key (or a URL) with a secret value. The three places that decide what is a
secret must all hide the value, and all keep a plainly harmless one. A word known to one of
them and not to another is exactly how ``db.pwd`` and ``request.signature`` once leaked.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from pulsetrace.validation import config_from_mapping
from pulsetrace.config.secrets import is_secret_key, mask_text, mask_url, masked_dict
from pulsetrace.healthchecks.redact import Redactor
from pulsetrace.instrumentation.pii import PiiScrubber

VALUE = "Zq7-secret-value-91"

SECRET_KEYS = [
    "password", "db.password", "DB_PASSWD", "db.pwd", "pwd", "pass", "user.pass", "passphrase",
    "secret", "client_secret", "token", "access_token", "x-auth-token", "auth", "x-auth",
    "api_key", "api-key", "apikey", "x-api-key", "access_key", "x-access-key", "aws.secret_access_key",
    "private_key", "credential", "credentials", "authorization", "Proxy-Authorization", "cookie", "set-cookie",
    "signature", "request.signature", "x-signature", "sig", "session", "session_id",
]
PLAIN_KEYS = ["author", "bypass", "passenger", "http.route", "order.id", "payment.method", "region", "keyboard",
              "compass", "signal"]


def _span(attributes: dict[str, object]) -> ReadableSpan:
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("op", attributes=attributes)  # type: ignore[arg-type]
    span.end()
    return span  # type: ignore[return-value]


def _config_masks(key: str) -> bool:
    cfg = config_from_mapping({"health": {"probes": [
        {"name": "c", "type": "custom", "target": "tests.healthchecks.probes_for_tests:AlwaysUp", "options": {key: VALUE}},
    ]}}, {})
    return VALUE not in repr(masked_dict(cfg))


def _health_masks(key: str) -> bool:
    r = Redactor()
    return all(VALUE not in r.scrub(text) for text in (f"{key}={VALUE}", f'{{"{key}": "{VALUE}"}}', f"{key}: {VALUE}"))


def _span_masks(key: str) -> bool:
    out = PiiScrubber()(_span({key: VALUE, "note": f"{key}={VALUE}"}))
    return VALUE not in repr(dict(out.attributes or {}))


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_secret_key_is_hidden_by_all_three(key: str) -> None:
    assert is_secret_key(key)
    assert _config_masks(key), "config masker"
    assert _health_masks(key), "health redaction"
    assert _span_masks(key), "span scrubber"


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys_are_kept_by_all_three(key: str) -> None:
    assert not is_secret_key(key)
    assert not _config_masks(key)
    assert not _span_masks(key)


@pytest.mark.parametrize("url", [
    f"postgresql://app:{VALUE}@db:5432/shop",
    f"https://pay.test/status?token={VALUE}",
    f"https://pay.test/cb?state=1&code={VALUE}",
    f"https://h.test/x?sig={VALUE}&a=1",
    f"https://h.test/x?X-Amz-Signature={VALUE}",
    f"redis://:{VALUE}@cache:6379/0",
    f":{VALUE}@cache:6379/0",
    f"app:{VALUE}@db:5432/shop",
    f"host=db user=app password={VALUE} dbname=shop",
    f"host=db user=app password='{VALUE} x' dbname=shop",
    f"state=1&code={VALUE}",
])
def test_secret_parts_of_urls_and_dsns_are_hidden_by_all_three(url: str) -> None:
    assert VALUE not in mask_text(url)
    if "://" in url:
        assert VALUE not in mask_url(url)
    assert VALUE not in Redactor().scrub(f"connect {url} failed")
    out = PiiScrubber()(_span({"url.full": url}))
    assert VALUE not in repr(dict(out.attributes or {}))


def test_an_exception_class_name_is_not_a_secret_key() -> None:
    text = 'InvalidPasswordError: password authentication failed for user "app"'
    assert Redactor().scrub(text) == text
    out = PiiScrubber()(_span({"exception.message": text}))
    assert dict(out.attributes or {})["exception.message"] == text
    assert VALUE not in Redactor().scrub(f"db_password: {VALUE}")
