"""What a filter expression asks of one trace, answered from its X-Ray segment documents.

Traces are judged on the documents their spans translate to
(:class:`~pulsetrace.xray.segments.XRayTranslator`, the exporters' own translation) and on
the service graph of those documents (:func:`~pulsetrace.views.servicemap.build_graph`), so
``error``, ``fault``, ``throttle``, annotations and node names mean what they mean in X-Ray.
The root segment (the earliest segment whose caller is not in the trace) gives
``responsetime`` and the ``http.*`` fields; ``duration`` covers the whole trace; the flags
and annotations are the union over every segment and subsegment.

Pure (no I/O); every answer is computed on first use; nothing here raises on odd documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.store import StoredSpan
    from pulsetrace.views.servicemap import ServiceGraph, Stats

__all__ = ["TraceFacts", "facts_from_documents", "facts_from_spans", "segment_documents"]


class _Scope:
    """The keywords one node or edge answers inside ``{ }``."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def number(self, key: str) -> float | None:
        if key in ("responsetime", "duration"):
            return max(self.stats.durations_ms) / 1000.0 if self.stats.durations_ms else None
        return None

    def string(self, key: str) -> str | None:
        return None

    def flag(self, key: str) -> bool:
        s = self.stats
        if key == "ok":
            return s.requests > 0 and not (s.errors or s.faults or s.throttles)
        return bool({"error": s.errors, "fault": s.faults, "throttle": s.throttles}.get(key, 0))

    def annotation(self, key: str) -> list[object]:
        return []

    def nodes(self, name: str) -> list[_Scope]:
        return []

    def edges(self, pair: tuple[str, str]) -> list[_Scope]:
        return []


def _walk(doc: Mapping[str, Any], depth: int = 0) -> Iterable[Mapping[str, Any]]:
    yield doc
    if depth >= 64:
        return
    for sub in doc.get("subsegments") or ():
        if isinstance(sub, Mapping):
            yield from _walk(sub, depth + 1)


class TraceFacts:
    """What a filter can ask of one trace, from its X-Ray documents (computed on first use).

    Built from documents, or from stored spans and the translation that turns them into
    documents; then the flags and ``duration`` are read off the spans the way the translation
    sets them, and the translation runs only when an expression asks for more (so ``fault``
    alone, or ``fault AND service("x")`` on a trace without a fault, costs no translation).
    """

    def __init__(self, documents: Sequence[Mapping[str, Any]] | None = None, *,
                 spans: Sequence[StoredSpan] = (),
                 translate: Callable[[Sequence[StoredSpan]], list[dict[str, Any]]] | None = None) -> None:
        self._documents = documents
        self._spans = spans
        self._translate = translate

    @cached_property
    def documents(self) -> Sequence[Mapping[str, Any]]:
        if self._documents is not None:
            return self._documents
        return (self._translate or segment_documents)(self._spans)

    @cached_property
    def _all(self) -> list[Mapping[str, Any]]:
        return [d for doc in self.documents for d in _walk(doc)]

    @cached_property
    def root(self) -> Mapping[str, Any] | None:
        """The root segment: a segment whose caller is not in the trace (the earliest such)."""
        ids = {d.get("id") for d in self._all}
        roots = [d for d in self.documents if d.get("type") != "subsegment" and d.get("parent_id") not in ids]
        return min(roots, key=lambda d: _num(d.get("start_time")) or 0.0) if roots else None

    @cached_property
    def graph(self) -> ServiceGraph:
        from pulsetrace.views.servicemap import build_graph

        return build_graph([dict(d) for d in self.documents])

    def number(self, key: str) -> float | None:
        if key == "duration" and self._documents is None and self._spans:
            return max(0.0, max(sp.end for sp in self._spans) - min(sp.start for sp in self._spans))
        if key == "duration":
            starts = [v for v in (_num(d.get("start_time")) for d in self._all) if v is not None]
            ends = [v for v in (_num(d.get("end_time")) for d in self._all) if v is not None]
            return max(0.0, max(ends) - min(starts)) if starts and ends else None
        root = self.root
        if root is None:
            return None
        if key == "responsetime":
            a, b = _num(root.get("start_time")), _num(root.get("end_time"))
            return max(0.0, b - a) if a is not None and b is not None else None
        response = (root.get("http") or {}).get("response") or {}
        status = response.get("status") if isinstance(response, Mapping) else None
        return float(status) if isinstance(status, (int, float)) and not isinstance(status, bool) else None

    def string(self, key: str) -> str | None:
        root = self.root
        if root is None:
            return None
        if key == "user":
            user = root.get("user")
            return user if isinstance(user, str) else None
        request = (root.get("http") or {}).get("request") or {}
        field_name = {"http.url": "url", "http.method": "method", "http.useragent": "user_agent",
                      "http.clientip": "client_ip"}.get(key, "")
        value = request.get(field_name) if isinstance(request, Mapping) else None
        return value if isinstance(value, str) else None

    @cached_property
    def _flags(self) -> dict[str, bool]:
        if self._documents is None and self._spans:
            return _span_flags(self._spans)
        out = {"error": False, "fault": False, "throttle": False}
        for d in self._all:
            for k in out:
                if d.get(k) is True:
                    out[k] = True
        out["ok"] = not (out["error"] or out["fault"] or out["throttle"])
        return out

    def flag(self, key: str) -> bool:
        return self._flags.get(key, False)

    @cached_property
    def annotations(self) -> dict[str, list[object]]:
        out: dict[str, list[object]] = {}
        for d in self._all:
            ann = d.get("annotations")
            if isinstance(ann, Mapping):
                for k, v in ann.items():
                    out.setdefault(str(k), []).append(v)
        return out

    def annotation(self, key: str) -> list[object]:
        return self.annotations.get(key, [])

    def nodes(self, name: str) -> list[_Scope]:
        return [_Scope(n.stats) for n in self.graph.nodes.values() if n.name == name]

    def edges(self, pair: tuple[str, str]) -> list[_Scope]:
        g = self.graph
        return [_Scope(e.stats) for e in g.edges.values()
                if g.nodes[e.source].name == pair[0] and g.nodes[e.target].name == pair[1]]


