"""Business metrics from code: ``pulsetrace.metric("Revenue", 499.0, unit="None", method="upi")``.

:func:`metric` and :func:`count` are the public API (re-exported by the ``pulsetrace``
facade). Each call is an in-memory update on the caller's thread: one tuple built from
the keyword arguments, one dict lookup and four additions under an uncontended lock.
Once per ``metrics.cloudwatch.interval`` the flusher thread swaps the aggregates out
and sends one statistic set (``SampleCount``, ``Sum``, ``Minimum``, ``Maximum``) per
metric and dimension set through the same EMF/PutMetricData sink as the request
metrics, with dimensions ``Service, Environment`` plus the keywords given.

The first time a (name, unit, dimensions) combination is seen it is checked, and the
verdict is remembered, so the rules below cost nothing on later calls:

- **names**: a non-empty printable string of at most 255 characters that carries no
  personal data; the names of the agent's own metrics (``Requests``, ``Latency``,
  ``HealthScore`` ...) are refused, so a business metric can never blur an alarm's
  series; at most ``max_metrics`` distinct names per process. A refused call is
  dropped and counted (``metrics_dropped{invalid_metric|reserved_name|invalid_unit|
  metric_budget|invalid_value}``);
- **dimension names**: at most :data:`MAX_USER_DIMENSIONS`; ``Service`` and
  ``Environment`` are the agent's; names are cut to 64 characters of letters, digits
  and ``_ . -``;
- **dimension values never carry personal data or ids**: a value under a key that
  names a secret or personal data (``email``, ``phone``, ``token`` ... the one
  vocabulary of :mod:`pulsetrace.config.secrets` and :mod:`pulsetrace.instrumentation.pii`)
  or in which the PII scrubber finds anything (an e-mail address, a phone or card
  number, a credential) becomes ``redacted``; a value under an id key (``user_id``,
  ``customerId``, ``tracing.pii.hash_keys``) or that looks like an id (digits, UUIDs,
  long hex or tokens) becomes ``{id}``;
- **cardinality**: per metric and dimension, at most ``max_dimension_values`` distinct
  values; later ones are folded into ``other`` and every folded call is counted
  (``metrics_dimension_overflow{METRIC}``); and at most 10 × that many dimension sets per
  metric (combinations past it have every value ``other``).

Never raises into the caller; never does I/O.
"""

from __future__ import annotations

import enum
import math
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pulsetrace.config.secrets import is_secret_key
from pulsetrace.forking import on_fork_in_child
from pulsetrace.instrumentation import hooks
from pulsetrace.instrumentation.pii import PII_KEY_FRAGMENTS, scrub_text
from pulsetrace.metrics.datum import (
    MAX_NAME,
    VALID_UNITS,
    Dimensions,
    MetricDatum,
    base_dimensions,
    clean_dimension_value,
    stats_datum,
)
from pulsetrace.metrics.request_metrics import looks_like_id
from pulsetrace.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.metrics.publisher import MetricsPublisher

__all__ = ["RESERVED_NAMES", "BusinessMetrics", "count", "metric"]

OTHER = "other"
REDACTED = "redacted"
ID = "{id}"
#: Dimensions a business metric may add to ``Service, Environment``.
MAX_USER_DIMENSIONS = 8
#: Names of the metrics the agent emits itself: a business metric may not take one.
RESERVED_NAMES = frozenset({
    "Requests", "Errors", "Faults", "Latency", "HealthStatus", "HealthScore", "ProbeStatus", "ProbeUp",
    "ProbeLatency", "RevenueAtRisk", "UsersAffected", "Availability", "ErrorBudgetRemaining", "BurnRate",
    "SpansExported", "SpansDropped", "MetricsDropped", "MetricsDimensionOverflow", "MetricsOperationsOverflow",
})
_AGENT_DIMENSIONS = frozenset({"Service", "Environment"})
_DIM_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")
_ID_CAMEL = re.compile(r"[a-z0-9]Id$")
_ID_SUFFIX = re.compile(r"(?:^|[_.\-])id$", re.IGNORECASE)
#: A metric's dimension sets are at most this many times ``max_dimension_values``.
SERIES_PER_VALUE = 10
#: Raw keys remembered with their verdict; past this, new raw keys are judged on every call (still correct).
_MAX_CACHE = 10_000

#: A canonical series: (name, unit, kind, user dimensions sorted by name).
Series = tuple[str, str, str, Dimensions]


