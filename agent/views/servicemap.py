"""The service graph, read from X-Ray segment documents the way the X-Ray console's map reads.

Documents come from the local store (spans translated by :mod:`pulsetrace.xray.segments`,
so the local map is the one X-Ray would draw) or from X-Ray itself
(``GetTraceSummaries`` + ``BatchGetTraces``). Nodes:

* ``client``: whoever called a root segment (no parent, or a parent outside the data);
* ``service``: one per segment name;
* inferred downstream nodes, one per outermost ``remote`` / ``aws`` subsegment name,
  typed ``database`` (a ``sql`` block, or a non-cache ``db.system``), ``cache``
  (``db.system`` redis, memcached ...), ``aws`` (``namespace: aws``) or ``http``.

A remote call answered by another traced service (a segment whose ``parent_id`` is
that subsegment) is an edge between the two services, not an inferred node. Each
node and edge counts requests, errors (4xx), faults (5xx) and throttles (429) and
keeps latency percentiles. Independent subsegment documents are attached to their
segment through ``parent_id``, so a trace split for size reads as one.

Pure functions over documents, plus :func:`graph_from_store` and
:func:`fetch_xray_documents` for the two sources. Nothing here writes anything.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulsetrace.xray.fields import CACHE_SYSTEMS

if TYPE_CHECKING:
    from pulsetrace.store import LocalStore

__all__ = ["Stats", "Node", "Edge", "ServiceGraph", "build_graph", "graph_from_store", "fetch_xray_documents",
           "node_id", "NODE_TYPES"]

NODE_TYPES = ("client", "service", "database", "cache", "http", "aws")
CLIENT_ID = "client"
_REMOTE_NAMESPACES = ("remote", "aws")
#: Bounds when following ``parent_id`` links, whatever the documents say.
_MAX_DEPTH = 256


def node_id(kind: str, name: str) -> str:
    return CLIENT_ID if kind == "client" else f"{kind}:{name}"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    faults: int = 0
    throttles: int = 0
    durations_ms: list[float] = field(default_factory=list)

    def add(self, doc: Mapping[str, Any]) -> None:
        self.requests += 1
        self.errors += 1 if doc.get("error") else 0
        self.faults += 1 if doc.get("fault") else 0
        self.throttles += 1 if doc.get("throttle") else 0
        try:
            self.durations_ms.append(max(0.0, (float(doc["end_time"]) - float(doc["start_time"])) * 1000.0))
        except (KeyError, TypeError, ValueError):
            pass

    def latency(self) -> dict[str, float]:
        values = sorted(self.durations_ms)
        return {f"p{p}": round(percentile(values, p), 3) for p in (50, 90, 99)}


@dataclass
class Node:
    id: str
    name: str
    type: str
    stats: Stats = field(default_factory=Stats)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {"id": self.id, "name": self.name, "type": self.type, "requests": s.requests, "errors": s.errors,
                "faults": s.faults, "throttles": s.throttles, "latency_ms": s.latency()}


@dataclass
class Edge:
    source: str
    target: str
    stats: Stats = field(default_factory=Stats)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {"source": self.source, "target": self.target, "requests": s.requests, "errors": s.errors,
                "faults": s.faults, "throttles": s.throttles, "latency_ms": s.latency()}


@dataclass
class ServiceGraph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    traces: int = 0
    documents: int = 0
    #: The time window the graph covers (epoch seconds), when known.
    start: float | None = None
    end: float | None = None

    def node(self, kind: str, name: str) -> Node:
        nid = node_id(kind, name)
        found = self.nodes.get(nid)
        if found is None:
            found = self.nodes[nid] = Node(id=nid, name="client" if kind == "client" else name, type=kind)
        return found

    def edge(self, source: Node, target: Node) -> Edge:
        key = (source.id, target.id)
        found = self.edges.get(key)
        if found is None:
            found = self.edges[key] = Edge(source=source.id, target=target.id)
        return found

    def sorted_nodes(self) -> list[Node]:
        order = {t: i for i, t in enumerate(NODE_TYPES)}
        return sorted(self.nodes.values(), key=lambda n: (order.get(n.type, 99), n.name))

    def sorted_edges(self) -> list[Edge]:
        rank = {n.id: i for i, n in enumerate(self.sorted_nodes())}
        return sorted(self.edges.values(), key=lambda e: (rank.get(e.source, 0), rank.get(e.target, 0)))

    def window_s(self) -> float | None:
        if self.start is None or self.end is None or self.end <= self.start:
            return None
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.sorted_nodes()],
                "edges": [e.to_json() for e in self.sorted_edges()],
                "traces": self.traces, "documents": self.documents,
                "window": {"start": self.start, "end": self.end}}


# -- reading documents ----------------------------------------------------------------------


@dataclass
class _Entry:
    doc: dict[str, Any]
    #: The id of the enclosing segment or subsegment (for nested subsegments and independent
    #: subsegment documents), or the caller's subsegment id (for segments).
    parent: str | None
    is_segment: bool


def _parse(documents: Iterable[Mapping[str, Any] | str]) -> Iterator[dict[str, Any]]:
    for doc in documents:
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError:
                continue
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            yield doc


def _index(trace_docs: list[dict[str, Any]]) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}

    def walk(doc: dict[str, Any], parent: str | None, is_segment: bool, depth: int) -> None:
        entries[doc["id"]] = _Entry(doc, parent, is_segment)
        if depth >= _MAX_DEPTH:
            return
        for sub in doc.get("subsegments") or ():
            if isinstance(sub, dict) and isinstance(sub.get("id"), str):
                walk(sub, doc["id"], False, depth + 1)

    for doc in trace_docs:
        is_segment = doc.get("type") != "subsegment"
        parent = doc.get("parent_id") if isinstance(doc.get("parent_id"), str) else None
        walk(doc, parent, is_segment, 0)
    return entries


def _owner(entries: dict[str, _Entry], start: str) -> tuple[_Entry | None, bool]:
    """The segment ``start`` belongs to, and whether it sits inside a remote/aws call."""
    entry = entries.get(start)
    inside_remote = False
    first = True
    for _ in range(_MAX_DEPTH):
        if entry is None:
            return None, inside_remote
        if entry.is_segment:
            return entry, inside_remote
        if not first and entry.doc.get("namespace") in _REMOTE_NAMESPACES:
            inside_remote = True
        first = False
        entry = entries.get(entry.parent) if entry.parent else None
    return None, inside_remote


def _downstream_type(doc: Mapping[str, Any]) -> str:
    if doc.get("namespace") == "aws":
        return "aws"
    if isinstance(doc.get("sql"), dict):
        return "database"
    default = (doc.get("metadata") or {}).get("default") or {}
    system = default.get("db.system") if isinstance(default, dict) else None
    if system:
        return "cache" if str(system) in CACHE_SYSTEMS else "database"
    return "http"


def build_graph(documents: Iterable[Mapping[str, Any] | str], *, start: float | None = None,
                end: float | None = None) -> ServiceGraph:
    """The service graph of every trace in ``documents`` (dicts or JSON strings)."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for doc in _parse(documents):
        count += 1
        by_trace.setdefault(str(doc.get("trace_id", "")), []).append(doc)
    graph = ServiceGraph(traces=len(by_trace), documents=count, start=start, end=end)
    for docs in by_trace.values():
        _add_trace(graph, docs)
    return graph


