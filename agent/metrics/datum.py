"""CloudWatch metric data: the datum model, dimensions, the latency histogram and the sink protocol.

The bottom of :mod:`pulsetrace.metrics`: the sources (request metrics, health metrics, the
agent's own counters) make :class:`MetricDatum` values, the sinks (EMF, PutMetricData) take
them, and the publisher moves them between the two. Pure data and functions: no I/O, no threads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pulsetrace.config.problems import Problem

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

#: The units CloudWatch accepts (PutMetricData ``Unit``, EMF ``Unit``).
VALID_UNITS: frozenset[str] = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
})
MAX_DIMENSIONS = 30
MAX_DIMENSION_VALUE = 1024
MAX_NAME = 255

Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MetricDatum:
    """One metric value for one dimension set, in one of three shapes.

    - a single ``value``;
    - a statistic set (``count``, ``total``, ``minimum``, ``maximum``; ``values`` empty);
    - a distribution: a statistic set plus ``values``/``counts`` (at most 100 distinct
      values, so it fits both EMF and PutMetricData) from which CloudWatch computes percentiles.
    """

    name: str
    unit: str
    dimensions: Dimensions
    timestamp: float
    value: float | None = None
    count: float = 0.0
    total: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()

    @property
    def is_value(self) -> bool:
        return self.value is not None


def value_datum(name: str, unit: str, dimensions: Dimensions, timestamp: float, value: float) -> MetricDatum:
    return MetricDatum(name, unit, dimensions, timestamp, value=float(value))


def stats_datum(name: str, unit: str, dimensions: Dimensions, timestamp: float, count: float, total: float,
                minimum: float, maximum: float) -> MetricDatum:
    return MetricDatum(name, unit, dimensions, timestamp, count=float(count), total=float(total),
                       minimum=float(minimum), maximum=float(maximum))


# -- latency histogram: at most 100 buckets, so every distribution fits EMF (100) and the API (150) ------------

HISTOGRAM_BUCKETS = 100
_BASE_MS = 0.1
_TOP_MS = 300_000.0
#: Bucket ``i >= 1`` holds ``[BASE * R**(i-1), BASE * R**i)``; R ≈ 1.16 (a bucket is about ±8 % wide).
_LOG_R = math.log(_TOP_MS / _BASE_MS) / (HISTOGRAM_BUCKETS - 2)
_INV_LOG_R = 1.0 / _LOG_R
_LOG_BASE = math.log(_BASE_MS)


def bucket_index(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds (0 … 99)."""
    if ms <= _BASE_MS:
        return 0
    i = 1 + int((math.log(ms) - _LOG_BASE) * _INV_LOG_R)
    return i if i < HISTOGRAM_BUCKETS else HISTOGRAM_BUCKETS - 1


def bucket_upper_ms(index: int) -> float:
    """The upper bound (ms) of bucket ``index``: every value in buckets ``0 … index`` is below it.

    The last bucket is open (``inf``)."""
    if index >= HISTOGRAM_BUCKETS - 1:
        return math.inf
    return _BASE_MS * math.exp(_LOG_R * index)


def distribution_datum(name: str, unit: str, dimensions: Dimensions, timestamp: float,
                       buckets: dict[int, list[float]], minimum: float, maximum: float) -> MetricDatum:
    """A distribution from ``{bucket: [count, sum]}``.

    Each bucket is represented by the mean of the values that fell in it, so the
    ``Sum`` and ``Average`` CloudWatch computes from ``Values``/``Counts`` are exact and
    the percentiles are within a bucket's width.
    """
    values: list[float] = []
    counts: list[float] = []
    count = total = 0.0
    for idx in sorted(buckets):
        n, s = buckets[idx]
        if n <= 0:
            continue
        values.append(round(s / n, 6))
        counts.append(float(n))
        count += n
        total += s
    return MetricDatum(name, unit, dimensions, timestamp, count=count, total=total, minimum=minimum,
                       maximum=maximum, values=tuple(values), counts=tuple(counts))


# -- dimension hygiene ------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_dimension_value(value: str, limit: int = 250) -> str:
    """Printable, trimmed, non-empty, at most ``limit`` characters."""
    text = _CONTROL.sub(" ", str(value)).strip()
    if len(text) > limit:
        text = text[:limit]
    return text or "unknown"


def base_dimensions(cfg: Config) -> Dimensions:
    return (("Service", clean_dimension_value(cfg.service.name)),
            ("Environment", clean_dimension_value(cfg.service.environment)))


_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9.\-_/#:]{1,255}$")


def config_problems(cfg: Config) -> list[Problem]:
    """Problems in ``metrics.cloudwatch`` that the schema cannot express (the CLI's validator may add these)."""
    cw = cfg.metrics.cloudwatch
    problems: list[Problem] = []
    if not _NAMESPACE_RE.match(cw.namespace) or cw.namespace.startswith("AWS/"):
        problems.append(Problem("metrics.cloudwatch.namespace", "not a custom CloudWatch namespace", cw.namespace,
                                "1-255 of letters, digits and . - _ / # :, not starting with AWS/"))
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", cw.alarm_prefix):
        problems.append(Problem("metrics.cloudwatch.alarm_prefix", "invalid name prefix", cw.alarm_prefix,
                                "1-64 of letters, digits, '-' and '_'"))
    if not re.fullmatch(r"p(?:[1-9]?\d(?:\.\d{1,3})?|100)", cw.latency_percentile):
        problems.append(Problem("metrics.cloudwatch.latency_percentile", "not a CloudWatch percentile statistic",
                                cw.latency_percentile, "p50, p90, p95, p99, p99.9 ..."))
    for url_key, url in [("runbook_url", cw.runbook_url), *((f"runbooks.{k}", v) for k, v in cw.runbooks.items())]:
        if url and not url.startswith(("https://", "http://")):
            problems.append(Problem(f"metrics.cloudwatch.{url_key}", "not an http(s) URL", url,
                                    "https://runbooks.example.test/{alarm}"))
    out = cw.emf_output
    if not (out == "stdout" or out.startswith(("file:", "tcp://", "udp://"))):
        problems.append(Problem("metrics.cloudwatch.emf_output", "unknown EMF output", out,
                                "stdout, file:PATH, tcp://HOST:PORT or udp://HOST:PORT"))
    for scheme in ("tcp://", "udp://"):
        if out.startswith(scheme):
            host, sep, port = out[len(scheme):].rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                problems.append(Problem("metrics.cloudwatch.emf_output", "not a HOST:PORT address", out,
                                        f"e.g. {scheme}127.0.0.1:25888"))
    if out.startswith("file:") and not out[5:]:
        problems.append(Problem("metrics.cloudwatch.emf_output", "file: needs a path", out, "file:/var/log/emf.log"))
    return problems


# -- where the data go ------------------------------------------------------------------------------------------


class Sink(Protocol):
    """Where the data go. ``send`` runs on the flusher thread only and never raises.

    It returns the data it could not deliver for a passing reason (to be retried at
    the next flush); data it will never be able to deliver it drops and counts itself.
    """

    name: str

    def send(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]: ...

    def close(self) -> None: ...

    def after_fork(self) -> None: ...


Source = Callable[[float], Sequence[MetricDatum]]