class _Stat:
    __slots__ = ("hi", "lo", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf


def _is_id_key(key: str) -> bool:
    return bool(_ID_CAMEL.search(key) or _ID_SUFFIX.search(key))


def _names_pii(key: str) -> bool:
    norm = key.lower().replace("-", "_").replace(".", "_")
    return is_secret_key(key) or any(f in norm for f in PII_KEY_FRAGMENTS)


class BusinessMetrics:
    """Business metrics of one process, flushed by a :class:`MetricsPublisher`.

    Threading: :meth:`record` may be called from any thread (and from the event loop);
    :meth:`collect` runs on the flusher thread.
    """

    def __init__(self, cfg: Config, metrics: SelfMetrics, publisher: MetricsPublisher | None = None) -> None:
        cw = cfg.metrics.cloudwatch
        self.metrics = metrics
        self.max_metrics = cw.max_metrics
        self.max_values = cw.max_dimension_values
        self.dimensions: Dimensions = base_dimensions(cfg)
        self._hash_keys = frozenset(k.lower() for k in cfg.tracing.pii.hash_keys)
        self._lock = threading.Lock()
        #: raw key → (series, folded) or None (refused); remembered across intervals.
        self._verdicts: dict[tuple[object, ...], tuple[Series, bool] | None] = {}
        #: raw key → this interval's aggregate (the one of its series).
        self._current: dict[tuple[object, ...], _Stat] = {}
        self._by_series: dict[Series, _Stat] = {}
        self._names: set[str] = set()
        self._values: dict[tuple[str, str], set[str]] = {}  # (metric, dimension) → admitted values
        #: metric → its dimension sets: combinations of admitted values are bounded too.
        self._series: dict[str, set[Dimensions]] = {}
        self.max_series = SERIES_PER_VALUE * self.max_values
        #: Every series' totals since the process started: (calls, sum), for ``/metrics``.
        self._totals: dict[Series, list[float]] = {}
        self._window_start = time.time()
        if publisher is not None:
            publisher.add_source(self.collect)
        on_fork_in_child(self._after_fork)

    # -- the request path ---------------------------------------------------------------------------------------

    def record(self, name: str, value: float, unit: str, dimensions: dict[str, object],
               kind: str = "metric") -> None:
        """Add ``value`` to the series of ``name`` and ``dimensions`` (see the module docstring)."""
        try:
            v = float(value)
            if v - v != 0.0:  # NaN or ±inf: one poisoned value would spoil the period's Sum
                self.metrics.drop_metrics("invalid_value")
                return
            try:
                key: tuple[object, ...] = (name, unit, kind, *dimensions.items())
                hash(key)
            except TypeError:  # an unhashable value: judged by its text
                key = (name, unit, kind, *((k, str(x)) for k, x in dimensions.items()))
            with self._lock:
                agg = self._current.get(key)
                if agg is None:
                    agg = self._new_key(key, name, unit, kind, dimensions)
                    if agg is None:
                        return
                agg.n += 1
                agg.total += v
                if v < agg.lo:  # noqa: PLR1730 - a comparison is cheaper than a call on the request path
                    agg.lo = v
                if v > agg.hi:  # noqa: PLR1730
                    agg.hi = v
        except Exception:  # telemetry never raises into the application
            self.metrics.drop_metrics("record_failed")

    def _new_key(self, key: tuple[object, ...], name: str, unit: str, kind: str,
                 dimensions: Mapping[str, object]) -> _Stat | None:
        # With the lock held, once per raw key per interval.
        if key in self._verdicts:
            verdict = self._verdicts[key]
        else:
            verdict = self._judge(name, unit, kind, dimensions)
            if len(self._verdicts) < _MAX_CACHE:
                self._verdicts[key] = verdict
        if verdict is None:
            return None
        series, folded = verdict
        if folded:
            self.metrics.inc("metrics_dimension_overflow", reason=series[0])
        agg = self._by_series.get(series)
        if agg is None:
            agg = self._by_series[series] = _Stat()
        # A folded key is not remembered for the interval: every folded call is counted.
        if not folded and len(self._current) < _MAX_CACHE:
            self._current[key] = agg
        return agg

    # -- the rules (off the hot path) ---------------------------------------------------------------------------

    def _judge(self, name: object, unit: object, kind: str,
               dimensions: Mapping[str, object]) -> tuple[Series, bool] | None:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or clean_dimension_value(
                name, MAX_NAME) != name or scrub_text(name) != name:
            self.metrics.drop_metrics("invalid_metric")
            return None
        if name in RESERVED_NAMES:
            self.metrics.drop_metrics("reserved_name")
            return None
        if not isinstance(unit, str) or unit not in VALID_UNITS:
            self.metrics.drop_metrics("invalid_unit")
            return None
        if name not in self._names:
            if len(self._names) >= self.max_metrics:
                self.metrics.drop_metrics("metric_budget")
                return None
            self._names.add(name)
        dims: dict[str, str] = {}
        folded = False
        for raw_key, raw_value in dimensions.items():
            dim = _DIM_NAME.sub("_", str(raw_key))[:64].strip("_") or "dimension"
            if dim in _AGENT_DIMENSIONS or dim in dims:
                continue
            if len(dims) >= MAX_USER_DIMENSIONS:
                self.metrics.inc("metrics_dimensions_dropped", reason=name)
                break
            value = self.dimension_value(dim, raw_value)
            admitted = self._values.setdefault((name, dim), set())
            if value not in admitted:
                if len(admitted) >= self.max_values:
                    value = OTHER
                    folded = True
                else:
                    admitted.add(value)
            dims[dim] = value
        pairs = tuple(sorted(dims.items()))
        known = self._series.setdefault(name, set())
        if pairs not in known:
            if len(known) >= self.max_series:
                # every value admitted, but too many combinations of them: the whole set is `other`
                pairs = tuple((k, OTHER) for k, _ in pairs)
                folded = True
            known.add(pairs)
        return (name, unit, kind, pairs), folded

    def dimension_value(self, key: str, raw: object) -> str:
        """The value a dimension ``key`` may carry for ``raw``: itself, ``redacted`` or ``{id}``."""
        if isinstance(raw, enum.Enum):  # ``Method.UPI`` is recorded as its value
            raw = raw.value
        if isinstance(raw, bool):
            return "true" if raw else "false"
        text = clean_dimension_value(str(raw))
        if _names_pii(key) or scrub_text(text) != text:
            return REDACTED
        if _is_id_key(key) or key.lower() in self._hash_keys or (
                looks_like_id(text) and not (text.isdigit() and len(text) <= 3)):
            return ID
        return text

    # -- the flusher side ---------------------------------------------------------------------------------------

    def collect(self, now: float) -> list[MetricDatum]:
        """Swap the interval's aggregates out and return them as CloudWatch data (statistic sets)."""
        with self._lock:
            current, self._by_series = self._by_series, {}
            self._current = {}
            start, self._window_start = self._window_start, now
            for series, agg in current.items():
                total = self._totals.get(series)
                if total is None:
                    self._totals[series] = [float(agg.n), agg.total]
                else:
                    total[0] += agg.n
                    total[1] += agg.total
        out: list[MetricDatum] = []
        for (name, unit, _kind, dims), agg in sorted(current.items(), key=lambda kv: kv[0]):
            if agg.n:
                out.append(stats_datum(name, unit, self.dimensions + dims, start, agg.n, agg.total, agg.lo, agg.hi))
        return out

    def totals(self) -> dict[Series, tuple[float, float]]:
        """Every series' (calls, sum) since the process started, including the interval in progress."""
        with self._lock:
            out = {s: (t[0], t[1]) for s, t in self._totals.items()}
            for series, agg in self._by_series.items():
                calls, total = out.get(series, (0.0, 0.0))
                out[series] = (calls + agg.n, total + agg.total)
        return out

    def _after_fork(self) -> None:
        # The child must not report the parent's values a second time.
        self._lock = threading.Lock()
        self._current = {}
        self._by_series = {}
        self._totals = {}
        self._window_start = time.time()


# -- the public API ---------------------------------------------------------------------------------------------


def metric(name: str, value: float, unit: str = "None", **dimensions: object) -> None:
    """Record ``value`` for the business metric ``name`` (e.g. ``metric("Revenue", 499.0, method="upi")``).

    ``unit`` is a CloudWatch unit (``Count``, ``Milliseconds``, ``Bytes``, ``Percent``, ``None`` ...).
    Without a running agent (or with metrics off) it does nothing. Never raises.
    """
    recorder = hooks.metric_recorder
    if recorder is not None:
        recorder.record(name, value, unit, dimensions)


def count(name: str, n: float = 1, **dimensions: object) -> None:
    """Count ``n`` occurrences of ``name`` (e.g. ``count("UserRegistrations", method="google")``)."""
    recorder = hooks.metric_recorder
    if recorder is not None:
        recorder.record(name, n, "Count", dimensions, "count")
