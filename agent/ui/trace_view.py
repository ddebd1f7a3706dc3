"""One trace as the UI shows it: waterfall rows on a shared time axis, and one span's details.

Rows come in tree order (parents before children, siblings by start) with their depth;
each bar is the span's start and duration as percentages of the whole trace, so the
page draws it with SVG percentages and needs no script. A 5,000-span trace is paged
(:data:`ROWS_PER_PAGE` rows a page) on the same axis. A span's details are its attributes,
events (exceptions with their stack traces), the X-Ray document it exports as (with its
annotations and metadata, its subsegments left out) and the sampling decision.

Pure: works on the stored spans it is handed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulsetrace.store import StoredSpan
from pulsetrace.views.traces import build_tree

__all__ = ["ROWS_PER_PAGE", "Row", "waterfall", "span_details", "default_span", "xray_console_url"]

ROWS_PER_PAGE = 1000
KINDS = ("server", "client", "producer", "consumer", "internal")


@dataclass(frozen=True)
class Row:
    span: StoredSpan
    depth: int
    #: Bar start and width, percent of the trace's duration.
    left: float
    width: float
    has_exception: bool


def _tree_order(spans: Sequence[StoredSpan]) -> list[tuple[StoredSpan, int]]:
    out: list[tuple[StoredSpan, int]] = []
    stack = [(node, 0) for node in reversed(build_tree(spans))]
    while stack:  # iterative: a trace can be deeper than Python's recursion limit
        node, depth = stack.pop()
        out.append((node.span, depth))
        stack.extend((child, depth + 1) for child in reversed(node.children))
    return out


def waterfall(spans: Sequence[StoredSpan]) -> tuple[list[Row], float, float]:
    """(rows in tree order, trace start, trace duration in seconds)."""
    if not spans:
        return [], 0.0, 0.0
    t0 = min(s.start for s in spans)
    total = max(s.end for s in spans) - t0
    rows = []
    for span, depth in _tree_order(spans):
        if total > 0:
            left = (span.start - t0) / total * 100.0
            width = max(0.0, span.end - span.start) / total * 100.0
        else:
            left, width = 0.0, 100.0
        rows.append(Row(span, depth, round(left, 4), round(width, 4),
                        any(e.get("name") == "exception" for e in span.events)))
    return rows, t0, total


def default_span(rows: Sequence[Row]) -> str | None:
    """The span to open first (``rows`` from :func:`waterfall`): the first with an exception, else the
    first that failed, else the root."""
    ordered = [r.span for r in rows]
    for s in ordered:
        if any(e.get("name") == "exception" for e in s.events):
            return s.span_id
    for s in ordered:
        if s.status == "error":
            return s.span_id
    return ordered[0].span_id if ordered else None


def _find(doc: Mapping[str, Any], span_id: str, depth: int = 0) -> Mapping[str, Any] | None:
    if doc.get("id") == span_id:
        return doc
    if depth > 256:
        return None
    for sub in doc.get("subsegments") or ():
        if isinstance(sub, Mapping):
            found = _find(sub, span_id, depth + 1)
            if found is not None:
                return found
    return None


def _sampling(span: StoredSpan, spans: Sequence[StoredSpan]) -> dict[str, Any]:
    """The sampling decision that covers ``span``: its own attributes, else those of the nearest
    ancestor that has them (the decision is taken once, at the service's root span)."""
    by_id = {s.span_id: s for s in spans}
    current: StoredSpan | None = span
    for _ in range(len(spans) + 1):
        if current is None:
            break
        a = current.attributes
        if "sampling.tier" in a or "sampling.rule" in a:
            return {"tier": a.get("sampling.tier"), "rule": a.get("sampling.rule"), "kept_by": a.get("sampling.kept_by"),
                    "at": None if current is span else current.name}
        current = by_id.get(current.parent_span_id) if current.parent_span_id else None
    return {"tier": None, "rule": None, "kept_by": None, "at": None}


def span_details(span: StoredSpan, documents: Sequence[Mapping[str, Any]],
                 spans: Sequence[StoredSpan] = ()) -> dict[str, Any]:
    """What the details panel shows for ``span``; ``documents`` are the trace's X-Ray documents,
    ``spans`` the trace's spans (for the sampling decision taken at an ancestor)."""
    doc: Mapping[str, Any] | None = None
    for d in documents:
        doc = _find(d, span.span_id)
        if doc is not None:
            break
    exported = None
    if doc is not None:
        shown = {k: v for k, v in doc.items() if k != "subsegments"}
        children = sum(1 for s in spans if s.parent_span_id == span.span_id and s is not span)
        if children:
            shown["subsegments"] = f"{children} subsegment(s), shown on their own spans"
        if doc.get("type") == "subsegment" and any(s.span_id == span.parent_span_id for s in spans):
            # translated on its own, it reads as an independent subsegment document; in the trace's
            # export it is nested in its parent, without these three fields
            for key in ("type", "trace_id", "parent_id"):
                shown.pop(key, None)
        exported = json.dumps(shown, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    exceptions = []
    other_events = []
    for e in span.events:
        attrs = e.get("attributes") or {}
        if e.get("name") == "exception":
            exceptions.append({"type": str(attrs.get("exception.type", "")),
                               "message": str(attrs.get("exception.message", "")),
                               "stacktrace": str(attrs.get("exception.stacktrace", "")), "time": e.get("time")})
        else:
            other_events.append({"name": str(e.get("name", "")), "time": e.get("time"), "attributes": attrs})
    a = span.attributes
    return {
        "span": span,
        "attributes": sorted(a.items()),
        "exceptions": exceptions,
        "events": other_events,
        "annotations": sorted((doc.get("annotations") or {}).items()) if doc else [],
        "xray_document": exported,
        "xray_kind": None if doc is None else ("segment" if doc.get("trace_id") and doc.get("type") != "subsegment"
                                              else "subsegment"),
        "sampling": _sampling(span, spans or [span]),
        "resource": sorted(span.resource.items()),
    }


def xray_console_url(region: str, xray_trace_id: str) -> str:
    """The trace in the CloudWatch console's X-Ray traces view (where the X-Ray console now lives)."""
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#xray:traces/{xray_trace_id}")
