"""The SQL sanitizer: literals become ``?``, structure stays, it never raises."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulsetrace.instrumentation.sql import sanitize_sql


@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT * FROM users WHERE email = 'bob@example.com' AND id = 42",
     "SELECT * FROM users WHERE email = ? AND id = ?"),
    ("select 'it''s' from t", "select ? from t"),
    ("INSERT INTO a VALUES (E'it\\'s', N'x', X'ff', 0xFF, .5, 1.5e-3)", "INSERT INTO a VALUES (?, ?, ?, ?, ?, ?)"),
    ("UPDATE t SET a = %s WHERE b = :name AND c = ? AND d = $1", "UPDATE t SET a = %s WHERE b = :name AND c = ? AND d = $1"),
    ('SELECT "t1"."col2", `x1` FROM t1 JOIN table2 ON t1.id = table2.t1_id',
     'SELECT "t1"."col2", `x1` FROM t1 JOIN table2 ON t1.id = table2.t1_id'),
    ("SELECT $$card 4111111111111111$$, $fn$ body $fn$ FROM t", "SELECT ?, ? FROM t"),
    ("SELECT x::int, data #>> '{a,b}' FROM t LIMIT 10", "SELECT x::int, data #>> ? FROM t LIMIT ?"),
    ("SELECT 1 -- user bob@example.com\nFROM t", "SELECT ?  \nFROM t"),
    ("SELECT /* tenant 42 */ a FROM t", "SELECT   a FROM t"),
    ("SELECT a FROM t WHERE b IN (1, 2, -3)", "SELECT a FROM t WHERE b IN (?, ?, -?)"),
])
def test_literals_become_placeholders_and_identifiers_stay(statement: str, expected: str) -> None:
    assert sanitize_sql(statement) == expected


def test_unterminated_quote_or_comment_redacts_the_rest() -> None:
    assert sanitize_sql("SELECT a FROM t WHERE p = 'hunter2 AND x = 1") == "SELECT a FROM t WHERE p = ?"
    assert sanitize_sql("SELECT a /* secret 4111 1111") == "SELECT a"


def test_statement_without_literals_is_returned_as_is() -> None:
    stmt = "SELECT name FROM users WHERE id = $1"
    assert sanitize_sql(stmt) == stmt


def test_non_string_input_fails_closed() -> None:
    assert sanitize_sql(b"SELECT 'x'") == "?"  # type: ignore[arg-type]
    assert sanitize_sql(None) == "?"  # type: ignore[arg-type]


_secret = st.text(alphabet=string.ascii_letters + string.digits + " @.-_!", min_size=6, max_size=30)


@settings(max_examples=200, deadline=None)
@given(secret=_secret, number=st.integers(min_value=10_000, max_value=10**18),
       quote=st.sampled_from(["'{}'", "E'{}'", "$${}$$", "$q${}$q$"]))
def test_no_literal_survives(secret: str, number: int, quote: str) -> None:
    """Whatever a string or number literal holds, none of it is left in the sanitized statement."""
    literal = quote.format(secret.replace("'", "''") if "'" in quote else secret.replace("$", ""))
    stmt = f"SELECT a, b FROM payments WHERE note = {literal} AND amount > {number} ORDER BY a"
    out = sanitize_sql(stmt)
    assert str(number) not in out
    assert secret.strip() == "" or secret not in out
    assert out.startswith("SELECT a, b FROM payments WHERE note = ?")
    assert out.endswith("AND amount > ? ORDER BY a")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(sanitize_sql(text), str)
