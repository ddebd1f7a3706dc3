"""Traces as people read them: summaries, span trees, and the JSON shapes of ``pulsetrace traces``.

Pure functions over :class:`~pulsetrace.store.StoredSpan` lists (no I/O), shared by the
``traces`` CLI, the demo's summary and anything else that prints a trace. The JSON
shapes are the contract of docs/json.md; build them only through
:func:`summary_json` and :func:`span_json`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulsetrace.store import StoredSpan

__all__ = ["TraceSummary", "SpanNode", "summarize", "build_tree", "render_tree", "render_table", "summary_json",
           "span_json", "trace_json", "parse_trace_id", "xray_trace_id", "format_ms"]

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_XRAY = re.compile(r"^(?:Root=)?1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})(?:;.*)?$")
_HEX_PREFIX = re.compile(r"^[0-9a-fA-F]{1,31}$")
_KEPT_BY = ("error", "slow")
#: Indentation stops growing here (a pathological trace can be thousands of levels deep).
_MAX_INDENT = 36


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root: str
    service: str
    start: float
    duration_ms: float
    status: str
    spans: int
    tier: str | None
    kept_by: str | None
    services: tuple[str, ...] = ()

    @property
    def xray_trace_id(self) -> str:
        return xray_trace_id(self.trace_id)


@dataclass
class SpanNode:
    span: StoredSpan
    children: list[SpanNode] = field(default_factory=list)


def xray_trace_id(trace_id: str) -> str:
    """``5f84c7a1...`` (32 hex) → ``1-5f84c7a1-...`` (the X-Ray form)."""
    return f"1-{trace_id[:8]}-{trace_id[8:]}"


def parse_trace_id(text: str) -> tuple[str, bool] | None:
    """``(lower-case hex, complete)`` from a 32-hex id, an X-Ray id (``1-xxxxxxxx-yyyy...``, also as
    ``Root=...;Parent=...``) or a hex prefix (``complete`` False); ``None`` if it is none of these."""
    text = text.strip()
    if _HEX32.match(text):
        return text.lower(), True
    m = _XRAY.match(text)
    if m:
        return (m.group(1) + m.group(2)).lower(), True
    if _HEX_PREFIX.match(text):
        return text.lower(), False
    return None


def _root(spans: Sequence[StoredSpan]) -> StoredSpan:
    ids = {s.span_id for s in spans}
    parentless = [s for s in spans if s.parent_span_id is None]
    if parentless:
        return min(parentless, key=lambda s: s.start)
    # Continued from another service (remote parent) or the parent is not stored: the earliest orphan.
    orphans = [s for s in spans if s.parent_span_id not in ids]
    return min(orphans or spans, key=lambda s: s.start)


def _first_attr(root: StoredSpan, spans: Sequence[StoredSpan], key: str) -> Any:
    if key in root.attributes:
        return root.attributes[key]
    for s in spans:
        if key in s.attributes:
            return s.attributes[key]
    return None


def summarize(spans: Sequence[StoredSpan]) -> TraceSummary:
    """One trace's summary; ``spans`` must be non-empty and of one trace.

    ``status`` is ``error`` when any span failed; ``duration_ms`` covers the whole
    trace (first start to last end); ``tier`` and ``kept_by`` come from the root's
    ``sampling.tier`` / ``sampling.kept_by`` attributes (else the first span that has them).
    """
    if not spans:
        raise ValueError("a trace has at least one span")
    root = _root(spans)
    start = min(s.start for s in spans)
    end = max(s.end for s in spans)
    tier = _first_attr(root, spans, "sampling.tier")
    kept = _first_attr(root, spans, "sampling.kept_by")
    return TraceSummary(
        trace_id=root.trace_id,
        root=root.name,
        service=root.service,
        start=start,
        duration_ms=round(max(0.0, end - start) * 1000.0, 3),
        status="error" if any(s.status == "error" for s in spans) else "ok",
        spans=len(spans),
        tier=str(tier) if tier is not None else None,
        kept_by=str(kept) if kept in _KEPT_BY else None,
        services=tuple(dict.fromkeys(s.service for s in sorted(spans, key=lambda s: s.start))),
    )


def build_tree(spans: Sequence[StoredSpan]) -> list[SpanNode]:
    """The span tree(s) of one trace: roots first by start time, children by start time.

    A span whose parent is not stored (a remote parent, a dropped span) becomes a root.
    """
    nodes = {s.span_id: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for s in sorted(spans, key=lambda s: (s.start, s.span_id)):
        node = nodes[s.span_id]
        parent = nodes.get(s.parent_span_id) if s.parent_span_id else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    # A cycle (corrupt data) leaves spans unreachable from any root: the first of each cycle
    # becomes a root and the edge back into it is cut, so every span appears exactly once.
    visited: set[str] = set()

    def claim(start: SpanNode) -> None:
        stack = [start]
        while stack:
            n = stack.pop()
            if n.span.span_id in visited:
                continue
            visited.add(n.span.span_id)
            n.children = [c for c in n.children if c.span.span_id not in visited]
            stack.extend(n.children)

    for root in roots:
        claim(root)
    for s in sorted(spans, key=lambda s: (s.start, s.span_id)):
        if s.span_id not in visited:
            roots.append(nodes[s.span_id])
            claim(nodes[s.span_id])
    return roots


def format_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def _bar(span: StoredSpan, t0: float, total: float, width: int) -> str:
    if total <= 0:
        return "█".ljust(width)
    a = int((span.start - t0) / total * width)
    b = max(a + 1, int(round((span.end - t0) / total * width)))
    a, b = min(a, width - 1), min(b, width)
    return " " * a + "█" * (b - a) + " " * (width - b)


def render_tree(spans: Sequence[StoredSpan], *, bars: bool = True, bar_width: int = 24) -> list[str]:
    """Indented tree lines: ``name  [service] kind  duration  status``, with a waterfall bar."""
    if not spans:
        return []
    t0 = min(s.start for s in spans)
    total = max(s.end for s in spans) - t0
    rows: list[tuple[str, StoredSpan]] = []
    # Iterative depth-first walk: a trace may be deeper than Python's recursion limit.
    stack: list[tuple[SpanNode, str, bool, bool]] = [(r, "", True, True) for r in reversed(build_tree(spans))]
    while stack:
        node, prefix, last, top = stack.pop()
        branch = "" if top else ("└─ " if last else "├─ ")
        rows.append((prefix + branch + node.span.name, node.span))
        child_prefix = prefix if top or len(prefix) >= _MAX_INDENT else prefix + ("   " if last else "│  ")
        n = len(node.children)
        for i in range(n - 1, -1, -1):
            stack.append((node.children[i], child_prefix, i == n - 1, False))
    name_width = min(80, max(len(label) for label, _ in rows))
    lines = []
    for label, s in rows:
        label = label if len(label) <= name_width else label[:name_width - 1] + "…"
        status = "ERROR" + (f" {s.status_message}" if s.status_message else "") if s.status == "error" else ""
        bar = f"|{_bar(s, t0, total, bar_width)}| " if bars else ""
        text = f"{label.ljust(name_width)}  {bar}{format_ms(s.duration_ms):>9}  {s.kind:<8} [{s.service}] {status}"
        lines.append(text.rstrip())
    return lines


def render_table(summaries: Iterable[TraceSummary]) -> list[str]:
    """A readable table of trace summaries, one line each, with a header."""
    header = ("TRACE ID", "START", "DURATION", "SPANS", "STATUS", "TIER", "KEPT", "SERVICE", "ROOT")
    rows = [header]
    for t in summaries:
        rows.append((t.trace_id, time.strftime("%m-%d %H:%M:%S", time.localtime(t.start)), format_ms(t.duration_ms),
                     str(t.spans), t.status, t.tier or "-", t.kept_by or "-", t.service, t.root))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    right = {2, 3}
    out = []
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(widths))]
        out.append("  ".join(cells + [r[-1]]).rstrip())
    return out


def summary_json(t: TraceSummary) -> dict[str, Any]:
    """The ``pulsetrace traces --json`` item."""
    return {"trace_id": t.trace_id, "xray_trace_id": t.xray_trace_id, "root": t.root, "service": t.service,
            "start": t.start, "duration_ms": t.duration_ms, "status": t.status, "spans": t.spans, "tier": t.tier,
            "kept_by": t.kept_by}


def span_json(s: StoredSpan) -> dict[str, Any]:
    """One span of ``pulsetrace traces show --json``."""
    return {"span_id": s.span_id, "parent_span_id": s.parent_span_id, "name": s.name, "kind": s.kind,
            "service": s.service, "start": s.start, "end": s.end, "status": s.status,
            "status_message": s.status_message, "attributes": s.attributes,
            "events": [{"name": e.get("name"), "time": e.get("time"), "attributes": e.get("attributes") or {}}
                       for e in s.events]}


def trace_json(trace_id: str, spans: Sequence[StoredSpan]) -> dict[str, Any]:
    """``pulsetrace traces show --json``: spans in tree order (parents before children)."""
    ordered: list[StoredSpan] = []
    stack = list(reversed(build_tree(spans)))
    while stack:
        node = stack.pop()
        ordered.append(node.span)
        stack.extend(reversed(node.children))
    return {"trace_id": trace_id, "spans": [span_json(s) for s in ordered]}
