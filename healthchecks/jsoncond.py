"""``json_condition``: a tiny, safe condition on a JSON response body (no ``eval``).

Grammar (one line)::

    condition := clause ( "and" clause )*
    clause    := path [ op literal ]          # a bare path means "present and truthy"
    path      := name ( "." name | "." index )*  |  JSON pointer "/a/b/0"
    op        := == | != | < | <= | > | >=
    literal   := "text" | 'text' | number | true | false | null

Examples: ``status == "ok"``, ``/status/indicator == "none"``, ``data.queue_depth < 100 and
healthy``. A path that does not resolve makes its clause false; ``<``/``>`` compare numbers
with numbers and strings with strings only. Parsing raises ``ValueError`` with a short
reason (shown by ``pulsetrace config validate``); evaluation never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\s*(?:
    (?P<op>==|!=|<=|>=|<|>)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<word>[A-Za-z_/][\w./~\-]*)
)""", re.VERBOSE)
_OPS = {"==", "!=", "<", "<=", ">", ">="}
_LITERAL_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
MAX_LENGTH = 500


@dataclass(frozen=True)
class Clause:
    path: tuple[str, ...]
    op: str | None
    value: Any

    def holds(self, doc: Any) -> bool:
        found, actual = _resolve(doc, self.path)
        if not found:
            return False
        if self.op is None:
            return bool(actual)
        if self.op == "==":
            return _equal(actual, self.value)
        if self.op == "!=":
            return not _equal(actual, self.value)
        comparable = (_is_number(actual) and _is_number(self.value)) or (
            isinstance(actual, str) and isinstance(self.value, str))
        if not comparable:
            return False
        if self.op == "<":
            return bool(actual < self.value)
        if self.op == "<=":
            return bool(actual <= self.value)
        if self.op == ">":
            return bool(actual > self.value)
        return bool(actual >= self.value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _resolve(doc: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = doc
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _parse_path(word: str) -> tuple[str, ...]:
    if word.startswith("/"):  # RFC 6901 pointer
        return tuple(p.replace("~1", "/").replace("~0", "~") for p in word[1:].split("/"))
    parts = tuple(word.split("."))
    if any(not p for p in parts):
        raise ValueError(f"empty segment in path {word!r}")
    return parts


@dataclass(frozen=True)
class JsonCondition:
    """A parsed condition; ``holds(doc)`` is True when every clause holds."""

    text: str
    clauses: tuple[Clause, ...]

    @classmethod
    def parse(cls, text: str) -> JsonCondition:
        if len(text) > MAX_LENGTH:
            raise ValueError(f"longer than {MAX_LENGTH} characters")
        tokens: list[tuple[str, str]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if not m or m.end() == pos:
                raise ValueError(f"unexpected text at column {pos + 1}: {stripped[pos:pos + 12]!r}")
            kind = m.lastgroup or ""
            tokens.append((kind, m.group(kind)))
            pos = m.end()
        if not tokens:
            raise ValueError("empty condition")
        clauses: list[Clause] = []
        i = 0
        while True:
            if i >= len(tokens) or tokens[i][0] != "word" or tokens[i][1] in ("and", *_LITERAL_WORDS):
                raise ValueError("expected a path (e.g. status or /status/indicator)")
            path = _parse_path(tokens[i][1])
            i += 1
            op: str | None = None
            value: Any = None
            if i < len(tokens) and tokens[i][0] == "op":
                op = tokens[i][1]
                i += 1
                if i >= len(tokens):
                    raise ValueError(f"expected a value after {op}")
                value = _literal(*tokens[i])
                i += 1
            clauses.append(Clause(path, op, value))
            if i == len(tokens):
                break
            if tokens[i] != ("word", "and"):
                raise ValueError(f"expected 'and' or the end, got {tokens[i][1]!r}")
            i += 1
        return cls(text, tuple(clauses))

    def holds(self, doc: Any) -> bool:
        try:
            return all(c.holds(doc) for c in self.clauses)
        except Exception:  # e.g. a pathological comparison: the condition simply does not hold
            return False


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        if text.startswith("'"):
            text = '"' + text[1:-1].replace('\\\'', "'").replace('"', '\\"') + '"'
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"bad string literal {text!r}") from None
    if kind == "num":
        return json.loads(text)
    if kind == "word" and text in _LITERAL_WORDS:
        return _LITERAL_WORDS[text]
    raise ValueError(f"expected a value (\"text\", a number, true, false or null), got {text!r}")