def _add_trace(graph: ServiceGraph, docs: list[dict[str, Any]]) -> None:
    entries = _index(docs)
    # Subsegments answered by a traced service: the edge goes to that service instead.
    answered: dict[str, _Entry] = {}
    for entry in entries.values():
        if entry.is_segment and entry.parent and entry.parent in entries and \
                not entries[entry.parent].is_segment:
            answered[entry.parent] = entry
    for sid, entry in entries.items():
        doc = entry.doc
        if entry.is_segment:
            service = graph.node("service", str(doc.get("name", "")))
            service.stats.add(doc)
            caller = entries.get(entry.parent) if entry.parent else None
            if caller is None:
                client = graph.node("client", "client")
                client.stats.add(doc)
                graph.edge(client, service).stats.add(doc)
            elif caller.is_segment or caller.doc.get("namespace") not in _REMOTE_NAMESPACES:
                # Called from a segment, or from a subsegment not marked as a remote call: the
                # edge still runs from the calling service (a remote one is drawn below).
                owner = caller if caller.is_segment else _owner(entries, entry.parent or "")[0]
                if owner is not None:
                    graph.edge(graph.node("service", str(owner.doc.get("name", ""))), service).stats.add(doc)
            continue
        if doc.get("namespace") not in _REMOTE_NAMESPACES:
            continue
        owner, inside_remote = _owner(entries, sid)
        if owner is None or inside_remote:
            continue  # orphaned, or a call made while making another call (counted once, outside)
        source = graph.node("service", str(owner.doc.get("name", "")))
        callee = answered.get(sid)
        if callee is not None:
            target = graph.node("service", str(callee.doc.get("name", "")))
        else:
            target = graph.node(_downstream_type(doc), str(doc.get("name", "")))
            target.stats.add(doc)
        graph.edge(source, target).stats.add(doc)


