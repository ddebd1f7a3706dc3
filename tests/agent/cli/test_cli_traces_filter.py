"""``pulsetrace traces --filter EXPR`` and the paged search behind it, over a real local store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from pulsetrace.cli.main import main
from pulsetrace.store import LocalStore
from pulsetrace.views.filter import parse
from pulsetrace.views.trace_search import search_traces
from tests.agent.span_factory import provider
from tests.agent.cli.test_cli_traces import store, two_service_trace  # noqa: F401 (the store fixture)


def _payment(store: LocalStore, method: str, status: int, start: float, ms: float = 20.0) -> str:
    prov, collect = provider("shop-api")
    tracer = prov.get_tracer("t")
    span = tracer.start_span("POST /payments", kind=SpanKind.SERVER, start_time=int(start * 1e9), attributes={
        "http.request.method": "POST", "url.full": "http://shop.test/payments", "http.response.status_code": status,
        "payment.method": method, "aws.xray.annotations": ["payment.method"]})
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, "gateway"))
    span.end(end_time=int((start + ms / 1000) * 1e9))
    store.write_spans(collect.spans)
    return f"{span.get_span_context().trace_id:032x}"


def test_filter_lists_only_the_matching_traces_newest_first(store: LocalStore,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    upi_ok = _payment(store, "upi", 200, now - 30)
    upi_fail = _payment(store, "upi", 502, now - 20)
    card_fail = _payment(store, "card", 502, now - 10)
    assert main(["traces", "--json", "--filter", 'annotation.payment_method = "upi"']) == 0
    got = [t["trace_id"] for t in json.loads(capsys.readouterr().out)]
    assert got == [upi_fail, upi_ok]
    assert main(["traces", "--json", "--filter", "fault AND NOT annotation.payment_method = \"upi\""]) == 0
    assert [t["trace_id"] for t in json.loads(capsys.readouterr().out)] == [card_fail]
    assert main(["traces", "--filter", "http.status = 404"]) == 0
    assert "no traces match" in capsys.readouterr().out


def test_filter_through_a_downstream_service(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    through = two_service_trace(store, fail_downstream=True)
    _payment(store, "card", 200, time.time())
    assert main(["traces", "--json", "--filter", 'service("payment-gateway") { fault }']) == 0
    assert [t["trace_id"] for t in json.loads(capsys.readouterr().out)] == [through]
    assert main(["traces", "--json", "--filter", 'edge("shop-api", "payment-gateway")']) == 0
    assert [t["trace_id"] for t in json.loads(capsys.readouterr().out)] == [through]


def test_a_syntax_error_is_one_line_with_its_column_and_exit_2(store: LocalStore,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _payment(store, "upi", 200, time.time())
    assert main(["traces", "--filter", 'responsetime > 1 AND annotation.x CONTAINS']) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("pulsetrace: filter: expected a number, a double-quoted string, true or false, "
                   "found the end of the expression at column 43\n")


def test_a_syntax_error_wins_even_without_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PULSETRACE_STORE", str(tmp_path / "none"))
    assert main(["traces", "--filter", "fault fault"]) == 2
    assert capsys.readouterr().err.startswith("pulsetrace: filter: unexpected 'fault'")


def test_pages_cover_every_trace_once(store: LocalStore) -> None:
    now = time.time()
    made = [_payment(store, "upi" if i % 3 else "card", 200, now - 100 + i * 0.5) for i in range(57)]
    flt = parse('annotation.payment_method = "upi"')
    seen: list[str] = []
    before = None
    for _ in range(20):
        page = search_traces(store, flt, limit=7, before=before)
        seen += [h.summary.trace_id for h in page.hits]
        if page.next_before is None:
            break
        before = page.next_before
    expected = [t for i, t in enumerate(made) if i % 3][::-1]
    assert seen == expected


def test_a_filter_that_matches_nothing_scans_a_bounded_number_of_traces(store: LocalStore) -> None:
    now = time.time()
    for i in range(30):
        _payment(store, "card", 200, now - 60 + i)
    page = search_traces(store, parse("fault"), limit=5, max_scan=12)
    assert page.hits == [] and page.scanned == 12 and page.truncated
    rest = search_traces(store, parse("fault"), limit=5, before=page.next_before, max_scan=100)
    assert rest.scanned == 18 and not rest.truncated and rest.next_before is None


def test_since_bounds_the_search(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    _payment(store, "upi", 200, now - 7200)
    recent = _payment(store, "upi", 200, now - 5)
    assert main(["traces", "--json", "--since", "1h", "--filter", "ok"]) == 0
    assert [t["trace_id"] for t in json.loads(capsys.readouterr().out)] == [recent]
