"""The agent's own counters and gauges (spans exported, dropped by reason, queue depth ...).

Process-local, thread-safe, cheap enough for the request path (one lock, one dict
update). Read by ``/metrics``, the CloudWatch exporter and ``pulsetrace status``.
A forked child (a pre-fork server's worker) starts from zero with a new lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from pulsetrace.forking import on_fork_in_child


#: Why a span was lost before any exporter saw it (``spans_dropped{reason}``).
SpanDropReason = Literal[
    "queue_full",            # the bounded export queue was full (the app produced faster than we export)
    "shutdown",              # ended while the pipeline was shutting down
    "shutdown_timeout",      # still queued when the shutdown deadline passed
    "internal_error",        # a bug of ours while queueing; the span is dropped, the app untouched
    "scrub_failed",          # the PII scrubber failed: the span is dropped rather than sent unscrubbed
    "keep_errors_overflow",  # the keep-errors buffer of unsampled traces was full
    "keep_errors_expired",   # an unsampled trace's buffered spans outlived the buffer's age limit
    "keep_errors_internal",  # a bug of ours in the keep-errors buffer
]
#: Why one exporter lost spans (``spans_dropped{reason=REASON:EXPORTER}``): the others still got them.
ExporterDropReason = Literal[
    "backlog",        # the exporter's own backlog was full (a slow or dead destination)
    "export_failed",  # the destination refused or could not be reached
]
#: Why metric data were lost (``metrics_dropped{reason}``).
MetricDropReason = Literal[
    "buffer_full", "source_failed", "shutdown", "rejected", "record_failed", "invalid_value", "emf_write_failed",
    # business metrics (pulsetrace.metric): a name that is not one, one of the agent's own, a unit CloudWatch
    # does not know, more distinct names than metrics.cloudwatch.max_metrics
    "invalid_metric", "reserved_name", "invalid_unit", "metric_budget",
]


class SelfMetrics:
    """Counters keyed by ``(name, reason)`` and gauges keyed by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], float] = {}
        self._gauges: dict[str, float] = {}
        self._gauge_fns: dict[str, Callable[[], float]] = {}
        on_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child (a gunicorn worker): a new lock, and counts that start from zero.

        The parent's lock may have been held by a thread that does not exist in the
        child; and the parent's counts are the parent's: kept, each worker would report
        them again. The gauge callbacks stay (they read live objects).
        """
        self._lock = threading.Lock()
        self._counters = {}
        self._gauges = {}

    def inc(self, name: str, n: float = 1, reason: str = "") -> None:
        key = (name, reason)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    def drop_spans(self, reason: SpanDropReason, n: float = 1) -> None:
        """Count ``n`` spans lost for every exporter."""
        self.inc("spans_dropped", n, reason)

    def drop_exported(self, reason: ExporterDropReason, exporter: str, n: float = 1) -> None:
        """Count ``n`` spans one exporter lost."""
        self.inc("spans_dropped", n, f"{reason}:{exporter}")

    def drop_metrics(self, reason: MetricDropReason, n: float = 1) -> None:
        """Count ``n`` metric data lost."""
        self.inc("metrics_dropped", n, reason)

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def gauge_fn(self, name: str, fn: Callable[[], float]) -> None:
        """Register a gauge read lazily when a snapshot is taken (e.g. a queue depth)."""
        with self._lock:
            self._gauge_fns[name] = fn

    def counter(self, name: str, reason: str | None = None) -> float:
        with self._lock:
            if reason is not None:
                return self._counters.get((name, reason), 0)
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def counters(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._counters)

    def gauges(self) -> dict[str, float]:
        with self._lock:
            out = dict(self._gauges)
            fns = dict(self._gauge_fns)
        for name, fn in fns.items():
            try:
                out[name] = float(fn())
            except Exception:  # a gauge callback must never break a metrics read
                continue
        return out

    def dropped(self) -> dict[str, float]:
        """``spans_dropped`` by reason."""
        with self._lock:
            return {r: v for (n, r), v in self._counters.items() if n == "spans_dropped"}

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()
            self._gauges.clear()
