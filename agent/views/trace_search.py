"""Finding traces in the local store: newest first, a page at a time, through a filter expression.

Like the X-Ray console, a filtered search scans backwards from the end of the time range
and stops when it has a page of matches or has looked at ``max_scan`` traces, and says how
many it scanned and where to carry on (``next_before``): a filter that matches nothing on
a 1 GB store costs one bounded scan, not the whole store. Traces are read through the
store's ``start`` index in chunks, so memory follows the chunk, not the store.

Reads only; shared by ``pulsetrace traces`` and the UI's list and JSON API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pulsetrace.views.filter import Filter
from pulsetrace.views.trace_facts import TraceFacts, facts_from_spans
from pulsetrace.views.traces import TraceSummary, summarize

if TYPE_CHECKING:
    from pulsetrace.store import LocalStore, StoredSpan

__all__ = ["TraceHit", "SearchPage", "search_traces", "DEFAULT_MAX_SCAN"]

#: Traces looked at per search when a filter is given (the console's "scanned N traces").
DEFAULT_MAX_SCAN = 5000
#: Traces read from the store at a time.
_CHUNK = 100


@dataclass(frozen=True)
class TraceHit:
    summary: TraceSummary
    facts: TraceFacts

    def annotations(self) -> dict[str, object]:
        """The trace's X-Ray annotations, first value of each key."""
        return {k: v[0] for k, v in self.facts.annotations.items() if v}


@dataclass
class SearchPage:
    hits: list[TraceHit] = field(default_factory=list)
    #: Traces looked at (matching or not).
    scanned: int = 0
    #: Pass as ``before`` for the next page; ``None`` when the range is exhausted.
    next_before: float | None = None
    #: Stopped at ``max_scan`` before finding a full page (more may match further back).
    truncated: bool = False


def search_traces(store: LocalStore, flt: Filter, *, limit: int = 20, since: float | None = None,
                  before: float | None = None, max_scan: int = DEFAULT_MAX_SCAN) -> SearchPage:
    """A page of traces (newest first) with a span in ``[since, before)`` that ``flt`` matches."""
    page = SearchPage()
    cursor = before
    seen: set[str] = set()
    while len(page.hits) < limit:
        budget = max(0, max_scan - page.scanned) if not flt.empty else _CHUNK
        if budget == 0:
            page.truncated = True
            break
        ids = store.trace_ids_before(min(_CHUNK, budget), before=cursor, since=since)
        if not ids:
            cursor = None
            break
        spans = store.traces_spans([t for t, _ in ids])
        for trace_id, newest in ids:
            cursor = newest
            trace_spans = spans.get(trace_id) or []
            if trace_id in seen or not trace_spans or (before is not None and _newest(trace_spans) >= before):
                continue  # already looked at: in an earlier chunk, or on an earlier page
            seen.add(trace_id)
            page.scanned += 1
            facts = facts_from_spans(trace_spans)
            if flt.matches(facts):
                page.hits.append(TraceHit(summarize(trace_spans), facts))
                if len(page.hits) >= limit:
                    break
        if len(ids) < min(_CHUNK, budget) and len(page.hits) < limit:
            cursor = None  # the range holds no more traces
            break
    page.next_before = cursor
    return page


def _newest(spans: Sequence[StoredSpan]) -> float:
    return max(s.start for s in spans)