# -- sources --------------------------------------------------------------------------------


def graph_from_store(store: LocalStore, since: float, until: float | None = None) -> ServiceGraph:
    """The graph of the spans the local store holds that started at or after ``since``."""
    from pulsetrace.xray.segments import XRayTranslator, view_from_stored

    until = time.time() if until is None else until
    spans = [s for s in store.spans_since(since) if s.start <= until]
    translator = XRayTranslator()
    documents = translator.segments(view_from_stored(s) for s in spans)
    return build_graph(documents, start=since, end=until)


def fetch_xray_documents(client: Any, start: float, end: float, *, max_traces: int = 5000,
                         window_s: float = 6 * 3600.0) -> list[str]:
    """Every segment document X-Ray holds for traces in ``[start, end]``.

    ``GetTraceSummaries`` (paginated, in windows of at most ``window_s``: X-Ray limits
    the range one call may cover) gives the trace ids, ``BatchGetTraces`` (five ids per
    call, paginated) the documents. ``client`` is a boto3 X-Ray client.
    """
    trace_ids: list[str] = []
    seen: set[str] = set()
    lo = start
    while lo < end and len(trace_ids) < max_traces:
        hi = min(end, lo + window_s)
        # The API takes whole seconds: round the last window up so traces that ended in the
        # current second are not left out.
        upper = math.ceil(hi) + 1 if hi >= end else hi
        token: str | None = None
        for _ in range(1000):
            kwargs: dict[str, Any] = {"StartTime": lo, "EndTime": upper, "TimeRangeType": "TraceId"}
            if token:
                kwargs["NextToken"] = token
            page = client.get_trace_summaries(**kwargs)
            for summary in page.get("TraceSummaries") or ():
                tid = summary.get("Id")
                if isinstance(tid, str) and tid not in seen:
                    seen.add(tid)
                    trace_ids.append(tid)
            token = page.get("NextToken")
            if not token or len(trace_ids) >= max_traces:
                break
        lo = hi
    documents: list[str] = []
    for i in range(0, min(len(trace_ids), max_traces), 5):
        batch = trace_ids[i:i + 5]
        token = None
        for _ in range(1000):
            kwargs = {"TraceIds": batch}
            if token:
                kwargs["NextToken"] = token
            page = client.batch_get_traces(**kwargs)
            for trace in page.get("Traces") or ():
                for segment in trace.get("Segments") or ():
                    document = segment.get("Document")
                    if isinstance(document, str):
                        documents.append(document)
            token = page.get("NextToken")
            if not token:
                break
    return documents
