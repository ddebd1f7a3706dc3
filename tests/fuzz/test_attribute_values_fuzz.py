"""Hostile attribute values set inside real requests: no exception in the app, the store stays readable.

Each request to ``POST /attrs`` of a service under ``pulsetrace run`` carries a list of
``(key, value)`` pairs (pickled: the values are Python objects no JSON carries) that
the app sets three ways inside the request: ``span.set_attribute`` on the server span
(plain OpenTelemetry), as keyword attributes of ``business_span("order.create", ...)``
and through ``set_business_attributes``, plus ``set_attribute`` on the business span.
Keys are arbitrary text (empty, very long, non-latin, dotted); values are huge
strings, NUL and bidi characters, non-UTF-8 bytes, NaN and ±inf, integers beyond 64 bits,
``None``, booleans, and lists, tuples and dicts nested in each other.

Promised and asserted: every request is answered 200 (nothing the agent does with a
value raises into the app); every request's server and business spans reach the
store (a value the agent cannot keep is dropped or converted, not the span); and
afterwards every stored span is well-formed, its X-Ray documents validate against
AWS's schema, and ``pulsetrace traces --json`` / ``traces show --json`` parse.

Lone surrogates (``"\\ud800"``: a Python ``str`` that is not valid Unicode text) are
kept out of the generated values while they lose whole batches of spans in the local
store; ``test_a_lone_surrogate_value_loses_no_spans`` pins that (expected to fail until
``agent/store.py`` stores them; then put them back into ``leaf``).
"""

from __future__ import annotations

import math
import time
import pickle
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzService, assert_store_valid
from tests.integration.service_runner import all_spans, wait_for, write_config
from tests.reliability.support import start_rel_service, stop_tree

keys = st.one_of(
    st.text(max_size=40), st.sampled_from(["", ".", "payment.method", "user.id", "a" * 300, "ключ", "k\x00ey"]),
    st.text(st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=20),
)
leaf = st.one_of(
    st.text(max_size=200),
    # lone surrogates (not valid UTF-8) are pinned by test_a_lone_surrogate_value_loses_no_spans below
    st.sampled_from(["\x00", "\u202e", "😀" * 50, "\ufeff", "a\u0300\u0300\u0300"]),
    st.binary(max_size=64),
    st.sampled_from([b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.integers(min_value=-(2 ** 200), max_value=2 ** 200),
    st.none(),
    st.booleans(),
    st.integers(20_000, 300_000).map(lambda n: "x" * n),
)
values = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                    st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
pairs = st.lists(st.tuples(keys, values), min_size=1, max_size=5)


#: A word run of 20,000 characters and a colon. Found by this fuzz: the PII scrubber's secret-pair
#: regex once backtracked cubically over it (about 2 minutes of one core, holding the GIL on the
#: export thread, so the whole app stalled).
REDOS_VALUE = "a" * 20_000 + ":"


def test_hostile_attribute_values_never_break_the_request_or_the_store(fuzz_service: FuzzService) -> None:
    sent: list[int] = []

    @example(items=[("note", REDOS_VALUE)])
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(items=pairs)
    def one(items: list[tuple[str, Any]]) -> None:
        n = len(sent) + 1
        r = httpx.post(f"{fuzz_service.url}/attrs?fz={n}", content=pickle.dumps(items), timeout=10)
        assert r.status_code == 200, (r.status_code, r.text[:500], items)
        sent.append(n)

    one()

    def by_request() -> dict[int, set[str]]:
        server_of: dict[str, int] = {}
        spans = all_spans(fuzz_service.store)
        for s in spans:
            if s.kind == "server":
                for v in parse_qs(str(s.attributes.get("url.query", ""))).get("fz", []):
                    server_of[s.trace_id] = int(v)
        out: dict[int, set[str]] = {}
        for s in spans:
            if s.trace_id in server_of:
                out.setdefault(server_of[s.trace_id], set()).add(s.kind if s.kind == "server" else s.name)
        return out

    def complete() -> dict[int, set[str]] | None:
        got = by_request()
        return got if all({"server", "order.create"} <= got.get(n, set()) for n in sent) else None

    got = wait_for(complete, timeout=30) or by_request()
    incomplete = {n: sorted(got.get(n, set())) for n in sent if not {"server", "order.create"} <= got.get(n, set())}
    assert not incomplete, f"requests whose spans did not all reach the store: {incomplete}"
    assert_store_valid(fuzz_service.store)


def test_a_long_word_run_with_a_colon_does_not_stall_the_app(tmp_path: Path) -> None:
    """One attribute value (20,000 word characters and a colon) must not stop the service answering."""
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "store")
    svc = start_rel_service(tmp_path, cfg)
    try:
        assert httpx.post(f"{svc.url}/attrs", content=pickle.dumps([("note", REDOS_VALUE)]), timeout=10).status_code == 200
        worst = 0.0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                httpx.get(f"{svc.url}/hello", timeout=5.0)
            except httpx.TimeoutException:
                worst = 5.0
                break
            worst = max(worst, time.monotonic() - started)
        assert worst < 1.0, f"/hello took {worst:.2f} s while the agent scrubbed one attribute"
    finally:
        stop_tree(svc)


def test_a_lone_surrogate_value_loses_no_spans(tmp_path: Path) -> None:
    """A value that is not valid Unicode text is converted or dropped; the span, and its batch, are stored."""
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, extra={"tracing": {"export_interval": "1s"}})
    svc = start_rel_service(tmp_path, cfg)
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(5):  # all within one export interval: one batch
                assert client.get(f"{svc.url}/hello?before={i}").status_code == 200
            bad = [("note", "\ud800"), ("list", ["ok", "a\udfffb"])]
            assert client.post(f"{svc.url}/attrs?case=surrogate", content=pickle.dumps(bad)).status_code == 200
            for i in range(5):
                assert client.get(f"{svc.url}/hello?after={i}").status_code == 200

        def queries() -> set[str]:
            return {str(s.attributes.get("url.query")) for s in all_spans(store) if s.kind == "server"}

        expected = {f"before={i}" for i in range(5)} | {f"after={i}" for i in range(5)} | {"case=surrogate"}
        assert wait_for(lambda: expected <= queries(), timeout=5), sorted(expected - queries())
    finally:
        stop_tree(svc)
