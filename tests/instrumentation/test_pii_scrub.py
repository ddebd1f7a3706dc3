"""The PII scrubber on real SDK spans: what is redacted, what survives, hashing, and the text rules."""

from __future__ import annotations

import hashlib
import hmac
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Link, Status, StatusCode

from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.instrumentation.pii import REDACTED, PiiScrubber, luhn_valid, scrub_text

CARDS = ["4111111111111111", "5500005555555559", "378282246310005", "6011111111111117", "4222222222222"]


def make_span(name: str = "op", attributes: dict[str, object] | None = None, *, event: dict[str, object] | None = None,
              exc: BaseException | None = None, status: str | None = None,
              link_attrs: dict[str, object] | None = None) -> ReadableSpan:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    links = []
    if link_attrs is not None:
        other = tracer.start_span("other")
        other.end()
        links.append(Link(other.get_span_context(), link_attrs))  # type: ignore[arg-type]
    span = tracer.start_span(name, attributes=attributes, links=links)  # type: ignore[arg-type]
    if event is not None:
        span.add_event("note", event)  # type: ignore[arg-type]
    if exc is not None:
        span.record_exception(exc)
    if status is not None:
        span.set_status(Status(StatusCode.ERROR, status))
    span.end()
    return span  # type: ignore[return-value]


