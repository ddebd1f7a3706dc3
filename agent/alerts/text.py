"""Text within a service's limits: truncation that never cuts a character in two, ASCII subjects, numbers.

Standard library only (the CloudWatch forwarder Lambda inlines this module). Pure functions.
"""

from __future__ import annotations

import datetime
import unicodedata

ELLIPSIS = "…"


def _joins_previous(ch: str) -> bool:
    # A combining mark, a variation selector, a zero-width joiner or an emoji modifier belongs to
    # the character before it: cutting just before one would leave half a glyph.
    return (unicodedata.combining(ch) != 0 or ch in "\u200d\ufe0e\ufe0f"
            or "\U0001f3fb" <= ch <= "\U0001f3ff" or unicodedata.category(ch) == "Me")


def truncate(text: str, limit: int, ellipsis: str = ELLIPSIS) -> str:
    """``text`` in at most ``limit`` characters; a cut ends on a whole character plus ``ellipsis``.

    Never leaves a lone surrogate, a combining mark without its base, or half of a joined
    emoji sequence (the cut backs up to the start of the cluster).
    """
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    if limit <= len(ellipsis):
        ellipsis = ""
    cut = limit - len(ellipsis)
    while cut > 0 and (_joins_previous(text[cut]) or text[cut - 1] == "\u200d"
                       or "\ud800" <= text[cut - 1] <= "\udbff"):
        cut -= 1
    return text[:cut].rstrip() + ellipsis


def one_line(text: str) -> str:
    """Control characters and line breaks become spaces."""
    if text.isprintable():  # the common case, at C speed: no control character, no line break
        return " ".join(text.split())
    return " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())


def ascii_subject(text: str, limit: int = 100) -> str:
    """An SNS ``Subject``: ASCII, one line, starting with a letter, digit or punctuation, under ``limit``.

    Accents are folded (``é`` → ``e``), anything else non-ASCII is dropped.
    """
    folded = unicodedata.normalize("NFKD", one_line(text)).encode("ascii", "ignore").decode("ascii")
    folded = " ".join(folded.split()).lstrip()
    return truncate(folded, limit - 1, "...") or "pulsetrace alert"


def fmt_number(value: object) -> str:
    """``12.0`` → ``12``, ``0.123456`` → ``0.1235``; strings as they are; ``None`` → ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def iso_time(epoch: float) -> str:
    """``2026-12-03T11:50:39Z`` (UTC, seconds)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
