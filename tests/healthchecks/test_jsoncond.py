"""``json_condition``: the tiny expression language is safe, strict to parse, and total to evaluate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulsetrace.healthchecks.jsoncond import JsonCondition


@pytest.mark.parametrize(("text", "doc", "expected"), [
    ('status == "ok"', {"status": "ok"}, True),
    ('status == "ok"', {"status": "degraded"}, False),
    ('status == "ok"', {}, False),
    ('/status/indicator == "none"', {"status": {"indicator": "none"}}, True),
    ("data.queue < 100 and healthy", {"data": {"queue": 5}, "healthy": True}, True),
    ("data.queue < 100 and healthy", {"data": {"queue": 500}, "healthy": True}, False),
    ("items.0.ok == true", {"items": [{"ok": True}]}, True),
    ("x == 1", {"x": 1.0}, True),
    ('x == "1"', {"x": 1}, False),
    ("x != null", {"x": 0}, True),
    ("x >= 2.5", {"x": "3"}, False),  # a string is not compared with a number
    ("/a~1b == 1", {"a/b": 1}, True),
    ("s == 'it\\'s'", {"s": "it's"}, True),
])
def test_condition_holds(text: str, doc: object, expected: bool) -> None:
    assert JsonCondition.parse(text).holds(doc) is expected


@pytest.mark.parametrize("text", ["", "== 1", "a ==", "a == b", "a == 1 or b == 2", "a.. == 1",
                                  '__import__("os").system("x")', "a == 1 and", "x" * 600])
def test_invalid_conditions_are_rejected_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError):
        JsonCondition.parse(text)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(doc=json_values)
def test_evaluation_never_raises(doc: object) -> None:
    for text in ("a == 1", "a.b < 2 and c", "/0/x >= \"s\"", "a != null"):
        assert JsonCondition.parse(text).holds(doc) in (True, False)