def _span_flags(spans: Sequence[StoredSpan]) -> dict[str, bool]:
    """error / fault / throttle as the X-Ray translation marks them (pulsetrace.xray.segments): a 4xx
    is an error (429 also a throttle), a failed span or a 5xx a fault; a failed call made with no
    local parent also faults the service segment made for it."""
    from pulsetrace.xray.fields import status_code

    out = {"error": False, "fault": False, "throttle": False}
    for sp in spans:
        code = status_code(sp.attributes)
        failed = sp.status == "error"
        if code is not None and 400 <= code < 500:
            out["error"] = True
            out["throttle"] = out["throttle"] or code == 429
            if failed and sp.kind in ("client", "producer") and (sp.parent_span_id is None or sp.remote_parent):
                out["fault"] = True
        elif failed or (code is not None and 500 <= code < 600):
            out["fault"] = True
    out["ok"] = not (out["error"] or out["fault"] or out["throttle"])
    return out


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def facts_from_documents(documents: Iterable[Mapping[str, Any] | str]) -> TraceFacts:
    """Facts of one trace from its X-Ray segment documents (dicts or JSON text)."""
    docs: list[Mapping[str, Any]] = []
    for d in documents:
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except ValueError:
                continue
        if isinstance(d, Mapping):
            docs.append(d)
    return TraceFacts(docs)


def facts_from_spans(spans: Sequence[StoredSpan], translate: Callable[[Sequence[StoredSpan]],
                     list[dict[str, Any]]] | None = None) -> TraceFacts:
    """Facts of one trace from its stored spans, translated the way the X-Ray exporters translate them."""
    return TraceFacts(spans=spans, translate=translate)


def segment_documents(spans: Sequence[StoredSpan]) -> list[dict[str, Any]]:
    """The X-Ray documents (dicts) of one trace's stored spans."""
    from pulsetrace.xray.segments import XRayTranslator, view_from_stored

    return XRayTranslator().segments(view_from_stored(s) for s in spans)
