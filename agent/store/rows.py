"""A stored span: the row format of the ``spans`` table and the record the CLI and views read.

Pure data and conversions, no I/O: :mod:`pulsetrace.store.db` writes and reads the rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    start: float
    end: float
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    links: list[dict[str, Any]] = field(default_factory=list)
    scope: str = ""
    remote_parent: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000.0


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


def _attrs(mapping: Any) -> str:
    if not mapping:
        return "{}"
    return json.dumps({str(k): _clean(v) for k, v in mapping.items()}, separators=(",", ":"), ensure_ascii=True)  # a lone surrogate must not fail the batch


#: The last resource written and its (service name, JSON text): a process's spans share one resource
#: object, so its attributes are encoded once, not once per span.
_LAST_RESOURCE: tuple[object, str, str] | None = None


def _resource_text(resource: Any) -> tuple[str, str]:
    global _LAST_RESOURCE
    last = _LAST_RESOURCE
    if last is not None and last[0] is resource:
        return last[1], last[2]
    attributes = resource.attributes if resource is not None else {}
    service, text = str(attributes.get("service.name", "unknown_service")), _attrs(attributes)
    _LAST_RESOURCE = (resource, service, text)  # holds the object, so its id is not reused meanwhile
    return service, text


def span_row(span: Any, now: float) -> tuple[Any, ...]:
    """One ``spans`` row from an OpenTelemetry ``ReadableSpan``."""
    ctx = span.context
    parent = span.parent
    status = "error" if span.status.status_code.name == "ERROR" else "ok"
    events = [{"name": e.name, "time": e.timestamp / 1e9, "attributes": json.loads(_attrs(e.attributes))}
              for e in span.events]
    links = [{"trace_id": f"{ln.context.trace_id:032x}", "span_id": f"{ln.context.span_id:016x}"} for ln in span.links]
    service, resource = _resource_text(span.resource)
    end = span.end_time if span.end_time is not None else span.start_time
    return (
        f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{parent.span_id:016x}" if parent else None,
        span.name, span.kind.name.lower(), service,
        span.start_time / 1e9, end / 1e9, status, span.status.description,
        _attrs(span.attributes), json.dumps(events, ensure_ascii=True, default=str) if events else "[]", resource,
        json.dumps(links) if links else "[]", span.instrumentation_scope.name if span.instrumentation_scope else "",
        1 if parent is not None and parent.is_remote else 0, now,
    )


#: Parsed resources by their stored text: a process writes thousands of spans with one resource,
#: so readers share one dict per distinct text (read-only: never mutate ``StoredSpan.resource``).
_RESOURCES: dict[str, dict[str, Any]] = {}


def _resource(text: str) -> dict[str, Any]:
    found = _RESOURCES.get(text)
    if found is None:
        found = json.loads(text)
        if len(_RESOURCES) >= 256:
            _RESOURCES.clear()
        _RESOURCES[text] = found
    return found


def _list(text: str) -> list[Any]:
    return [] if text == "[]" else list(json.loads(text))  # most spans have no events and no links


def row_to_span(row: Sequence[Any]) -> StoredSpan:
    """A :class:`StoredSpan` from a row selected with the ``spans`` columns in schema order."""
    return StoredSpan(trace_id=row[0], span_id=row[1], parent_span_id=row[2], name=row[3], kind=row[4],
                      service=row[5], start=row[6], end=row[7], status=row[8], status_message=row[9],
                      attributes=json.loads(row[10]), events=_list(row[11]), resource=_resource(row[12]),
                      links=_list(row[13]), scope=row[14], remote_parent=bool(row[15]))


def group_traces(spans: Sequence[StoredSpan]) -> dict[str, list[StoredSpan]]:
    out: dict[str, list[StoredSpan]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out
