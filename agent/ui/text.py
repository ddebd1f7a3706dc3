"""How stored text is shown: inert, bounded, and never able to reorder the page around it.

Jinja2's autoescaping stops markup (``<script>`` is shown, not run). On top of that, text
from spans (names, attributes, messages) can hold control characters and Unicode bidi
controls (U+202E RIGHT-TO-LEFT OVERRIDE and friends) that would reorder what follows
them on screen: :func:`visible` shows those as ``\\u202e``-style escapes. Very long values
are cut for tables (:func:`short`) with the full length stated; right-to-left scripts
themselves are kept, inside elements the stylesheet isolates (``unicode-bidi: isolate``).

Filters only: pure functions registered on the Jinja environment.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from jinja2 import Environment

from pulsetrace.views.units import format_seconds

__all__ = ["visible", "short", "install_filters"]

# C0 and C1 controls except tab and newline, DEL, the bidi embeddings/overrides/isolates and marks,
# zero-width and line/paragraph separators.
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def visible(value: object) -> str:
    """``value`` as text with every invisible or reordering character shown as an escape."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str) \
        if isinstance(value, (dict, list)) else str(value)
    return _HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def short(value: object, limit: int = 120) -> str:
    """:func:`visible`, cut to ``limit`` characters with the full length said."""
    text = visible(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def _ms(seconds_or_ms: float | None, scale: float = 1.0) -> str:
    if seconds_or_ms is None:
        return "-"
    ms = seconds_or_ms * scale
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    s = max(0.0, time.time() - epoch)
    if s < 90:
        return f"{s:.0f}s ago"
    if s < 5400:
        return f"{s / 60:.0f}m ago"
    if s < 172800:
        return f"{s / 3600:.1f}h ago"
    return f"{s / 86400:.1f}d ago"


def _pct(value: float | None, digits: int = 3) -> str:
    return "no data" if value is None else f"{value:.{digits}f}%"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return visible(value)


def install_filters(env: Environment) -> None:
    env.filters.update(visible=visible, short=short, ms=_ms, when=_when, ago=_ago, pct=_pct, num=_num,
                       dur=format_seconds)
