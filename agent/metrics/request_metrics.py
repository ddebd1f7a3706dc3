"""Per-operation request metrics for every request, sampled or not: Requests, Errors, Faults, Latency.

:meth:`Recorder.record` is called on the request path (by the ASGI/WSGI middleware
for every request and by business operations) and only updates an in-memory
aggregate: one dict lookup and a few additions under an uncontended lock. Once
per ``metrics.cloudwatch.interval`` the flusher thread swaps the aggregates out and
turns them into CloudWatch data with dimensions

- ``Service, Environment, Operation``  (per route template or business operation),
- ``Service, Environment, Tier``       (per sampling tier),
- ``Service, Environment``             (the whole service).

``Errors`` and ``Faults`` are disjoint, as in X-Ray: a fault (5xx, exception) is
not also an error (4xx, failed outcome), so a failure rate is ``(Errors + Faults) /
Requests``. ``Latency`` is a distribution (≤ 100 values/counts) so CloudWatch
gives p50/p99, with exact Sum/SampleCount and Min/Max.

Dimensions never carry ids: an operation is a route template or a business
operation name; anything that still looks like an id (digits, UUIDs, long hex or
tokens, e-mail addresses) is replaced by ``{id}``. Cardinality is bounded so that
client-chosen names cannot blind the alarms of the operations that matter:

- a request that matched no route and answered 404 is ``METHOD {unmatched}``
  (bot scans, typos), and a method outside GET HEAD POST PUT PATCH DELETE OPTIONS
  is ``OTHER``: a handful of buckets, whatever the clients send;
- routes and business operations (recorded with a tier: the business-span API)
  have separate budgets of ``max_operations`` distinct names each, and the
  operations named in ``metrics.cloudwatch.operations`` are reserved, outside both;
- past its budget a new name is folded into ``other`` and counted
  (``metrics_operations_overflow{route|business}``).

Never raises into the caller.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from pulsetrace.forking import on_fork_in_child
from pulsetrace.metrics.datum import (
    Dimensions,
    MetricDatum,
    base_dimensions,
    bucket_index,
    clean_dimension_value,
    distribution_datum,
    value_datum,
)
from pulsetrace.metrics.publisher import MetricsPublisher, build_publisher
from pulsetrace.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from pulsetrace.config.schema import Config

_log = logging.getLogger("pulsetrace.metrics")

OTHER = "other"
#: The bucket of requests that matched no route and answered 404 (``GET {unmatched}``).
UNMATCHED = "{unmatched}"
#: Methods that keep their name in ``Operation``; any other is ``OTHER``.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
_TIERS = frozenset({"critical", "business", "general", "health"})
_MAX_CANON = 10_000

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{12,}$")
_SPLIT = re.compile(r"([/.:=,;\s]+)")
_EMAIL = re.compile(r"[^/\s@]+@[^/\s@]+")


def looks_like_id(token: str) -> bool:
    """Digits, an e-mail, a UUID, long hex or a token-like string: never a dimension value."""
    if not token or token.startswith("{"):
        return False
    if token.isdigit() or "@" in token or _UUID.match(token):
        return True
    if _HEX.match(token) and any(c.isdigit() for c in token):
        return True
    digits = sum(c.isdigit() for c in token)
    return len(token) > 24 or (digits >= 3 and digits * 3 >= len(token))


def unmatched_operation(operation: str) -> str:
    """``GET /wp-admin/setup.php`` → ``GET {unmatched}``; a non-standard method → ``OTHER {unmatched}``."""
    method = operation.partition(" ")[0]
    return f"{method if method in STANDARD_METHODS else OTHER_METHOD} {UNMATCHED}"


def _standard_method(operation: str) -> str:
    """``BREW /pot`` → ``OTHER /pot``: an HTTP operation keeps its method only when it is a standard one."""
    method, sep, rest = operation.partition(" ")
    if sep and rest[:1] in ("/", "{") and method not in STANDARD_METHODS:
        return f"{OTHER_METHOD} {rest}"
    return operation


def canonical_operation(operation: str) -> str:
    """``GET /users/8812/orders`` → ``GET /users/{id}/orders``; printable, ≤ 200 characters."""
    parts = _SPLIT.split(_EMAIL.sub("{id}", str(operation)))
    for i in range(0, len(parts), 2):
        if looks_like_id(parts[i]):
            parts[i] = "{id}"
    return clean_dimension_value("".join(parts), limit=200)


class _Agg:
    """One (operation, tier) within one interval. Plain attributes: updated inline on the hot path."""

    __slots__ = ("n", "errors", "faults", "total", "lo", "hi", "buckets")

    def __init__(self) -> None:
        self.n = 0
        self.errors = 0
        self.faults = 0
        self.total = 0.0
        self.lo = float("inf")
        self.hi = 0.0
        self.buckets: dict[int, list[float]] = {}

    def merge(self, other: _Agg) -> None:
        self.n += other.n
        self.errors += other.errors
        self.faults += other.faults
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        for idx, (c, s) in other.buckets.items():
            b = self.buckets.get(idx)
            if b is None:
                self.buckets[idx] = [c, s]
            else:
                b[0] += c
                b[1] += s


class Recorder:
    """In-memory request metrics per (operation, tier), flushed by a :class:`MetricsPublisher`.

    Threading: :meth:`record` may be called from any thread (and from the event loop);
    :meth:`collect` runs on the flusher thread.
    """

    def __init__(self, cfg: Config, metrics: SelfMetrics, publisher: MetricsPublisher | None = None) -> None:
        cw = cfg.metrics.cloudwatch
        self.metrics = metrics
        self.publisher = publisher
        #: Set in a forked child until its first request starts the publisher's thread.
        self._forked = False
        self.max_operations = cw.max_operations
        #: Always their own ``Operation``, outside both budgets: the dashboard's and alarms' operations.
        self._reserved = frozenset(canonical_operation(op) for op in cw.operations)
        self.dimensions: Dimensions = base_dimensions(cfg)
        self._rules = [(r.tier, r.method.upper(), r.path, r.name) for r in cfg.tracing.sampling.rules
                       if not r.host and not r.attributes]
        self._default_tier = cfg.tracing.sampling.default_tier
        self._lock = threading.Lock()
        #: (operation, tier) as given → the aggregate of the current interval (shared by raw keys
        #: with the same canonical operation).
        self._current: dict[tuple[str, str], _Agg] = {}
        #: (canonical operation, tier) → the aggregate of the current interval.
        self._by_canon: dict[tuple[str, str], _Agg] = {}
        #: (operation, tier) as given → (canonical operation, tier): remembered across intervals.
        self._canon: dict[tuple[str, str], tuple[str, str]] = {}
        self._operations: set[str] = set()  # every name admitted so far
        self._route_ops: set[str] = set()   # the route budget's names
        self._business_ops: set[str] = set()  # the business budget's names
        self._window_start = time.time()
        #: Every (operation, tier)'s aggregate since the process started, for ``/metrics`` (merged at collect).
        self._totals: dict[tuple[str, str], _Agg] = {}
        if publisher is not None:
            publisher.add_source(self.collect)
        on_fork_in_child(self._after_fork)

    # -- the request path ---------------------------------------------------------------------------------------

    def record(self, operation: str, tier: str, latency_ms: float, error: bool, fault: bool, *,
               routed: bool = True, status: int = 0) -> None:
        """Count one request or business operation.

        ``tier`` is ``""`` for HTTP requests (found from the rules) and the operation's tier for
        business operations, which have their own name budget. HTTP middleware pass
        ``routed=False`` when the framework matched no route (``operation`` then carries a
        template made from the raw path) and the response ``status``: such a request that
        answered 404 is counted as ``METHOD {unmatched}``.
        """
        if self._forked:
            self._resume_after_fork()
        try:
            if not routed and status == 404:
                operation = unmatched_operation(operation)
            if not 0.0 <= latency_ms <= 3_600_000.0:  # NaN, negative or absurd: never poison the sums
                latency_ms = 3_600_000.0 if latency_ms > 0 else 0.0
            key = (operation, tier)
            with self._lock:
                agg = self._current.get(key)
                if agg is None:
                    agg = self._new_key(key)
                agg.n += 1
                if fault:
                    agg.faults += 1
                elif error:
                    agg.errors += 1
                agg.total += latency_ms
                if latency_ms < agg.lo:
                    agg.lo = latency_ms
                if latency_ms > agg.hi:
                    agg.hi = latency_ms
                b = agg.buckets.get(idx := bucket_index(latency_ms))
                if b is None:
                    agg.buckets[idx] = [1, latency_ms]
                else:
                    b[0] += 1
                    b[1] += latency_ms
        except Exception:  # telemetry never raises into the application
            self.metrics.drop_metrics("record_failed")

    def _new_key(self, key: tuple[str, str]) -> _Agg:
        # With the lock held, once per raw key per interval: raw keys that share a canonical
        # operation (ids in paths) share one aggregate.
        canon = self._canonical(key)
        agg = self._by_canon.get(canon)
        if agg is None:
            agg = self._by_canon[canon] = _Agg()
        if len(self._current) < _MAX_CANON:
            self._current[key] = agg
        return agg

    # -- tiers and canonical operations (off the hot path) -----------------------------------------------------

    def _tier_of(self, operation: str, tier: str) -> str:
        if tier in _TIERS:
            return tier
        if tier:
            return self._default_tier
        method, _, path = operation.partition(" ")
        is_http = bool(path.startswith("/") and method.isupper())
        for rule_tier, rule_method, rule_path, rule_name in self._rules:
            if rule_method and (not is_http or rule_method != method):
                continue
            if rule_path and (not is_http or not fnmatch.fnmatchcase(path, rule_path)):
                continue
            if rule_name and not fnmatch.fnmatchcase(operation, rule_name):
                continue
            if rule_method or rule_path or rule_name:
                return rule_tier
        return self._default_tier

    def _canonical(self, key: tuple[str, str]) -> tuple[str, str]:
        found = self._canon.get(key)
        if found is not None:
            return found
        business = key[1] != ""
        op = canonical_operation(key[0]) if business else _standard_method(canonical_operation(key[0]))
        tier = self._tier_of(key[0], key[1])
        if op not in self._reserved and not op.endswith(" " + UNMATCHED):
            budget = self._business_ops if business else self._route_ops
            if op not in budget:
                if len(budget) < self.max_operations:
                    budget.add(op)
                else:
                    op = OTHER
                    self.metrics.inc("metrics_operations_overflow", reason="business" if business else "route")
        self._operations.add(op)
        result = (op, tier)
        if len(self._canon) < _MAX_CANON:
            self._canon[key] = result
        return result

    # -- the flusher side ---------------------------------------------------------------------------------------

    def collect(self, now: float) -> list[MetricDatum]:
        """Swap the interval's aggregates out and return them as CloudWatch data."""
        with self._lock:
            current, self._by_canon = self._by_canon, {}
            self._current = {}
            start, self._window_start = self._window_start, now
            for key, agg in current.items():
                self._totals.setdefault(key, _Agg()).merge(agg)
        if not current:
            return []
        by_op: dict[str, _Agg] = {}
        by_tier: dict[str, _Agg] = {}
        service = _Agg()
        for (op, tier), agg in current.items():
            mine = by_op.get(op)
            if mine is None:
                # Usually one tier per operation: take the aggregate as it is. A later one merged into it
                # cannot be counted twice: this one's tier and service merges happen in this iteration.
                by_op[op] = agg
            else:
                mine.merge(agg)
            by_tier.setdefault(tier, _Agg()).merge(agg)
            service.merge(agg)
        # The data describe [start, now): stamped at the start so they land in the period they measure.
        ts = start
        out: list[MetricDatum] = []
        for op, agg in sorted(by_op.items()):
            out.extend(self._data(self.dimensions + (("Operation", op),), ts, agg))
        for tier, agg in sorted(by_tier.items()):
            out.extend(self._data(self.dimensions + (("Tier", tier),), ts, agg))
        out.extend(self._data(self.dimensions, ts, service))
        return out

    @staticmethod
    def _data(dims: Dimensions, ts: float, agg: _Agg) -> list[MetricDatum]:
        return [
            value_datum("Requests", "Count", dims, ts, agg.n),
            value_datum("Errors", "Count", dims, ts, agg.errors),
            value_datum("Faults", "Count", dims, ts, agg.faults),
            distribution_datum("Latency", "Milliseconds", dims, ts, agg.buckets, agg.lo, agg.hi),
        ]

    def totals(self) -> dict[tuple[str, str], tuple[int, int, int, float, dict[int, float]]]:
        """Since the process started, per (operation, tier): requests, errors, faults, latency sum (ms) and
        the latency histogram ``{bucket: count}``, the interval in progress included (for ``/metrics``)."""
        with self._lock:
            merged: dict[tuple[str, str], _Agg] = {}
            for source in (self._totals, self._by_canon):
                for key, agg in source.items():
                    merged.setdefault(key, _Agg()).merge(agg)
        return {key: (a.n, a.errors, a.faults, a.total, {i: c for i, (c, _) in a.buckets.items()})
                for key, a in merged.items()}

    def operations(self) -> list[str]:
        """The distinct operations seen so far (canonical names)."""
        with self._lock:
            return sorted(self._operations)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def span_hook(self, span: ReadableSpan) -> None:
        """Deliberately nothing: request metrics come through :meth:`record` for every request.

        Spans reach the pipeline only when recorded (sampled, or kept for keep-errors), so
        counting here would count a sample, and counting both would count twice.
        """
        return None

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()

    def flush(self, timeout: float = 5.0) -> bool:
        return self.publisher.flush(timeout, force=True) if self.publisher is not None else True

    def shutdown(self, timeout: float = 2.0) -> None:
        if self.publisher is not None:
            self.publisher.shutdown(timeout)

    def _resume_after_fork(self) -> None:
        self._forked = False
        if self.publisher is not None:
            self.publisher.resume_after_fork()

    def _after_fork(self) -> None:
        # The child must not report the parent's requests a second time.
        self._forked = True
        self._lock = threading.Lock()
        self._current = {}
        self._by_canon = {}
        self._totals = {}
        self._window_start = time.time()


def build_recorder(cfg: Config, metrics: SelfMetrics) -> Recorder | None:
    """The recorder and its publisher for ``cfg``; ``None`` when ``metrics.cloudwatch.mode`` is ``off``."""
    publisher = build_publisher(cfg, metrics)
    if publisher is None:
        return None
    return Recorder(cfg, metrics, publisher)

