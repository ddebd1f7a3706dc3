"""Keep the local part of traces the sampler did not pick, when they fail or are slow.

For a trace that was not sampled the sampler answers ``RECORD_ONLY`` (when
``keep_errors`` or ``slow_ms`` is on), so its spans are recorded but not exported.
The span pipeline hands each such span, as it ends, to :class:`KeepErrorsBuffer`,
which holds them per trace id. When a *local root* ends (a span without a parent,
or whose parent is remote: the first span of this service in the trace) the buffer
decides for that root's subtree:

- any span in it failed (status ``ERROR``, an ``exception`` event, or an HTTP
  status ``>= 500``): all of its spans are returned for export, marked
  ``sampling.kept_by = error``;
- else the root took longer than ``slow_ms``: returned, ``sampling.kept_by = slow``;
- else they are forgotten: that *is* the sampling decision, not a loss.

Bounded: at most ``max_pending_traces`` traces (the oldest is evicted),
``max_spans_per_trace`` spans per trace and ``max_total_spans`` spans in all
(16,384 by default, about 50 MB; the oldest traces are evicted first) are held;
traces whose root never ends age out. Everything evicted, refused or expired is counted in
``spans_dropped{reason=keep_errors_overflow | keep_errors_expired}``. A span refused
for the cap still counts towards the error decision.

What it cannot do: services downstream of an unsampled call did not record their
part (they followed the not-sampled decision), so a kept trace shows this
service's spans only. Fleet-wide "keep every failed trace" is the collector's
tail sampling (``collector-config/``).

Runs on the application thread that ends the span: one lock, a dict update, and
nothing else for a span that is not a local root. Never raises into the caller.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from pulsetrace.config.schema import Config
from pulsetrace.forking import on_fork_in_child
from pulsetrace.instrumentation.spans import copy_span
from pulsetrace.selfmetrics import SelfMetrics

__all__ = ["KEPT_BY_ATTR", "KeepErrorsBuffer", "build_keep_errors", "span_failed", "with_attributes"]

KEPT_BY_ATTR = "sampling.kept_by"
_HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")


def span_failed(span: ReadableSpan) -> bool:
    """Did this span end in error: ``ERROR`` status, an exception event, or an HTTP 5xx?"""
    if span.status.status_code is StatusCode.ERROR:
        return True
    attrs = span.attributes
    if attrs:
        for key in _HTTP_STATUS_KEYS:
            code = attrs.get(key)
            if isinstance(code, int) and not isinstance(code, bool) and code >= 500:
                return True
    for event in span.events:
        if event.name == "exception":
            return True
    return False


def with_attributes(span: ReadableSpan, extra: dict[str, str]) -> ReadableSpan:
    """A copy of ``span`` with ``extra`` attributes added (same context, flags untouched)."""
    attrs = dict(span.attributes or {})
    attrs.update(extra)
    return copy_span(span, attributes=attrs)


class _Pending:
    """Spans of one trace waiting for their local root."""

    __slots__ = ("spans", "parent_of", "dropped_errors", "unplaced_error", "born")

    def __init__(self, born: float) -> None:
        self.spans: list[ReadableSpan] = []
        #: span id → parent span id, also for spans refused by the per-trace cap (to walk subtrees).
        self.parent_of: dict[int, int | None] = {}
        #: Ids of refused spans that had failed: they still make their subtree "error".
        self.dropped_errors: set[int] = set()
        #: A refused failed span beyond what we track ancestry for: any root of the trace counts as failed.
        self.unplaced_error = False
        self.born = born


class KeepErrorsBuffer:
    """The pipeline's ``unsampled_hook``: call it with every ended, recorded, unsampled span.

    Returns the spans to export now (the local part of a failed or slow trace, marked
    ``sampling.kept_by``) or ``None``. Thread-safe.
    """

    def __init__(self, metrics: SelfMetrics, *, keep_errors: bool = True, slow_ms: float = 0.0,
                 max_pending_traces: int = 2048, max_spans_per_trace: int = 256, max_total_spans: int = 16_384,
                 max_age_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if max_pending_traces < 1 or max_spans_per_trace < 1 or max_total_spans < 1:
            raise ValueError("max_pending_traces, max_spans_per_trace and max_total_spans must be >= 1")
        self.metrics = metrics
        self.keep_errors = keep_errors
        self.slow_ns = int(slow_ms * 1_000_000) if slow_ms > 0 else 0
        self.max_pending_traces = max_pending_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.max_total_spans = max_total_spans
        self._total = 0
        # A root that has not ended long after the slow threshold will most likely never end.
        self.max_age_s = max_age_s if max_age_s is not None else max(60.0, 10.0 * slow_ms / 1000.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        on_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        """Called in a forked child: a new lock and nothing pending.

        A parent thread may have held the old lock at fork time. The parent's held
        traces end in the parent: forgetting them here is not a drop.
        """
        self._lock = threading.Lock()
        self._pending = collections.OrderedDict()
        self._total = 0

    def pending_traces(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending_spans(self) -> int:
        with self._lock:
            return self._total

    def __call__(self, span: ReadableSpan) -> Sequence[ReadableSpan] | None:
        try:
            return self._on_end(span)
        except Exception:  # never into the application; the spans are simply not kept
            self.metrics.drop_spans("keep_errors_internal")
            return None

    def _on_end(self, span: ReadableSpan) -> Sequence[ReadableSpan] | None:
        ctx = span.context
        if ctx is None:
            return None
        parent = span.parent
        trace_id = ctx.trace_id
        now = self._clock()
        if parent is not None and not parent.is_remote:
            self._hold(trace_id, ctx.span_id, parent.span_id, span, now)
            return None
        # A local root: decide for its subtree.
        with self._lock:
            pending = self._pending.get(trace_id)
            members: list[ReadableSpan] = []
            dropped_error = False
            if pending is not None:
                members, dropped_error = self._take_subtree(pending, ctx.span_id)
                self._total -= len(members)
                if not pending.spans:
                    del self._pending[trace_id]
        failed = dropped_error or span_failed(span) or any(span_failed(s) for s in members)
        if failed and self.keep_errors:
            reason = "error"
        elif self.slow_ns and span.end_time is not None and span.start_time is not None \
                and span.end_time - span.start_time > self.slow_ns:
            reason = "slow"
        else:
            return None
        self.metrics.inc("traces_kept", reason=reason)
        extra = {KEPT_BY_ATTR: reason}
        members.append(span)
        return [with_attributes(s, extra) for s in members]

    def _hold(self, trace_id: int, span_id: int, parent_id: int, span: ReadableSpan, now: float) -> None:
        with self._lock:
            self._expire(now)
            pending = self._pending.get(trace_id)
            if pending is None:
                if len(self._pending) >= self.max_pending_traces:
                    self._evict_oldest()
                pending = _Pending(now)
                self._pending[trace_id] = pending
            while self._total >= self.max_total_spans and next(iter(self._pending)) != trace_id:
                self._evict_oldest()
            cap = self.max_spans_per_trace
            if len(pending.spans) < cap and self._total < self.max_total_spans:
                pending.parent_of[span_id] = parent_id
                pending.spans.append(span)
                self._total += 1
                return
            tracked = len(pending.parent_of) < 4 * cap  # ancestry of refused spans, itself bounded
            if tracked:
                pending.parent_of[span_id] = parent_id
        # Over the per-trace cap: refuse the span but remember whether it failed.
        if span_failed(span):
            with self._lock:
                if tracked:
                    pending.dropped_errors.add(span_id)
                else:
                    pending.unplaced_error = True
        self.metrics.drop_spans("keep_errors_overflow")

    def _evict_oldest(self) -> None:
        _, evicted = self._pending.popitem(last=False)
        self._total -= len(evicted.spans)
        if evicted.spans:
            self.metrics.drop_spans("keep_errors_overflow", len(evicted.spans))

    def _expire(self, now: float) -> None:
        """Drop traces whose root has not ended within ``max_age_s`` (oldest first; lock held)."""
        limit = now - self.max_age_s
        while self._pending:
            trace_id, oldest = next(iter(self._pending.items()))
            if oldest.born >= limit:
                return
            del self._pending[trace_id]
            self._total -= len(oldest.spans)
            if oldest.spans:
                self.metrics.drop_spans("keep_errors_expired", len(oldest.spans))

    @staticmethod
    def _take_subtree(pending: _Pending, root_id: int) -> tuple[list[ReadableSpan], bool]:
        """Remove and return the held spans below ``root_id``, and whether a refused one failed.

        Spans of another local root of the same trace (a service that calls itself)
        stay for that root.
        """
        parent_of = pending.parent_of
        verdict: dict[int, bool] = {root_id: True}

        def below_root(span_id: int) -> bool:
            chain: list[int] = []
            current: int | None = span_id
            result = False
            while current is not None:
                known = verdict.get(current)
                if known is not None:
                    result = known
                    break
                chain.append(current)
                if len(chain) > 1024:  # a cycle cannot happen with real ids; stay bounded anyway
                    break
                current = parent_of.get(current)
            for sid in chain:
                verdict[sid] = result
            return result

        taken: list[ReadableSpan] = []
        kept: list[ReadableSpan] = []
        for s in pending.spans:
            ctx = s.context
            if ctx is not None and below_root(ctx.span_id):
                taken.append(s)
            else:
                kept.append(s)
        pending.spans = kept
        dropped_error = pending.unplaced_error or any(below_root(sid) for sid in pending.dropped_errors)
        for s in taken:
            if s.context is not None:
                pending.parent_of.pop(s.context.span_id, None)
        return taken, dropped_error


def build_keep_errors(cfg: Config, metrics: SelfMetrics) -> Callable[[ReadableSpan], Sequence[ReadableSpan] | None] \
        | None:
    """The pipeline's ``unsampled_hook`` for ``cfg``, or ``None`` when neither errors nor slow are kept."""
    sampling = cfg.tracing.sampling
    if not sampling.keep_errors and sampling.slow_ms <= 0:
        return None
    return KeepErrorsBuffer(metrics, keep_errors=sampling.keep_errors, slow_ms=sampling.slow_ms,
                            max_pending_traces=sampling.max_pending_traces,
                            max_spans_per_trace=sampling.max_spans_per_trace)
