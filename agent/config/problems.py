"""What a configuration problem is, and the value syntaxes every layer shares (durations).

A :class:`Problem` is one line of ``pulsetrace config validate``: the key path, what is
wrong, the value seen and what was expected. :class:`ConfigError` carries all of them.
A problem line never shows a credential: what was seen and what is wrong go through
:func:`pulsetrace.config.secrets.mask_text` when the line is written, whoever built the
problem. Pure data: no I/O, nothing imported from pulsetrace outside ``config``.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from dataclasses import dataclass

from pulsetrace.config.secrets import mask_text

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


@dataclass(frozen=True)
class Problem:
    key: str
    problem: str
    got: str = ""
    expected: str = ""

    def __str__(self) -> str:
        extra = []
        if self.got:
            extra.append(f"got {mask_text(self.got)}")
        if self.expected:
            extra.append(f"expected {self.expected}")
        tail = f" ({', '.join(extra)})" if extra else ""
        # One problem, one line: a key or value holding a newline must not start another.
        return _one_line(f"{_show_key(self.key)}: {mask_text(self.problem)}{tail}")


def _show_key(key: str) -> str:
    """The key path as written, quoted when it starts or ends with a blank (``' '`` is a key YAML allows)."""
    if not key:
        return "<root>"
    if key != key.strip():
        return repr(key)
    return key


def _one_line(text: str) -> str:
    return _CONTROL_RE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` has one entry per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_duration(value: object) -> float:
    """``"500ms"`` → 0.5, ``"2m"`` → 120.0, ``15`` → 15.0. Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        if not math.isfinite(float(value)) or value < 0:
            raise ValueError("not a duration")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("not a duration")


def did_you_mean(text: str, choices: typing.Iterable[str]) -> str:
    """``", did you mean 'service'?"`` when one choice is close to ``text``, else ``""``."""
    close = difflib.get_close_matches(text, list(choices), n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


def format_duration(seconds: float) -> str:
    """The shortest exact way to write ``seconds`` in the config's duration syntax (``"2d"``, ``"500ms"``)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if float(seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"