@pytest.mark.parametrize(("text", "expected"), [
    ("contact bob.smith+shop@example.co.uk now", "contact [EMAIL] now"),
    ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("pan=4111111111111111", "pan=[CARD]"),
    ("+91 98765 43210", "[PHONE]"),
    ("+14155552671", "[PHONE]"),
    ("call (415) 555-2671 or 415.555.2671", "call [PHONE] or [PHONE]"),
    ("UK 020 7946 0958 / 07700 900123", "UK [PHONE] / [PHONE]"),
    ("mobile 98765 43210", "mobile [PHONE]"),
    ("https://bob:hunter2@pay.example.test/cb", "https://[REDACTED]@pay.example.test/cb"),
    ("/cb?token=abc123&page=2&sig=zz", "/cb?token=[REDACTED]&page=2&sig=[REDACTED]"),
    ("key=AKIA123&X-Amz-Signature=deadbeef", "key=[REDACTED]&X-Amz-Signature=[REDACTED]"),
    ("password=hunter2 rejected", "password=[REDACTED] rejected"),
    ('{"api_key": "k-123", "ok": 1}', '{"api_key": "[REDACTED]", "ok": 1}'),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "Bearer [REDACTED]"),
    ("bob%40example.com", "[EMAIL]"),
    ("+91 98765 43210 then 4111 1111 1111 1111", "[PHONE] then [CARD]"),
])
def test_text_rules_redact(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize("text", [
    "order 1234567890123456 shipped",  # 16 digits, not Luhn-valid: an id
    "ts 1718000000 id 42 retry 3",
    "ip 192.168.100.200 port 8080 pid 12345",
    "date 2024-01-15 12:30:45, version 1.2.3",
    "amount=12.50 qty=3 total: 37.50",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "GET /orders/{id}/items",
    "SELECT ? FROM t WHERE a = $1",
    "trace 1-5759e988-bd862e3fe1be46a994272793",
    "db shop@127.0.0.1 cache redis@10.0.0.5:6379",  # X-Ray's name@host, at an address: no e-mail
])
def test_ordinary_numbers_and_text_survive(text: str) -> None:
    assert scrub_text(text) == text


def test_luhn() -> None:
    assert all(luhn_valid(c) for c in CARDS)
    assert not luhn_valid("4111111111111112")


def test_secret_named_keys_are_redacted_but_their_counts_kept() -> None:
    scrub = PiiScrubber(secret_keys=["pin_code"])
    out = scrub(make_span(attributes={
        "http.request.header.authorization": "Bearer abc", "http.request.header.cookie": "sid=1",
        "http.response.header.set-cookie": "sid=2", "db.password": "pw", "X-Api-Key": "k", "session.id": "s",
        "aws.credentials.key": "c", "app.pin_code": "1234", "llm.usage.total_tokens": 120, "empty_token": "",
        "plain": "fine",
    }))
    a = dict(out.attributes or {})
    for key in ("http.request.header.authorization", "http.request.header.cookie", "http.response.header.set-cookie",
                "db.password", "X-Api-Key", "session.id", "aws.credentials.key", "app.pin_code"):
        assert a[key] == REDACTED, key
    assert a["llm.usage.total_tokens"] == 120 and a["empty_token"] == "" and a["plain"] == "fine"


def test_service_names_built_as_name_at_host_are_kept() -> None:
    span = make_span(attributes={"peer.service": "shop@db.prod.internal", "aws.remote.service": "orders@api.test"})
    assert PiiScrubber()(span) is span


def test_personal_data_keys_are_redacted_whatever_the_type() -> None:
    out = PiiScrubber()(make_span(attributes={"user.email": "not-an-address", "user.phone": 9876543210,
                                              "card_number": 4111111111111111}))
    assert set((out.attributes or {}).values()) == {REDACTED}


def test_hash_keys_are_exported_only_as_their_hmac() -> None:
    scrub = PiiScrubber(hash_keys=["user.id", "enduser.id"], hash_secret="s3cret")
    out = scrub(make_span(attributes={"user.id": "u-42", "enduser.id": 42, "other.id": "u-42"},
                          event={"user.id": "u-42"}))
    expected = "h:" + hmac.new(b"s3cret", b"u-42", hashlib.sha256).hexdigest()
    a = dict(out.attributes or {})
    assert a["user.id"] == expected
    assert a["enduser.id"] == "h:" + hmac.new(b"s3cret", b"42", hashlib.sha256).hexdigest()
    assert a["other.id"] == "u-42"
    assert (out.events[0].attributes or {})["user.id"] == expected
    # The same id gives the same hash in another scrubber with the same secret: followable across traces.
    assert PiiScrubber(hash_keys=["user.id"], hash_secret="s3cret").hash_value("u-42") == expected


def test_without_a_hash_secret_a_per_process_key_is_used(caplog: pytest.LogCaptureFixture) -> None:
    a = PiiScrubber(hash_keys=["user.id"])
    b = PiiScrubber(hash_keys=["user.id"])
    assert a.hash_value("u") == a.hash_value("u") != b.hash_value("u")
    assert "hash_secret" in caplog.text


def test_sql_statements_are_sanitized() -> None:
    out = PiiScrubber()(make_span(attributes={"db.statement": "SELECT * FROM u WHERE email = 'bob@x.io'",
                                              "db.query.text": "UPDATE c SET pan = 4111111111111111"}))
    a = dict(out.attributes or {})
    assert a["db.statement"] == "SELECT * FROM u WHERE email = ?"
    assert a["db.query.text"] == "UPDATE c SET pan = ?"


def test_a_statement_seen_again_is_scrubbed_the_same_and_the_memo_stays_bounded() -> None:
    from pulsetrace.instrumentation import pii

    scrubber = PiiScrubber()
    statement = "SELECT * FROM u WHERE email = 'bob@x.io' AND token = 'hunter2'"
    first = scrubber.attributes({"db.statement": statement})
    again = scrubber.attributes({"db.statement": statement})
    assert first == again == PiiScrubber().attributes({"db.statement": statement})
    assert first is not None and "bob@x.io" not in str(first) and "hunter2" not in str(first)
    assert first["db.statement"].startswith("SELECT * FROM u WHERE email = ? AND token = ")
    # Literals inlined make every statement new: the memo starts over instead of growing.
    for i in range(pii._SQL_MEMO_ENTRIES * 3):
        out = scrubber.attributes({"db.statement": f"SELECT * FROM c WHERE pan = '4111111111111111' AND n = {i}"})
        assert out == {"db.statement": "SELECT * FROM c WHERE pan = ? AND n = ?"}
    assert len(scrubber._sql_done) <= pii._SQL_MEMO_ENTRIES
    long = "SELECT 1 FROM t WHERE a = 'bob@x.io' /*" + "x" * pii._SQL_MEMO_CHARS + "*/"
    assert scrubber.attributes({"db.statement": long}) == PiiScrubber().attributes({"db.statement": long})
    assert long not in scrubber._sql_done


def test_names_events_exceptions_links_and_status_are_scrubbed() -> None:
    span = make_span("lookup bob@example.com", {"note": "card 4111 1111 1111 1111"},
                     event={"detail": "call +91 98765 43210"},
                     exc=ValueError("declined for bob@example.com password=hunter2"),
                     status="user bob@example.com failed",
                     link_attrs={"from": "https://u:pw@x.test/"})
    out = PiiScrubber()(span)
    text = repr((out.name, dict(out.attributes or {}), [(e.name, dict(e.attributes or {})) for e in out.events],
                 [dict(link.attributes or {}) for link in out.links], out.status.description))
    for secret in ("bob@example.com", "4111 1111 1111 1111", "98765 43210", "hunter2", "u:pw"):
        assert secret not in text
    assert out.name == "lookup [EMAIL]"
    assert out.status.status_code is StatusCode.ERROR
    assert out.context == span.context and out.parent == span.parent and out.start_time == span.start_time
    exc_event = [e for e in out.events if e.name == "exception"][0]
    assert (exc_event.attributes or {})["exception.type"] == "ValueError"
    assert "[EMAIL]" in str((exc_event.attributes or {})["exception.stacktrace"])


def test_a_clean_span_is_returned_unchanged() -> None:
    span = make_span("GET /orders/{id}", {"http.request.method": "GET", "http.response.status_code": 200,
                                          "url.path": "/orders/42"})
    assert PiiScrubber()(span) is span


def test_lists_of_strings_are_scrubbed_item_by_item() -> None:
    out = PiiScrubber()(make_span(attributes={"to": ("a@b.io", "ok"), "tokens": ("t1", "t2")}))
    a = dict(out.attributes or {})
    assert a["to"] == ("[EMAIL]", "ok")
    assert a["tokens"] == (REDACTED, REDACTED)


def test_scrubbing_keeps_trace_identity_for_every_span_kind() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        child = tracer.start_span("child bob@example.com", kind=trace.SpanKind.CLIENT)
        child.end()
    out = PiiScrubber()(child)  # type: ignore[arg-type]
    assert out.parent is not None and out.parent.span_id == root.get_span_context().span_id
    assert out.kind is trace.SpanKind.CLIENT and out.instrumentation_scope == child.instrumentation_scope  # type: ignore[attr-defined]


_local = st.text(alphabet=string.ascii_letters + string.digits + "._%+-", min_size=1, max_size=20).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)


@settings(max_examples=200, deadline=None)
@given(email=st.emails() | st.builds(lambda a, b: f"{a}@{b}.example.com", _local,
                                    st.text(string.ascii_lowercase, min_size=1, max_size=10)),
       prefix=st.text(alphabet=string.ascii_letters + " ,:(", max_size=10))
def test_no_email_survives_in_free_text(email: str, prefix: str) -> None:
    assert email not in scrub_text(f"{prefix} {email} ok")


@settings(max_examples=200, deadline=None)
@given(body=st.lists(st.integers(0, 9), min_size=12, max_size=18), sep=st.sampled_from(["", " ", "-"]),
       group=st.sampled_from([4, 5]))
def test_no_luhn_valid_card_survives_whatever_its_grouping(body: list[int], sep: str, group: int) -> None:
    digits = "".join(map(str, body))
    check = next(d for d in "0123456789" if luhn_valid(digits + d))
    card = digits + check
    shown = sep.join(card[i:i + group] for i in range(0, len(card), group))
    out = scrub_text(f"paid with {shown} today")
    assert card not in out.replace(" ", "").replace("-", "")
