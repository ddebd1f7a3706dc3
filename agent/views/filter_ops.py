"""What each comparison of a filter expression means, as small closures over :class:`Facts`.

:mod:`pulsetrace.views.filter` parses; this module judges. A comparison whose sides do not
have the same type is false, never an error (``annotation.amount = "250"`` does not match
the number 250, as in X-Ray). Pure; nothing here raises on odd values.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Facts", "Test", "negate", "tests_and", "tests_or", "number_test", "string_test", "flag_test",
           "has_annotation", "annotation_test"]


class Facts(Protocol):
    """What an expression asks of a trace (or, inside ``{ }``, of one node or edge)."""

    def number(self, key: str) -> float | None: ...
    def string(self, key: str) -> str | None: ...
    def flag(self, key: str) -> bool: ...
    def annotation(self, key: str) -> list[object]: ...
    def nodes(self, name: str) -> Sequence[Facts]: ...
    def edges(self, pair: tuple[str, str]) -> Sequence[Facts]: ...


Test = Callable[[Facts], bool]

_NUMBER_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": operator.eq, "!=": operator.ne, "CONTAINS": lambda a, b: b in a,
    "BEGINSWITH": str.startswith, "ENDSWITH": str.endswith}


def cmp_number(actual: float | None, op: str, want: float) -> bool:
    return actual is not None and _NUMBER_OPS[op](actual, want)


def cmp_string(actual: str | None, op: str, want: str) -> bool:
    return actual is not None and _STRING_OPS[op](actual, want)


def cmp_annotation(values: Sequence[object], op: str, want: object) -> bool:
    """True when any of the trace's values for the key satisfies the comparison (types must agree)."""
    for v in values:
        if isinstance(want, bool):
            if isinstance(v, bool) and (v == want) == (op == "="):
                return True
        elif isinstance(want, float):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and cmp_number(float(v), op, want):
                return True
        elif isinstance(v, str) and cmp_string(v, op, str(want)):
            return True
    return False


def negate(inner: Test) -> Test:
    def test(f: Facts) -> bool:
        return not inner(f)

    return test


def number_test(key: str, op: str, want: float) -> Test:
    def test(f: Facts) -> bool:
        return cmp_number(f.number(key), op, want)

    return test


def string_test(key: str, op: str, want: str) -> Test:
    def test(f: Facts) -> bool:
        return cmp_string(f.string(key), op, want)

    return test


def flag_test(key: str, want: bool) -> Test:
    def test(f: Facts) -> bool:
        return f.flag(key) == want

    return test


def has_annotation(key: str) -> Test:
    def test(f: Facts) -> bool:
        return bool(f.annotation(key))

    return test


def annotation_test(key: str, op: str, want: object) -> Test:
    def test(f: Facts) -> bool:
        return cmp_annotation(f.annotation(key), op, want)

    return test


def tests_and(a: Test, b: Test) -> Test:
    def test(f: Facts) -> bool:
        return a(f) and b(f)

    return test


def tests_or(a: Test, b: Test) -> Test:
    def test(f: Facts) -> bool:
        return a(f) or b(f)

    return test
