"""Durations as people read them, shared by the CLI's tables and the web console. Pure."""

from __future__ import annotations

__all__ = ["format_seconds"]


def format_seconds(seconds: float | None) -> str:
    """``43m12s``, ``3h36m``, ``7d0h``, ``-8s``; ``-`` for None."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s >= 86400:
        return f"{sign}{int(s // 86400)}d{int(s % 86400 // 3600)}h"
    if s >= 3600:
        return f"{sign}{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    if s >= 60:
        return f"{sign}{int(s // 60)}m{int(s % 60):02d}s"
    return f"{sign}{s:.0f}s" if s >= 1 or s == 0 else f"{sign}{s:.1f}s"
