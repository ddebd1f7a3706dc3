"""Property-based fuzzing of the filter parser: whatever the text, parsing raises only the documented
syntax error (with a column inside the text, or just past it), and a parsed filter never raises
while judging a trace."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsetrace.views.filter import KEYWORDS, MAX_LENGTH, FilterSyntaxError, parse
from tests.agent.views.test_filter_expressions import FACTS

_PIECES = [*KEYWORDS, "AND", "OR", "NOT", "!", "(", ")", "{", "}", "[", "]", ",", "=", "!=", "<", "<=", ">", ">=",
           "CONTAINS", "BEGINSWITH", "ENDSWITH", "true", "false", "annotation.", "annotation[", 'service("',
           'edge("', "service(", "edge(", '"', '\\"', "\\", "1", "-2.5", "1e3", ".5", "annotation.payment_method",
           '"upi"', '"шлюз"', '"\u202e"', "\x00", "\n", " ", "  ", "é", "北"]

tokens = st.lists(st.sampled_from(_PIECES), max_size=40).map(" ".join)
glued = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
anything = st.text(max_size=200)

_SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    try:
        f = parse(text)
    except FilterSyntaxError as exc:
        assert 1 <= exc.column <= max(len(text), MAX_LENGTH) + 1
        assert str(exc).endswith(f" at column {exc.column}")
        assert exc.message and "\n" not in exc.message.replace("\\n", "")
        return
    for facts in FACTS.values():
        assert f.matches(facts) in (True, False)


@_SETTINGS
@given(tokens)
def test_token_soup_parses_or_fails_with_the_syntax_error(text: str) -> None:
    _check(text)


@_SETTINGS
@given(glued)
def test_glued_tokens_parse_or_fail_with_the_syntax_error(text: str) -> None:
    _check(text)


@_SETTINGS
@given(anything)
def test_any_text_parses_or_fails_with_the_syntax_error(text: str) -> None:
    _check(text)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["(", "NOT ", "!", "service(\"a\") { "]))
def test_deep_nesting_is_a_syntax_error_not_a_crash(depth: int, opener: str) -> None:
    _check(opener * depth + "error")


def test_a_control_character_in_a_bad_escape_is_shown_escaped_on_one_line() -> None:
    try:
        parse('annotation.a = "x\\\n"')
    except FilterSyntaxError as exc:
        assert "\n" not in str(exc) and "\\n" in exc.message
    else:
        raise AssertionError("a backslash before a newline is not an escape the syntax knows")
