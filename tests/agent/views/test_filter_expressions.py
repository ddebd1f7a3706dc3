"""X-Ray filter expressions over a fixed corpus of traces: each operator, precedence, quoting, unicode.

The corpus is stored spans (what the local store gives back), judged through the same
X-Ray translation the exporters use, so each expectation below is what the X-Ray console
would list for the same traces.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pulsetrace.store import StoredSpan
from pulsetrace.views.filter import FilterSyntaxError, edge_filter, node_filter, parse, quote
from pulsetrace.views.trace_facts import facts_from_spans

_ids = itertools.count(1)
T0 = 1_790_000_000.0


def _span(trace: str, name: str, *, kind: str = "server", service: str = "shop-api", parent: str | None = None,
          start: float = 0.0, ms: float = 10.0, status: str = "ok", attrs: dict[str, Any] | None = None,
          remote_parent: bool = False, events: list[dict[str, Any]] | None = None) -> StoredSpan:
    return StoredSpan(trace_id=trace, span_id=f"{next(_ids):016x}", parent_span_id=parent, name=name, kind=kind,
                      service=service, start=T0 + start, end=T0 + start + ms / 1000.0, status=status,
                      status_message=None, attributes=dict(attrs or {}), events=list(events or []),
                      resource={"service.name": service}, remote_parent=remote_parent)


def _server(trace: str, method: str, path: str, status: int, ms: float, **extra: Any) -> StoredSpan:
    annotations = extra.pop("annotations", {})
    attrs = {"http.request.method": method, "url.full": f"http://shop.test{path}",
             "http.response.status_code": status, **extra}
    if annotations:
        attrs.update(annotations)
        attrs["aws.xray.annotations"] = list(annotations)
    return _span(trace, f"{method} {path}", ms=ms, status="error" if status >= 500 else "ok", attrs=attrs)


def _corpus() -> dict[str, list[StoredSpan]]:
    traces: dict[str, list[StoredSpan]] = {}

    # upi: a slow captured UPI payment through the payment gateway.
    t = "a" * 32
    root = _server(t, "POST", "/payments", 200, 1500, annotations={"payment.method": "upi", "amount": 250.0})
    call = _span(t, "POST", kind="client", parent=root.span_id, start=0.1, ms=1200,
                 attrs={"http.request.method": "POST", "url.full": "http://127.0.0.1:9/v1/charge",
                        "peer.service": "payment-gateway", "http.response.status_code": 200})
    gw = _span(t, "POST /v1/charge", service="payment-gateway", parent=call.span_id, remote_parent=True, start=0.11,
               ms=1150, attrs={"http.request.method": "POST", "url.path": "/v1/charge",
                               "http.response.status_code": 200})
    traces["upi"] = [root, call, gw]

    # card: a card payment the gateway failed (500 → 502): a fault on the gateway edge.
    t = "b" * 32
    root = _server(t, "POST", "/payments", 502, 200, annotations={"payment.method": "card", "amount": 999.5})
    call = _span(t, "POST", kind="client", parent=root.span_id, start=0.01, ms=150, status="error",
                 attrs={"http.request.method": "POST", "url.full": "http://127.0.0.1:9/v1/charge",
                        "peer.service": "payment-gateway", "http.response.status_code": 500})
    gw = _span(t, "POST /v1/charge", service="payment-gateway", parent=call.span_id, remote_parent=True,
               start=0.02, ms=140, status="error",
               attrs={"http.request.method": "POST", "url.path": "/v1/charge", "http.response.status_code": 500},
               events=[{"name": "exception", "time": T0, "attributes": {
                   "exception.type": "RuntimeError", "exception.message": "upstream bank timeout",
                   "exception.stacktrace": "Traceback (most recent call last):\nRuntimeError: upstream bank timeout"}}])
    traces["card"] = [root, call, gw]

    # throttled: a 429 (an error and a throttle, not a fault).
    t = "c" * 32
    traces["throttled"] = [_server(t, "GET", "/orders?page=2", 429, 40, **{"user_agent.original": "curl/8.5"})]

    # order: an order with a database call, a unicode and a boolean annotation.
    t = "d" * 32
    root = _server(t, "POST", "/orders", 201, 320, annotations={"school.id": "école-ñ-北京", "vip": True})
    db = _span(t, "INSERT shop", kind="client", parent=root.span_id, start=0.01, ms=300,
               attrs={"db.system": "postgresql", "db.name": "shop", "server.address": "127.0.0.1",
                      "db.statement": "INSERT INTO orders VALUES ($1)"})
    traces["order"] = [root, db]

    # login: a 401 from a user with an RTL annotation and a quote in another.
    t = "e" * 32
    traces["login"] = [_server(t, "POST", "/login", 401, 12,
                               annotations={"note": 'say "hi" \\ back', "name": "שלום مرحبا"},
                               **{"enduser.id": "u-42", "client.address": "10.1.2.3"})]

    # health: a fast internal-only trace with no http block at all.
    t = "f" * 32
    traces["internal"] = [_span(t, "nightly.cleanup", kind="internal", ms=5)]
    return traces


CORPUS = _corpus()
ALL = set(CORPUS)
FACTS = {label: facts_from_spans(spans) for label, spans in CORPUS.items()}


def matching(expr: str) -> set[str]:
    f = parse(expr)
    return {label for label, facts in FACTS.items() if f.matches(facts)}


TABLE: list[tuple[str, set[str]]] = [
    # empty: everything
    ("", ALL),
    ("   ", ALL),
    # numbers: every operator; seconds, like X-Ray
    ("responsetime > 1", {"upi"}),
    ("responsetime >= 1.5", {"upi"}),
    ("responsetime < 0.02", {"login", "internal"}),
    ("responsetime <= 0.04", {"throttled", "login", "internal"}),
    ("duration > 0.3", {"upi", "order"}),
    ("http.status = 429", {"throttled"}),
    ("http.status != 200", {"card", "throttled", "order", "login"}),
    ("http.status >= 500", {"card"}),
    ("http.status >= 4e2 AND http.status < 5E2", {"throttled", "login"}),
    # strings
    ('http.url CONTAINS "/payments"', {"upi", "card"}),
    ('http.url BEGINSWITH "http://shop.test/o"', {"throttled", "order"}),
    ('http.url ENDSWITH "/login"', {"login"}),
    ('http.url contains "/orders"', {"throttled", "order"}),
    ('http.method = "GET"', {"throttled"}),
    ('http.method != "POST"', {"throttled"}),
    ('http.useragent = "curl/8.5"', {"throttled"}),
    ('http.clientip = "10.1.2.3"', {"login"}),
    ('user = "u-42"', {"login"}),
    # booleans
    ("error", {"throttled", "login"}),
    ("fault", {"card"}),
    ("throttle", {"throttled"}),
    ("ok", {"upi", "order", "internal"}),
    ("!ok", {"card", "throttled", "login"}),
    ("fault = true", {"card"}),
    ("fault = false", ALL - {"card"}),
    ("error != true", ALL - {"throttled", "login"}),
    # annotations: strings, numbers, booleans, existence, unicode, quoting, bracket form
    ('annotation.payment_method = "upi"', {"upi"}),
    ('annotation.payment_method != "upi"', {"card"}),
    ("annotation.amount > 500", {"card"}),
    ("annotation.amount = 250", {"upi"}),
    ('annotation.amount = "250"', set()),  # types must agree, as in X-Ray
    ("annotation.vip = true", {"order"}),
    ("annotation.vip", {"order"}),
    ("annotation.payment_method", {"upi", "card"}),
    ('annotation.school_id = "école-ñ-北京"', {"order"}),
    ('annotation.school_id CONTAINS "北京"', {"order"}),
    ('annotation.name BEGINSWITH "שלום"', {"login"}),
    ('annotation.note = "say \\"hi\\" \\\\ back"', {"login"}),
    ('annotation[payment_method] = "card"', {"card"}),
    ('annotation["payment_method"] = "card"', {"card"}),
    ("annotation.missing = 1", set()),
    # service and edge: nodes as the service map names them
    ('service("payment-gateway")', {"upi", "card"}),
    ('service("shop-api")', ALL),
    ('service("shop@127.0.0.1")', {"order"}),
    ('service("payment-gateway") { fault }', {"card"}),
    ('service("payment-gateway") { responsetime > 1 }', {"upi"}),
    ('service("payment-gateway") { !fault }', {"upi"}),
    ('service("nope")', set()),
    ('edge("shop-api", "payment-gateway")', {"upi", "card"}),
    ('edge("shop-api", "payment-gateway") { fault }', {"card"}),
    ('edge("payment-gateway", "shop-api")', set()),
    ('edge("shop-api", "shop@127.0.0.1") { ok }', {"order"}),
    # AND / OR / NOT and precedence: NOT > AND > OR
    ('annotation.payment_method = "upi" AND responsetime > 1', {"upi"}),
    ('annotation.payment_method = "card" AND responsetime > 1', set()),
    ("fault OR throttle", {"card", "throttled"}),
    ("fault OR throttle AND http.status = 401", {"card"}),
    ("(fault OR throttle) AND http.status = 429", {"throttled"}),
    ("NOT fault AND NOT error", {"upi", "order", "internal"}),
    ("NOT (fault OR error)", {"upi", "order", "internal"}),
    ("not fault and http.status = 200", {"upi"}),
    ("!!fault", {"card"}),
    ("((((error))))", {"throttled", "login"}),
    ('service("payment-gateway") AND NOT service("payment-gateway") { fault }', {"upi"}),
]


@pytest.mark.parametrize(("expr", "expected"), TABLE, ids=[e or "<empty>" for e, _ in TABLE])
def test_expression_lists_the_traces_xray_would(expr: str, expected: set[str]) -> None:
    assert matching(expr) == expected


def test_printed_form_parses_back_to_the_same_verdicts() -> None:
    for expr, expected in TABLE:
        f = parse(expr)
        if f.empty:
            continue
        assert matching(f._root.text if f._root else "") == expected, expr  # noqa: SLF001


ERRORS: list[tuple[str, int, str]] = [
    ("responsetime >", 15, "compared with a number, found the end"),
    ("responsetime > \"slow\"", 16, "compared with a number"),
    ("responsetime CONTAINS 5", 14, "cannot be compared with CONTAINS"),
    ('http.url > "x"', 10, "cannot be compared with >"),
    ("http.url = 5", 12, "double-quoted string"),
    ("latency > 1", 1, "unknown keyword 'latency'"),
    ("(error", 7, "expected ')'"),
    ("error)", 6, "unexpected ')'"),
    ("error fault", 7, "join conditions with AND or OR"),
    ("AND error", 1, "needs an expression before it"),
    ("error AND", 10, "expected a keyword"),
    ('http.url = "abc', 12, "unterminated string"),
    ('http.url = "a\\nb"', 14, "unknown escape"),
    ("fault > true", 7, "use = or !="),
    ("fault = maybe", 9, "true or false"),
    ("service(payment)", 9, "double-quoted names"),
    ('service("a", "b")', 1, "takes 1 name"),
    ('edge("a")', 1, "takes 2 names"),
    ('service("a") { }', 16, "empty { }"),
    ('service("a") { http.status = 500 }', 16, "cannot be used inside { }"),
    ('service("a") { annotation.x = 1 }', 16, "annotations cannot be used"),
    ('service("a") { service("b") }', 16, "cannot be nested"),
    ("annotation.x < \"a\"", 16, "compares numbers"),
    ("annotation.x CONTAINS 3", 23, "compares strings"),
    ("annotation[ = 1", 13, "annotation key"),
    ("error # x", 7, "unexpected character '#'"),
    ("responsetime > 1e999", 16, "out of range"),
    ("(" * 60 + "error" + ")" * 60, 51, "nested more than"),
    ("x" * 2001, 2001, "longer than 2000"),
]


@pytest.mark.parametrize(("expr", "column", "words"), ERRORS, ids=[e[:40] for e, _, _ in ERRORS])
def test_syntax_error_names_the_problem_and_its_column(expr: str, column: int, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse(expr)
    assert info.value.column == column
    assert words in info.value.message
    assert str(info.value) == f"{info.value.message} at column {column}"


def test_map_clicks_build_expressions_that_select_the_node_and_edge() -> None:
    assert node_filter("payment-gateway") == 'service("payment-gateway")'
    assert matching(node_filter("payment-gateway")) == {"upi", "card"}
    assert matching(edge_filter("shop-api", "payment-gateway")) == {"upi", "card"}
    hostile = 'we"ird\\name'
    assert parse(node_filter(hostile)).matches(FACTS["upi"]) is False
    assert quote(hostile) == '"we\\"ird\\\\name"'


@pytest.mark.parametrize("kind", ["server", "client", "internal", "producer"])
@pytest.mark.parametrize("code", [None, 200, 401, 429, 500, 503, "502"])
@pytest.mark.parametrize("status", ["ok", "error"])
@pytest.mark.parametrize("rooted", [True, False])
def test_flags_read_off_the_spans_agree_with_the_xray_documents(kind: str, code: object, status: str,
                                                                rooted: bool) -> None:
    """The cheap path (flags from spans, no translation) says what the translated documents say."""
    from pulsetrace.views.trace_facts import facts_from_documents, segment_documents

    trace = f"{next(_ids):032x}"
    root = _span(trace, "GET /", attrs={"http.request.method": "GET", "url.path": "/"})
    attrs = {"http.response.status_code": code} if code is not None else {}
    span = _span(trace, "call", kind=kind, parent=root.span_id if rooted else None, status=status, attrs=attrs)
    spans = [root, span]
    cheap = facts_from_spans(spans)
    full = facts_from_documents(segment_documents(spans))
    for flag in ("ok", "error", "fault", "throttle"):
        assert cheap.flag(flag) == full.flag(flag), flag
    assert cheap.number("duration") == pytest.approx(full.number("duration"))
