"""Indexed attributes: which span attributes become X-Ray annotations, within X-Ray's limits.

X-Ray indexes *annotations* (searchable: ``annotation.school_id = "42"``) and keeps
everything else as metadata. The collector's ``awsxray`` exporter reads the list
of attribute **keys** in the span attribute ``aws.xray.annotations`` and turns
those attributes into annotations, so putting the keys there makes the
OTLP → ADOT path index them with no collector change; our own X-Ray exporters
read the same list.

Keys come from ``tracing.business.annotations`` (any span that has them) and from
``index=`` on a business operation (that span). X-Ray's limits are enforced here:

- keys are reduced to ``[A-Za-z0-9_]`` (:func:`annotation_key`), the first
  attribute to claim a reduced key wins;
- values must be a string, number or boolean, strings at most 1,000 characters
  (longer ones are cut in the exported attribute), see :func:`annotation_value`;
- at most 50 distinct annotation keys per trace: the first 50 in the order spans
  reach the exporter (children end before their parents), the rest counted in
  ``annotations_dropped{reason=limit}``; invalid values in
  ``annotations_dropped{reason=invalid_value}``.

The :class:`Annotator` runs on the export thread, after PII scrubbing, so an
annotation value is always the scrubbed (or hashed) one. It never raises.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.config.schema import Config
from pulsetrace.forking import on_fork_in_child
from pulsetrace.instrumentation.spans import copy_span
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.xray.limits import (
    MAX_ANNOTATION_KEY_CHARS,
    MAX_ANNOTATION_VALUE_CHARS,
    annotation_key,
    annotation_value,
)

__all__ = ["ANNOTATIONS_ATTR", "MAX_ANNOTATIONS_PER_TRACE", "MAX_KEY_CHARS", "MAX_VALUE_CHARS", "Annotator",
           "annotation_key", "annotation_value", "build_annotator", "merge_index_keys"]

ANNOTATIONS_ATTR = "aws.xray.annotations"
MAX_ANNOTATIONS_PER_TRACE = 50
MAX_VALUE_CHARS = MAX_ANNOTATION_VALUE_CHARS
MAX_KEY_CHARS = MAX_ANNOTATION_KEY_CHARS
#: Traces whose annotation count is remembered (the export thread sees a trace's spans close together).
_TRACKED_TRACES = 8192

def merge_index_keys(existing: object, keys: Iterable[str]) -> tuple[str, ...]:
    """The ``aws.xray.annotations`` value with ``keys`` added (order kept, no duplicates)."""
    out: list[str] = [k for k in existing if isinstance(k, str)] if isinstance(existing, (list, tuple)) else []
    for key in keys:
        if key not in out:
            out.append(key)
    return tuple(out)


class Annotator:
    """Export-side step: mark configured keys, validate, truncate and cap annotations per trace.

    Called from the pipeline's export thread; thread-safe anyway (one lock).
    Returns the span itself when nothing changes.
    """

    def __init__(self, keys: Sequence[str], metrics: SelfMetrics, *,
                 max_per_trace: int = MAX_ANNOTATIONS_PER_TRACE) -> None:
        self.keys = tuple(dict.fromkeys(keys))
        self.metrics = metrics
        self.max_per_trace = max_per_trace
        self._lock = threading.Lock()
        self._per_trace: collections.OrderedDict[int, set[str]] = collections.OrderedDict()
        on_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        """Called in a forked child: a new lock and no per-trace counts.

        A parent thread may have held the old lock at fork time; the parent's traces
        are not this process's.
        """
        self._lock = threading.Lock()
        self._per_trace = collections.OrderedDict()

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        ctx = span.context
        attrs = self.annotate_attributes(ctx.trace_id if ctx is not None else None, span.attributes or {})
        if attrs is None:
            return span
        return copy_span(span, attributes=attrs)

    def annotate_attributes(self, trace_id: int | None, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
        """``attrs`` with the annotation list set and checked, or ``None`` when nothing changes."""
        try:
            return self._annotate(trace_id, attrs)
        except Exception:  # an annotation problem must not cost the span
            self.metrics.inc("annotations_dropped", reason="internal_error")
            return None

    def _annotate(self, trace_id: int | None, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
        existing = attrs.get(ANNOTATIONS_ATTR)
        wanted = [k for k in self.keys if k in attrs]
        if existing is None and not wanted:
            return None
        candidates = wanted if existing is None else merge_index_keys(existing, wanted)
        new_attrs = dict(attrs)
        changed = False
        chosen: list[str] = []
        claimed: set[str] = set()
        invalid = 0
        for key in candidates:
            value = annotation_value(attrs.get(key))
            if value is None:
                invalid += 1
                continue
            reduced = annotation_key(key)
            if reduced in claimed:
                continue
            claimed.add(reduced)
            chosen.append(key)
            if isinstance(value, str) and value is not attrs.get(key):
                new_attrs[key] = value  # cut to the annotation limit
                changed = True
        if invalid:
            self.metrics.inc("annotations_dropped", invalid, reason="invalid_value")
        if chosen and trace_id is not None:
            chosen, over = self._admit(trace_id, chosen)
            if over:
                self.metrics.inc("annotations_dropped", over, reason="limit")
        marked = tuple(chosen)
        if marked:
            new_attrs[ANNOTATIONS_ATTR] = marked
        else:
            new_attrs.pop(ANNOTATIONS_ATTR, None)
        if not changed and (marked or None) == (tuple(existing) if isinstance(existing, (list, tuple)) else existing):
            return None
        return new_attrs

    def _admit(self, trace_id: int, keys: list[str]) -> tuple[list[str], int]:
        """Keys this span may carry given what its trace already uses; and how many were refused."""
        with self._lock:
            used = self._per_trace.get(trace_id)
            if used is None:
                used = set()
                self._per_trace[trace_id] = used
                if len(self._per_trace) > _TRACKED_TRACES:
                    self._per_trace.popitem(last=False)
            admitted: list[str] = []
            over = 0
            for key in keys:
                reduced = annotation_key(key)
                if reduced in used:
                    admitted.append(key)
                elif len(used) < self.max_per_trace:
                    used.add(reduced)
                    admitted.append(key)
                else:
                    over += 1
            return admitted, over


def build_annotator(cfg: Config, metrics: SelfMetrics) -> Annotator:
    """The export-side annotator for ``cfg`` (keys from ``tracing.business.annotations``)."""
    return Annotator(cfg.tracing.business.annotations, metrics)
