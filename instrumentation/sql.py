"""SQL statement sanitizer: every literal becomes ``?`` before a statement is recorded.

Used by the database span hooks (``db.statement`` / ``db.query.text`` at span time)
and by the PII scrubber (again at export time, for statements set by anyone else).
String literals (``'..'``, ``E'..'``, ``N'..'``, ``X'..'``), dollar-quoted bodies
(``$$..$$``, ``$tag$..$tag$``), numbers (decimal, float, hex) and comments are
replaced; identifiers (``"quoted"``, ```backticked```, ``t1.col2``), keywords and
placeholders (``$1``, ``%s``, ``:name``, ``?``) are kept.

When in doubt it redacts more, never less: an unterminated quote or comment
swallows the rest of the statement. :func:`sanitize_sql` never raises and runs in
one regular-expression pass.
"""

from __future__ import annotations

import re

__all__ = ["sanitize_sql"]

_TOKENS = re.compile(
    r"""
      (?P<dq>"(?:[^"]|"")*"?)                                  # "quoted identifier": kept
    | (?P<bt>`[^`]*`?)                                          # `mysql identifier`: kept
    | (?P<str>(?:(?<![\w$])[EeNnXxBbUu]&?)?'(?:[^'\\]|''|\\.)*(?:'|\Z))   # string literal, any prefix
    | (?P<dollar>\$\$.*?(?:\$\$|\Z)|\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)\$.*?(?:\$(?P=tag)\$|\Z))   # $$..$$, $t$..$t$
    | (?P<lc>--[^\n]*)                                          # line comment
    | (?P<bc>/\*.*?(?:\*/|\Z))                                  # block comment
    | (?P<num>(?<![\w$.:])(?:0[xX][0-9A-Fa-f]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w$]))
    """,
    re.VERBOSE | re.DOTALL,
)

#: Characters without which a statement cannot hold a literal or a comment.
_MAYBE_LITERAL = re.compile(r"['\"`$/\-0-9]")


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "dq" or kind == "bt":
        return match.group(0)
    if kind == "lc" or kind == "bc":
        return " "
    return "?"


def sanitize_sql(statement: str) -> str:
    """``statement`` with every literal replaced by ``?`` and comments removed. Never raises."""
    try:
        if not isinstance(statement, str):
            return "?"
        if _MAYBE_LITERAL.search(statement) is None:
            return statement
        return _TOKENS.sub(_replace, statement).strip()
    except Exception:  # a sanitizer that fails must fail closed
        return "?"
