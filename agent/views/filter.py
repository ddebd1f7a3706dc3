"""X-Ray filter expressions (a subset) over local traces: one parser for ``traces --filter`` and the UI.

The language is the X-Ray console's, so an expression pasted here works there and back:

* simple keywords compared with a value: ``responsetime``, ``duration`` (seconds) and
  ``http.status`` (numbers: ``= != < <= > >=``); ``http.url``, ``http.method``,
  ``http.useragent``, ``http.clientip``, ``user`` (strings: ``= !=`` and ``CONTAINS``,
  ``BEGINSWITH``, ``ENDSWITH``); ``ok``, ``error``, ``fault``, ``throttle`` (booleans:
  alone, negated, or ``= true`` / ``!= false``);
* ``annotation.KEY`` (or ``annotation[KEY]``) compared with a number, a string or a
  boolean, or alone (the trace has that annotation);
* ``service("name")`` and ``edge("source", "target")``, each optionally followed by
  ``{ expression }`` evaluated on that node or edge alone (``service("db") { fault }``);
* ``AND``, ``OR``, ``NOT`` / ``!`` and parentheses; ``NOT`` binds tighter than ``AND``,
  ``AND`` tighter than ``OR``. Strings are double-quoted with ``\\"`` and ``\\\\`` escapes.

What a trace answers is :class:`Facts`; :mod:`pulsetrace.views.trace_facts` gives it from
the X-Ray documents a trace's spans translate to, so ``error``, ``fault``, annotations and
node names mean what they mean in X-Ray.

Pure: no I/O. :func:`parse` raises only :class:`FilterSyntaxError` (message and 1-based
column) whatever the text; evaluation never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pulsetrace.views.filter_ops import (
    Facts,
    Test,
    annotation_test,
    flag_test,
    has_annotation,
    negate,
    number_test,
    string_test,
    tests_and,
    tests_or,
)

__all__ = ["FilterSyntaxError", "Filter", "Facts", "parse", "quote", "node_filter", "edge_filter", "KEYWORDS",
           "MAX_LENGTH"]

#: Longer expressions are refused (the X-Ray console's own limit is of this order).
MAX_LENGTH = 2000
#: Nesting deeper than this is refused (keeps the recursive parser far from Python's limit).
MAX_DEPTH = 50

NUMBER_KEYWORDS = ("responsetime", "duration", "http.status")
STRING_KEYWORDS = ("http.url", "http.method", "http.useragent", "http.clientip", "user")
BOOLEAN_KEYWORDS = ("ok", "error", "fault", "throttle")
KEYWORDS = NUMBER_KEYWORDS + STRING_KEYWORDS + BOOLEAN_KEYWORDS
#: Keywords that mean something inside ``service(...) { }`` and ``edge(...) { }``.
NODE_KEYWORDS = ("responsetime", "duration", "ok", "error", "fault", "throttle")

NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=")
STRING_OPS = ("=", "!=", "CONTAINS", "BEGINSWITH", "ENDSWITH")
_WORD_OPS = ("CONTAINS", "BEGINSWITH", "ENDSWITH")


class FilterSyntaxError(ValueError):
    """A filter expression that does not parse: ``message`` and the 1-based ``column``."""

    def __init__(self, message: str, column: int) -> None:
        # One line whatever the expression held: a newline or control character it quotes is escaped.
        message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
        super().__init__(f"{message} at column {column}")
        self.message = message
        self.column = column


# -- tokens ---------------------------------------------------------------------------------------

TokenKind = Literal["ident", "string", "number", "op", "punct", "end"]


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str
    value: Any
    column: int


_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_SPACE = " \t\r\n"


def _show(text: str) -> str:
    """A token as an error message quotes it: short, control characters made visible."""
    text = text if len(text) <= 30 else text[:29] + "…"
    return repr(text)


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch in _SPACE:
            i += 1
            continue
        if ch == '"':
            j = i + 1
            chars: list[str] = []
            while True:
                if j >= n:
                    raise FilterSyntaxError("unterminated string", col)
                c = text[j]
                if c == "\\":
                    if j + 1 >= n:
                        raise FilterSyntaxError("unterminated string", col)
                    nxt = text[j + 1]
                    if nxt not in '"\\':
                        raise FilterSyntaxError(f"unknown escape \\{nxt} (only \\\" and \\\\)", j + 1)
                    chars.append(nxt)
                    j += 2
                    continue
                if c == '"':
                    break
                chars.append(c)
                j += 1
            out.append(_Token("string", text[i:j + 1], "".join(chars), col))
            i = j + 1
            continue
        two = text[i:i + 2]
        if two in ("!=", "<=", ">="):
            out.append(_Token("op", two, two, col))
            i += 2
            continue
        if ch in "=<>":
            out.append(_Token("op", ch, ch, col))
            i += 1
            continue
        if ch in "(){}[],!":
            out.append(_Token("punct", ch, ch, col))
            i += 1
            continue
        m = _NUMBER.match(text, i)
        if m and (ch.isdigit() or ch in "-."):
            raw = m.group()
            try:
                value: float = float(raw)
            except ValueError:  # pragma: no cover - the pattern only matches valid floats
                raise FilterSyntaxError(f"not a number: {_show(raw)}", col) from None
            if value != value or value in (float("inf"), float("-inf")):
                raise FilterSyntaxError(f"number out of range: {_show(raw)}", col)
            out.append(_Token("number", raw, value, col))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            out.append(_Token("ident", m.group(), m.group(), col))
            i = m.end()
            continue
        raise FilterSyntaxError(f"unexpected character {_show(ch)}", col)
    out.append(_Token("end", "", None, n + 1))
    return out


# -- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """One node of a parsed expression; ``test`` judges a trace's facts. ``cost``: 1 for what the
    spans answer directly (flags, duration), 2 for what needs the X-Ray documents, 3 for the
    service graph; AND and OR try the cheaper side first (the verdict is the same either way)."""

    test: Test
    text: str
    cost: int = 2


@dataclass(frozen=True)
class Filter:
    """A parsed filter expression: ``matches(facts)`` is the verdict; ``source`` the text parsed."""

    source: str
    _root: _Node | None = field(repr=False, default=None)

    def matches(self, facts: Facts) -> bool:
        if self._root is None:
            return True
        try:
            return bool(self._root.test(facts))
        except Exception:  # odd data in a trace must never break a listing: it just does not match
            return False

    @property
    def empty(self) -> bool:
        return self._root is None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.toks[self.pos]

    def next(self) -> _Token:
        tok = self.toks[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def word(self, *words: str) -> bool:
        t = self.tok
        return t.kind == "ident" and t.text.upper() in words

    def punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == ch

    def expect(self, ch: str, what: str) -> _Token:
        if not self.punct(ch):
            raise FilterSyntaxError(f"expected {what}, found {self.found()}", self.tok.column)
        return self.next()

    def found(self) -> str:
        t = self.tok
        return "the end of the expression" if t.kind == "end" else _show(t.text)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterSyntaxError(f"expression nested more than {MAX_DEPTH} deep", self.tok.column)

    # expr := and ("OR" and)*
    def expr(self, scope: str) -> _Node:
        self.nest()
        left = self.conj(scope)
        while self.word("OR"):
            self.next()
            right = self.conj(scope)
            left = _or(left, right)
        self.depth -= 1
        return left

    def conj(self, scope: str) -> _Node:
        left = self.neg(scope)
        while self.word("AND"):
            self.next()
            right = self.neg(scope)
            left = _and(left, right)
        return left

    def neg(self, scope: str) -> _Node:
        if self.word("NOT") or self.punct("!"):
            self.next()
            self.nest()
            inner = self.neg(scope)
            self.depth -= 1
            return _Node(negate(inner.test), f"NOT {inner.text}", inner.cost)
        return self.primary(scope)

    def primary(self, scope: str) -> _Node:
        t = self.tok
        if self.punct("("):
            self.next()
            inner = self.expr(scope)
            self.expect(")", "')'")
            return _Node(inner.test, f"({inner.text})", inner.cost)
        if t.kind != "ident":
            raise FilterSyntaxError(f"expected a keyword, service(...), edge(...), NOT or '(', found {self.found()}",
                                    t.column)
        low = t.text.lower()
        if low in ("service", "edge") and self.toks[self.pos + 1].kind == "punct" \
                and self.toks[self.pos + 1].text == "(":
            if scope != "trace":
                raise FilterSyntaxError(f"{low}(...) cannot be nested inside another {{ }}", t.column)
            return self.complex(low)
        if t.text.upper() in ("AND", "OR"):
            raise FilterSyntaxError(f"{t.text.upper()} needs an expression before it", t.column)
        return self.comparison(scope)

    def complex(self, kind: str) -> _Node:
        start = self.next()
        self.expect("(", "'('")
        names: list[str] = []
        while not self.punct(")"):
            if names:
                self.expect(",", "',' or ')'")
            t = self.tok
            if t.kind != "string":
                raise FilterSyntaxError(f"{kind}(...) takes double-quoted names, found {self.found()}", t.column)
            names.append(str(self.next().value))
        self.expect(")", "')'")
        want = 2 if kind == "edge" else 1
        if len(names) != want:
            raise FilterSyntaxError(f"{kind}(...) takes {want} name{'s' if want > 1 else ''}, got {len(names)}",
                                    start.column)
        inner: _Node | None = None
        if self.punct("{"):
            self.next()
            if self.punct("}"):
                raise FilterSyntaxError("empty { }", self.tok.column)
            inner = self.expr("node")
            self.expect("}", "'}'")
        key = names[0] if kind == "service" else (names[0], names[1])
        text = f"{kind}({', '.join(quote(n) for n in names)})" + (f" {{ {inner.text} }}" if inner else "")

        def test(facts: Facts, key: Any = key, kind: str = kind, inner: _Node | None = inner) -> bool:
            scopes = facts.nodes(key) if kind == "service" else facts.edges(key)
            if inner is None:
                return bool(scopes)
            return any(inner.test(s) for s in scopes)

        return _Node(test, text, 3)

    def comparison(self, scope: str) -> _Node:
        t = self.next()
        name = t.text
        low = name.lower()
        if low == "annotation" and self.punct("["):
            self.next()
            k = self.tok
            if k.kind not in ("ident", "string", "number"):
                raise FilterSyntaxError(f"expected an annotation key, found {self.found()}", k.column)
            self.next()
            self.expect("]", "']'")
            return self.annotation(str(k.value if k.kind == "string" else k.text), t.column, scope)
        if low.startswith("annotation.") and len(low) > len("annotation."):
            return self.annotation(name[len("annotation."):], t.column, scope)
        if low not in KEYWORDS:
            raise FilterSyntaxError(f"unknown keyword {_show(name)} (expected one of {', '.join(KEYWORDS)}, "
                                    "annotation.KEY, service(\"name\") or edge(\"a\", \"b\"))", t.column)
        if scope != "trace" and low not in NODE_KEYWORDS:
            raise FilterSyntaxError(f"{low} cannot be used inside {{ }} (only {', '.join(NODE_KEYWORDS)})", t.column)
        if low in BOOLEAN_KEYWORDS:
            return self.boolean(low)
        op = self.operator(low)
        v = self.tok
        if low in NUMBER_KEYWORDS:
            if v.kind != "number":
                raise FilterSyntaxError(f"{low} is compared with a number, found {self.found()}", v.column)
            self.next()
            number = float(v.value)
            return _Node(number_test(low, op, number), f"{low} {op} {v.text}", 1 if low == "duration" else 2)
        if v.kind != "string":
            raise FilterSyntaxError(f"{low} is compared with a double-quoted string, found {self.found()}", v.column)
        self.next()
        s = str(v.value)
        return _Node(string_test(low, op, s), f"{low} {op} {quote(s)}")

    def operator(self, keyword: str) -> str:
        t = self.tok
        allowed = NUMBER_OPS if keyword in NUMBER_KEYWORDS else STRING_OPS
        if t.kind == "op" or (t.kind == "ident" and t.text.upper() in _WORD_OPS):
            op = t.text.upper()
            if op not in allowed:
                raise FilterSyntaxError(f"{keyword} cannot be compared with {t.text} (use {' '.join(allowed)})",
                                        t.column)
            self.next()
            return op
        raise FilterSyntaxError(f"expected an operator after {keyword} ({' '.join(allowed)}), found {self.found()}",
                                t.column)

    def boolean(self, keyword: str) -> _Node:
        if self.tok.kind == "op":
            op = self.tok
            if op.text not in ("=", "!="):
                raise FilterSyntaxError(f"{keyword} is true or false: use = or !=, not {op.text}", op.column)
            self.next()
            v = self.tok
            if not (v.kind == "ident" and v.text.lower() in ("true", "false")):
                raise FilterSyntaxError(f"{keyword} is compared with true or false, found {self.found()}", v.column)
            self.next()
            want = (v.text.lower() == "true") == (op.text == "=")
            return _Node(flag_test(keyword, want), f"{keyword} {op.text} {v.text.lower()}", 1)
        return _Node(flag_test(keyword, True), keyword, 1)

    def annotation(self, key: str, column: int, scope: str) -> _Node:
        if scope != "trace":
            raise FilterSyntaxError("annotations cannot be used inside { }", column)
        label = f"annotation.{key}" if _IDENT.fullmatch(key) else f"annotation[{quote(key)}]"
        t = self.tok
        if not (t.kind == "op" or (t.kind == "ident" and t.text.upper() in _WORD_OPS)):
            return _Node(has_annotation(key), label)
        op = t.text.upper()
        self.next()
        v = self.tok
        value: object
        if v.kind == "number":
            value = float(v.value)
            if op not in NUMBER_OPS:
                raise FilterSyntaxError(f"{op} compares strings, found the number {v.text}", v.column)
        elif v.kind == "string":
            value = str(v.value)
        elif v.kind == "ident" and v.text.lower() in ("true", "false"):
            value = v.text.lower() == "true"
            if op not in ("=", "!="):
                raise FilterSyntaxError(f"a boolean annotation is compared with = or !=, not {op}", t.column)
        else:
            raise FilterSyntaxError(f"expected a number, a double-quoted string, true or false, found {self.found()}",
                                    v.column)
        if isinstance(value, str) and op in ("<", "<=", ">", ">="):
            raise FilterSyntaxError(f"{op} compares numbers, found a string", v.column)
        self.next()
        shown = quote(value) if isinstance(value, str) else v.text.lower()
        return _Node(annotation_test(key, op, value), f"{label} {op} {shown}")


def _and(a: _Node, b: _Node) -> _Node:
    first, second = (a, b) if a.cost <= b.cost else (b, a)
    return _Node(tests_and(first.test, second.test), f"{a.text} AND {b.text}", max(a.cost, b.cost))


def _or(a: _Node, b: _Node) -> _Node:
    first, second = (a, b) if a.cost <= b.cost else (b, a)
    return _Node(tests_or(first.test, second.test), f"{a.text} OR {b.text}", max(a.cost, b.cost))


def parse(text: str | None) -> Filter:
    """The filter for ``text``; an empty or blank text matches every trace.

    Raises :class:`FilterSyntaxError` (and nothing else) when the text is not a filter expression.
    """
    if text is None or not text.strip():
        return Filter(text or "")
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    try:
        p = _Parser(text)
        root = p.expr("trace")
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps well below the limit
        raise FilterSyntaxError("expression nested too deeply", 1) from None
    if p.tok.kind != "end":
        t = p.tok
        hint = " (join conditions with AND or OR)" if t.kind in ("ident", "string", "number") else ""
        raise FilterSyntaxError(f"unexpected {p.found()}{hint}", t.column)
    return Filter(text, root)


def quote(value: str) -> str:
    """``value`` as a filter-expression string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_filter(name: str) -> str:
    """The expression for the traces through one service-map node, as the X-Ray console writes it."""
    return f"service({quote(name)})"


def edge_filter(source: str, target: str) -> str:
    return f"edge({quote(source)}, {quote(target)})"
