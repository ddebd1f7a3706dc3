"""PII end to end, property-based: generated secrets put into a real request never leave the process.

A real uvicorn service (in this process, so the agent's output can be read) puts
generated e-mails, card numbers, phone numbers, URL credentials and secret-named
values into span attributes, events, an exception message and a span name. After
each request the agent's three sinks are read as bytes: the local store's SQLite
files (db + WAL), the OTLP/HTTP payloads captured by a real receiver built from
``opentelemetry-proto``, and the console exporter's output. None may contain a
secret; the hashed key appears only as its HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import sqlite3
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pulsetrace import runtime
from pulsetrace.validation import config_from_mapping
from pulsetrace.instrumentation import business_span, set_business_attributes
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
from pulsetrace.instrumentation.pii import luhn_valid
from tests.instrumentation.test_keep_errors_http import ThreadedUvicorn
from tests.otlp_fixtures import otlp_receiver  # noqa: F401  (a pytest fixture)
from tests.otlp_receiver import OtlpReceiver

HASH_SECRET = "pii-test-hmac-key"


async def handler(request: Request) -> JSONResponse:
    d: dict[str, str] = await request.json()
    span = trace.get_current_span()
    span.set_attribute("order.note", f"contact {d['email']} / {d['phone']}, card {d['card']}")
    span.set_attribute("payment.api_key", d["secret"])
    span.set_attribute("http.request.header.authorization", f"Bearer {d['secret']}")
    span.set_attribute("callback.url", f"https://{d['user']}:{d['password']}@pay.example.test/cb?token={d['secret']}")
    span.set_attribute("user.id", d["user_id"])
    span.add_event("customer.lookup", {"detail": f"email={d['email']} card={d['card']}", "phone": d["phone"]})
    with business_span("payment.create", tier="critical", customer_email=d["email"]):
        set_business_attributes(note=f"card {d['card']} phone {d['phone']}", session_token=d["secret"])
    try:
        with trace.get_tracer("app").start_as_current_span(f"lookup {d['email']}"):
            raise ValueError(f"card {d['card']} declined for {d['email']} (phone {d['phone']}, "
                             f"password={d['password']})")
    except ValueError:
        pass
    return JSONResponse({"trace_id": f"{span.get_span_context().trace_id:032x}"})


APP = PulseTraceMiddleware(Starlette(routes=[Route("/pii", handler, methods=["POST"])]))


@pytest.fixture
def service(tmp_path: Path, clean_agent: None, otlp_receiver: OtlpReceiver  # noqa: F811
            ) -> Iterator[tuple[ThreadedUvicorn, Path, OtlpReceiver]]:
    store = tmp_path / "store"
    cfg = config_from_mapping({
        "service": {"name": "shop-api"},
        "store": {"path": str(store)},
        "tracing": {
            "exporters": ["local", "otlp", "console"],
            "otlp": {"endpoint": otlp_receiver.endpoint},
            "export_interval": 0.05,
            "sampling": {"tiers": {t: {"rate": 1.0, "reservoir": 0}
                                   for t in ("critical", "business", "general", "health")}},
            "business": {"annotations": ["user.id", "payment.api_key", "order.note"]},
            "pii": {"hash_keys": ["user.id"], "hash_secret": HASH_SECRET},
        },
    }, env={})
    runtime.start(config=cfg, instrument=False)
    with ThreadedUvicorn(APP) as server:
        yield server, store, otlp_receiver


def _card(digits: list[int], sep: str) -> tuple[str, str]:
    body = "".join(map(str, digits))
    card = body + next(d for d in "0123456789" if luhn_valid(body + d))
    return card, sep.join(card[i:i + 4] for i in range(0, len(card), 4))


_alnum = string.ascii_letters + string.digits
emails = st.emails().filter(lambda e: e.isascii() and not any(c in e for c in '%"\\'))
cards = st.builds(_card, st.lists(st.integers(0, 9), min_size=15, max_size=15), st.sampled_from(["", " ", "-"]))
n = st.integers
phones = st.one_of(
    st.builds(lambda cc, a, b: f"+{cc} {a} {b}", n(1, 99), n(60000, 99999), n(10000, 99999)),
    st.builds(lambda a, b, c: f"({a}) {b}-{c:04d}", n(201, 989), n(200, 999), n(0, 9999)),
    st.builds(lambda a, b, c: f"+1 ({a}) {b}-{c:04d}", n(201, 989), n(200, 999), n(0, 9999)),
    st.builds(lambda a, b, c: f"0{a} {b} {c}", n(100, 999), n(1000, 9999), n(1000, 9999)),
    st.builds(lambda cc, rest: f"+{cc}{rest}", n(1, 99), n(6_000_000_000, 9_999_999_999)),
    st.builds(lambda a, b: f"{a} {b}", n(60000, 99999), n(10000, 99999)),
)
passwords = st.text(alphabet=_alnum + "!$^*-_.~", min_size=8, max_size=24).map(lambda s: "pw" + s)
secrets_ = st.text(alphabet=_alnum, min_size=12, max_size=30).map(lambda s: "sk_" + s)
user_ids = st.text(alphabet=_alnum, min_size=8, max_size=16).map(lambda s: "u-" + s)
users = st.text(alphabet=string.ascii_lowercase, min_size=4, max_size=10).map(lambda s: "usr" + s)


def _sinks(store: Path, receiver: OtlpReceiver, console: str) -> dict[str, bytes]:
    files = [store / name for name in ("spans.db", "spans.db-wal")]
    # The rows as SQLite returns them too: a long record is split across pages in the files,
    # so a string can straddle a page boundary in the raw bytes.
    conn = sqlite3.connect(f"file:{store / 'spans.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT * FROM spans").fetchall()
    finally:
        conn.close()
    return {
        "local store files": b"".join(f.read_bytes() for f in files if f.exists()),
        "local store rows": repr(rows).encode("utf-8"),
        "OTLP payload": b"".join(receiver.raw_bodies()),
        "console": console.encode("utf-8"),
    }


# No shrinking: each example is a real request, and a failing example is readable as generated.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(email=emails, card=cards, phone=phones, password=passwords, secret=secrets_, secret2=secrets_,
       user_id=user_ids, user=users)
def test_generated_secrets_never_reach_the_store_the_otlp_payload_or_the_console(
        service: tuple[ThreadedUvicorn, Path, OtlpReceiver], capfd: pytest.CaptureFixture[str],
        email: str, card: tuple[str, str], phone: str, password: str, secret: str, secret2: str, user_id: str,
        user: str) -> None:
    server, store, receiver = service
    # Hypothesis seeds the global PRNG the same way for every example, and the SDK's id
    # generator draws from it: without this every example would reuse the same span ids.
    random.seed(os.urandom(16))
    card_digits, card_shown = card
    body: dict[str, Any] = {"email": email, "card": card_shown, "phone": phone, "password": password,
                            "secret": secret, "user_id": user_id, "user": user}
    r = httpx.post(f"{server.url}/pii", params={"access_token": secret2, "contact": email}, json=body, timeout=10)
    assert r.status_code == 200
    trace_id = r.json()["trace_id"]
    running = runtime.current()
    assert running is not None
    # The server span ends just after the response is sent: wait for it, then flush every exporter.
    deadline = time.monotonic() + 10
    while not any(s.trace_id == trace_id and s.kind == "server" for s in receiver.spans()):
        assert time.monotonic() < deadline, "the server span never reached the OTLP receiver"
        running.pipeline.force_flush(200)
    assert running.pipeline.force_flush(5000)
    captured = capfd.readouterr()
    sinks = _sinks(store, receiver, captured.err + captured.out)

    # The request really went through every sink (no vacuous pass) ...
    checked = {k: v for k, v in sinks.items() if k != "local store files"}
    for name, data in checked.items():
        ident = bytes.fromhex(trace_id) if name == "OTLP payload" else trace_id.encode()
        assert ident in data, name
    # ... and the hashed key is there only as its HMAC.
    digest = hmac.new(HASH_SECRET.encode(), user_id.encode(), hashlib.sha256).hexdigest().encode()
    for name, data in checked.items():
        assert digest in data, name

    secrets = {"email": email, "url-encoded email": quote(email, safe=""), "card": card_digits,
               "card as shown": card_shown, "phone": phone, "password": password, "secret": secret,
               "query secret": secret2, "user id": user_id, "url user": user}
    for name, data in sinks.items():
        for what, value in secrets.items():
            assert value.encode() not in data, f"{what} {value!r} leaked into the {name}"
