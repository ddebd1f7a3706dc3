"""PII end to end, property-based: generated secrets put into a real request never leave the process.

A real uvicorn service (in this process, so the agent's output can be read) puts
generated e-mails, card numbers, phone numbers, URL credentials and secret-named
values into span attributes, events, an exception message, a span name, the query
string and a business metric's dimension. A second generator draws one value of each
evasion class the red-team pass found (form-encoded cards and phones, an invalid escape
beside an encoded e-mail, non-ASCII local parts, JWTs, AWS key ids and secret keys,
``x-access-key``/``x-auth``/``x-signature`` and JSON ``pass`` keys, cards with dots, double
spaces or full-width digits). After each request every sink is read as bytes: the local
store's SQLite files (db + WAL) and rows, the OTLP/HTTP payloads captured by a real receiver
built from ``opentelemetry-proto``, the X-Ray daemon's UDP datagrams, the EMF output and the
process's stdout/stderr (the console exporter and every log line). None may contain a
secret; the hashed key appears only as its HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import sqlite3
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
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

import pulsetrace
from pulsetrace import runtime
from pulsetrace.instrumentation import business_span, set_business_attributes
from pulsetrace.instrumentation.asgi import PulseTraceMiddleware
from pulsetrace.instrumentation.pii import luhn_valid
from pulsetrace.validation import config_from_mapping
from tests.agent.exporters.test_xray_udp import UdpDaemon
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
    for i, evasion in enumerate(d["evasions"]):
        span.set_attribute(f"evasion.{i}", evasion)
    span.set_attribute("http.request.header.x-access-key", d["secret"])
    span.set_attribute("http.request.header.x-signature", d["secret"])
    span.add_event("upstream.reply", {"body": json.dumps({"pass": d["password"], "ok": True}),
                                      "headers": f"x-auth: {d['secret']}"})
    pulsetrace.metric("Revenue", 1.0, unit="None", method=d["email"])
    try:
        with trace.get_tracer("app").start_as_current_span(f"lookup {d['email']}"):
            raise ValueError(f"card {d['card']} declined for {d['email']} (phone {d['phone']}, "
                             f"password={d['password']})")
    except ValueError:
        pass
    return JSONResponse({"trace_id": f"{span.get_span_context().trace_id:032x}"})


APP = PulseTraceMiddleware(Starlette(routes=[Route("/pii", handler, methods=["POST"])]))


@dataclass
class Sinks:
    store: Path
    receiver: OtlpReceiver
    daemon: UdpDaemon
    emf: Path


@pytest.fixture
def service(tmp_path: Path, clean_agent: None, otlp_receiver: OtlpReceiver  # noqa: F811
            ) -> Iterator[tuple[ThreadedUvicorn, Sinks]]:
    store = tmp_path / "store"
    daemon = UdpDaemon()
    emf = tmp_path / "emf.log"
    cfg = config_from_mapping({
        "service": {"name": "shop-api"},
        "store": {"path": str(store)},
        "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{emf}"}},
        "tracing": {
            "exporters": ["local", "otlp", "console", "xray-udp"],
            "xray": {"daemon_address": daemon.address},
            "otlp": {"endpoint": otlp_receiver.endpoint},
            "export_interval": 0.05,
            "sampling": {"tiers": {t: {"rate": 1.0, "reservoir": 0}
                                   for t in ("critical", "business", "general", "health")}},
            "business": {"annotations": ["user.id", "payment.api_key", "order.note"]},
            "pii": {"hash_keys": ["user.id"], "hash_secret": HASH_SECRET},
        },
    }, env={})
    runtime.start(config=cfg, instrument=False)
    try:
        with ThreadedUvicorn(APP) as server:
            yield server, Sinks(store, otlp_receiver, daemon, emf)
    finally:
        daemon.close()


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


def _with_check(body: str) -> str:
    return body + next(d for d in "0123456789" if luhn_valid(body + d))


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_ASCII = str.maketrans("", "")
_card_bodies = st.text("0123456789", min_size=15, max_size=15)


def _grouped_card(body: str, sep: str, digits: dict[int, int] = _ASCII) -> tuple[str, tuple[str, ...]]:
    """A 16-digit card in groups of four: (as shown, (its first 12 digits as shown, all its digits))."""
    card = _with_check(body).translate(digits)
    groups = [card[i:i + 4] for i in range(0, 16, 4)]
    return sep.join(groups), (sep.join(groups[:3]), card)
_b64 = string.ascii_letters + string.digits
_b64url = _b64 + "-_"
#: One value of each evasion class: (as sent, (what must not leave, in each form it could leave in)).
evasions = st.tuples(
    # form-encoded card: groups joined by "+", a form's space
    st.builds(lambda b: _grouped_card(b, "+"), _card_bodies),
    # form-encoded phone: "%2B" and "+" for the spaces
    st.builds(lambda a, b: (f"%2B91+{a}+{b}", (f"{a}+{b}", f"{a} {b}")), n(60000, 99999), n(10000, 99999)),
    # an encoded e-mail next to an invalid escape
    st.builds(lambda u: (f"email={u}%40example.com&x=%ff", (f"{u}@example.com", f"{u}%40example.com")),
              st.text(string.ascii_lowercase, min_size=5, max_size=10)),
    # a non-ASCII local part
    st.builds(lambda u: (f"from {u}@example.com", (f"{u}@example.com",)),
              st.text("éñüøçåßàíó" + string.ascii_lowercase, min_size=5, max_size=12).filter(
                  lambda u: not u.isascii())),
    # a JWT, bare
    st.builds(lambda p, g: (f"t eyJhbGciOiJIUzI1NiJ9.eyJ{p}.{g} x", (f"eyJ{p}",)),
              st.text(_b64url, min_size=12, max_size=40), st.text(_b64url, min_size=8, max_size=40)),
    # AWS access key id and secret key
    st.builds(lambda k: (f"key AKIA{k} in use", (f"AKIA{k}",)),
              st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16)),
    st.builds(lambda k: (f"secret {k} set", (k,)), st.text(_b64 + "/+", min_size=37, max_size=37).map(
        lambda k: "aZ9" + k)),
    # cards with dots, double spaces, full-width digits
    st.builds(_grouped_card, _card_bodies, st.sampled_from([".", "  "])),
    st.builds(lambda b: _grouped_card(b, " ", _FULL_WIDTH), _card_bodies),
)


def _sinks(store: Path, receiver: OtlpReceiver, console: str, daemon: UdpDaemon | None = None,
           emf: Path | None = None) -> dict[str, bytes]:
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
        "console and log lines": console.encode("utf-8"),
        **({"X-Ray datagrams": b"".join(daemon.datagrams)} if daemon is not None else {}),
        **({"EMF output": emf.read_bytes() if emf.exists() else b""} if emf is not None else {}),
    }


# No shrinking: each example is a real request, and a failing example is readable as generated.
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(email=emails, card=cards, phone=phones, password=passwords, secret=secrets_, secret2=secrets_,
       user_id=user_ids, user=users, evasion=evasions)
def test_generated_secrets_never_reach_any_sink(
        service: tuple[ThreadedUvicorn, Sinks], capfd: pytest.CaptureFixture[str],
        email: str, card: tuple[str, str], phone: str, password: str, secret: str, secret2: str, user_id: str,
        user: str, evasion: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    server, sinks_at = service
    store, receiver = sinks_at.store, sinks_at.receiver
    # Hypothesis seeds the global PRNG the same way for every example, and the SDK's id
    # generator draws from it: without this every example would reuse the same span ids.
    random.seed(os.urandom(16))
    card_digits, card_shown = card
    body: dict[str, Any] = {"email": email, "card": card_shown, "phone": phone, "password": password,
                            "secret": secret, "user_id": user_id, "user": user,
                            "evasions": [shown for shown, _ in evasion]}
    # The query carries the evasions too, as a client would send them (already form-encoded).
    query = "&".join([f"access_token={secret2}", f"contact={quote(email, safe='')}",
                      f"pan={evasion[0][0]}", evasion[1][0].replace("%2B91", "tel=%2B91"), evasion[2][0]])
    r = httpx.post(f"{server.url}/pii?{query}", json=body, timeout=10)
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
    assert running.recorder is not None and running.recorder.publisher.flush(5.0)
    deadline = time.monotonic() + 10
    while not any(trace_id[8:].encode() in d for d in list(sinks_at.daemon.datagrams)):
        assert time.monotonic() < deadline, "the X-Ray daemon never got the trace"
        time.sleep(0.02)
    captured = capfd.readouterr()
    sinks = _sinks(store, receiver, captured.err + captured.out, sinks_at.daemon, sinks_at.emf)

    # The request really went through every sink (no vacuous pass) ...
    checked = {k: v for k, v in sinks.items() if k not in ("local store files", "EMF output", "X-Ray datagrams")}
    for name, data in checked.items():
        ident = bytes.fromhex(trace_id) if name == "OTLP payload" else trace_id.encode()
        assert ident in data, name
    # ... and the hashed key is there only as its HMAC.
    digest = hmac.new(HASH_SECRET.encode(), user_id.encode(), hashlib.sha256).hexdigest().encode()
    for name, data in checked.items():
        assert digest in data, name

    secrets = {"email": email, "url-encoded email": quote(email, safe=""), "card": card_digits,
               "card as shown": card_shown, "phone": phone, "password": password, "secret": secret,
               "query secret": secret2, "user id": user_id, "url user": user,
               **{f"evasion {i}.{j}": form for i, (_, hidden) in enumerate(evasion) for j, form in enumerate(hidden)}}
    for name, data in sinks.items():
        for what, value in secrets.items():
            # As UTF-8 and as JSON writes non-ASCII (X-Ray documents, EMF): "\u00e9", "\uff14".
            for form in {value.encode(), json.dumps(value)[1:-1].encode()}:
                assert form not in data, f"{what} {value!r} leaked into the {name}"
