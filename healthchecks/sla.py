"""SLA arithmetic per probe: time-weighted availability, error budget, burn rates, latency.

Each probe result covers the time since the previous one (at most ``1.5 × interval +
timeout``; the first covers one interval); its seconds go to per-minute buckets as up,
degraded or down time (split across minute boundaries), with a count per status and a
latency histogram. UNKNOWN results count as neither. Availability over a window is
``available / observed`` seconds, where DEGRADED counts as available unless
``degraded_is_available`` is false. Unobserved time (agent not running) counts as neither.

Units in the reports (the details and ``sla`` JSON): ``target`` and ``availability`` are
percent (99.9, 99.95); ``budget_remaining`` is the fraction of the window's error budget
left (1 untouched, 0 spent, negative overspent); ``*_s`` are seconds; burn rates are
multiples of the sustainable rate.

- Error budget for a window of W seconds and target T %: ``(1 - T/100) × W`` (99.9 % over
  30 d = 43.2 min); consumed = unavailable seconds in the window.
- Burn rate over L seconds: (unavailable / observed) / (1 - T/100); 1.0 spends the budget
  exactly over the SLA period. Alerts as the SRE workbook's multi-window table: page when
  both the long and the short window burn faster than the factor (1 h & 5 m at 14.4×,
  6 h & 30 m at 6×, 3 d & 6 h at 1×); a window with fewer than ``min_samples`` results
  has no burn rate, and an alert needs at least ``min_failures`` failed results.

Memory: a ring of 30 days of minute buckets in flat arrays (about 2.4 MB per probe) plus
hourly sums, so a window query reads at most ~840 slots; latency histograms are kept for
``hist_minutes``. Pure computation: the clock is a parameter, persistence is
:mod:`pulsetrace.healthchecks.history`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.snapshot import BurnAlert, SlaReport, SlaWindow

MINUTE = 60
RETENTION_MINUTES = 30 * 1440
WINDOWS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
#: Windows whose report carries the revenue at risk over their measured minutes.
REVENUE_WINDOWS = ("24h", "30d")
#: (name, long window s, short window s, burn factor) from the SRE workbook, chapter 5.
BURN_WINDOWS: tuple[tuple[str, int, int, float], ...] = (
    ("1h", 3600, 300, 14.4), ("6h", 6 * 3600, 1800, 6.0), ("3d", 3 * 86400, 6 * 3600, 1.0))

# Latency histogram: bin i holds [0.1 ms × 1.25^i, 0.1 ms × 1.25^(i+1)); ~12 % resolution.
_HIST_BASE_MS = 0.1
_HIST_FACTOR = 1.25
HIST_BINS = 80

_UP, _DEG, _DOWN, _NUP, _NDEG, _NDOWN = range(6)
_FIELDS = 6


def latency_bin(ms: float) -> int:
    if ms <= _HIST_BASE_MS:
        return 0
    return min(HIST_BINS - 1, int(math.log(ms / _HIST_BASE_MS) / math.log(_HIST_FACTOR)))


def bin_value(i: int) -> float:
    """The geometric middle of bin ``i``, in ms."""
    return float(_HIST_BASE_MS * _HIST_FACTOR ** (i + 0.5))


def percentiles(hist: dict[int, int], qs: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, float] | None:
    total = sum(hist.values())
    if total == 0:
        return None
    out: dict[str, float] = {}
    ordered = sorted(hist.items())
    for q in qs:
        need = q * total
        seen = 0
        value = bin_value(ordered[-1][0])
        for i, n in ordered:
            seen += n
            if seen >= need:
                value = bin_value(i)
                break
        out[f"p{q * 100:g}"] = round(value, 3)
    return out


@dataclass
class Sums:
    """Seconds and result counts over some span of minutes."""

    up_s: float = 0.0
    degraded_s: float = 0.0
    down_s: float = 0.0
    n_up: int = 0
    n_degraded: int = 0
    n_down: int = 0

    def add(self, values: Iterable[float]) -> None:
        v = list(values)
        self.up_s += v[_UP]
        self.degraded_s += v[_DEG]
        self.down_s += v[_DOWN]
        self.n_up += int(v[_NUP])
        self.n_degraded += int(v[_NDEG])
        self.n_down += int(v[_NDOWN])

    @property
    def observed_s(self) -> float:
        return self.up_s + self.degraded_s + self.down_s

    @property
    def samples(self) -> int:
        return self.n_up + self.n_degraded + self.n_down

    def bad_s(self, degraded_is_available: bool) -> float:
        return self.down_s + (0.0 if degraded_is_available else self.degraded_s)

    def failures(self, degraded_is_available: bool) -> int:
        return self.n_down + (0 if degraded_is_available else self.n_degraded)

    def revenue_at_risk(self, revenue_per_minute: float, degraded_weight: float) -> float:
        """Revenue at risk over these seconds: all of the DOWN time, ``degraded_weight`` of the DEGRADED time."""
        return revenue_per_minute * (self.down_s + degraded_weight * self.degraded_s) / 60.0


@dataclass(frozen=True)
class MinuteRow:
    """One persisted bucket (see :mod:`pulsetrace.healthchecks.history`)."""

    minute: int
    up_s: float
    degraded_s: float
    down_s: float
    n_up: int
    n_degraded: int
    n_down: int
    hist: dict[int, int] = field(default_factory=dict)


class _Ring:
    """Fixed-size ring of buckets keyed by an integer period id (minute or hour)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.ids = array("q", [-1]) * slots
        self.data = array("d", [0.0]) * (slots * _FIELDS)

    def _slot(self, key: int, create: bool) -> int | None:
        i = key % self.slots
        if self.ids[i] != key:
            if not create:
                return None
            self.ids[i] = key
            base = i * _FIELDS
            for k in range(_FIELDS):
                self.data[base + k] = 0.0
        return i * _FIELDS

    def add(self, key: int, index: int, value: float) -> None:
        base = self._slot(key, True)
        assert base is not None
        self.data[base + index] += value

    def get(self, key: int) -> array[float] | None:
        base = self._slot(key, False)
        return None if base is None else self.data[base:base + _FIELDS]


class SlaTracker:
    """Minute buckets of one probe. Not thread-safe: owned by the health loop."""

    def __init__(self, target: float, *, degraded_is_available: bool = True, min_samples: int = 12,
                 min_failures: int = 3, hist_minutes: int = 1440) -> None:
        self.target = target
        self.degraded_is_available = degraded_is_available
        self.min_samples = min_samples
        self.min_failures = min_failures
        self.hist_minutes = hist_minutes
        self._minutes = _Ring(RETENTION_MINUTES + 60)
        self._hours = _Ring(RETENTION_MINUTES // 60 + 2)
        self._hist: dict[int, dict[int, int]] = {}
        self._dirty: set[int] = set()
        self.last_result_at: float | None = None

    # -- recording -------------------------------------------------------------------------

    def record(self, at: float, status: Status, latency_s: float, covered_s: float) -> None:
        """A result at ``at`` covering the ``covered_s`` seconds before it."""
        self.last_result_at = at if self.last_result_at is None else max(self.last_result_at, at)
        if status is Status.UNKNOWN or covered_s <= 0:
            return
        index = {Status.UP: _UP, Status.DEGRADED: _DEG, Status.DOWN: _DOWN}[status]
        start = at - covered_s
        t = start
        while t < at:  # split the covered time over the minutes it spans
            minute = int(t // MINUTE)
            end = min(at, (minute + 1) * MINUTE)
            self._add(minute, index, end - t)
            t = end
        last = math.ceil(at / MINUTE) - 1  # the minute holding the last instant the result covers
        self._add(last, index + 3, 1.0)
        h = self._hist.setdefault(last, {})
        b = latency_bin(latency_s * 1000)
        h[b] = h.get(b, 0) + 1
        self._prune_hist(last)

    def _add(self, minute: int, index: int, value: float) -> None:
        self._minutes.add(minute, index, value)
        self._hours.add(minute // 60, index, value)
        self._dirty.add(minute)

    def _prune_hist(self, newest: int) -> None:
        if len(self._hist) > self.hist_minutes + 60:
            cutoff = newest - self.hist_minutes
            for m in [m for m in self._hist if m < cutoff]:
                del self._hist[m]

    def load(self, rows: Iterable[MinuteRow], now: float) -> int:
        """Restore persisted buckets (older than 30 days are skipped); returns how many."""
        oldest = int(now // MINUTE) - RETENTION_MINUTES
        n = 0
        for row in rows:
            if row.minute <= oldest:
                continue
            for index, value in enumerate((row.up_s, row.degraded_s, row.down_s, row.n_up, row.n_degraded,
                                           row.n_down)):
                if value:
                    self._minutes.add(row.minute, index, float(value))
                    self._hours.add(row.minute // 60, index, float(value))
            if row.hist and row.minute > int(now // MINUTE) - self.hist_minutes:
                self._hist[row.minute] = dict(row.hist)
            n += 1
        return n

    def take_dirty(self) -> list[MinuteRow]:
        """Buckets changed since the last call (for persistence)."""
        out = []
        for minute in sorted(self._dirty):
            v = self._minutes.get(minute)
            if v is None:
                continue
            out.append(MinuteRow(minute, v[_UP], v[_DEG], v[_DOWN], int(v[_NUP]), int(v[_NDEG]), int(v[_NDOWN]),
                                 dict(self._hist.get(minute, {}))))
        self._dirty.clear()
        return out

    # -- queries -----------------------------------------------------------------------------

    def sums(self, now: float, seconds: int) -> Sums:
        """Totals over the minute buckets overlapping ``[now - seconds, now]``."""
        first, last = self._span(now, seconds)
        out = Sums()
        m = first
        while m <= last:
            if m % 60 == 0 and m + 59 <= last:
                hour = self._hours.get(m // 60)
                if hour is not None:
                    out.add(hour)
                m += 60
                continue
            v = self._minutes.get(m)
            if v is not None:
                out.add(v)
            m += 1
        return out

    @staticmethod
    def _span(now: float, seconds: int) -> tuple[int, int]:
        last = math.ceil(now / MINUTE) - 1 if now % MINUTE == 0 else int(now // MINUTE)
        return int((now - seconds) // MINUTE), last

    def _minutes_iter(self, now: float, seconds: int) -> Iterator[int]:
        first, last = self._span(now, seconds)
        return iter(range(first, last + 1))

    def latency(self, now: float, seconds: int) -> dict[str, float] | None:
        if seconds // MINUTE > self.hist_minutes:
            return None
        merged: dict[int, int] = {}
        for m in self._minutes_iter(now, seconds):
            for b, n in self._hist.get(m, {}).items():
                merged[b] = merged.get(b, 0) + n
        return percentiles(merged)

    @property
    def allowed_fraction(self) -> float:
        return max(1.0 - self.target / 100.0, 1e-9)

    def availability(self, s: Sums) -> float | None:
        """The available share of the observed time, as a fraction of 1 (reports show it in percent)."""
        observed = s.observed_s
        if observed <= 0:
            return None
        return 1.0 - s.bad_s(self.degraded_is_available) / observed

    def burn_rate(self, s: Sums) -> float | None:
        if s.samples < self.min_samples or s.observed_s <= 0:
            return None
        return (s.bad_s(self.degraded_is_available) / s.observed_s) / self.allowed_fraction

    def window(self, now: float, seconds: int, *, revenue_per_minute: float | None = None,
               degraded_weight: float = 0.0) -> SlaWindow:
        """One rolling window; with ``revenue_per_minute``, the revenue at risk over its measured minutes."""
        s = self.sums(now, seconds)
        budget_total = (1.0 - self.target / 100.0) * seconds
        consumed = s.bad_s(self.degraded_is_available)
        remaining = budget_total - consumed
        if budget_total > 0:
            fraction = remaining / budget_total
        else:
            fraction = 1.0 if consumed == 0 else 0.0
        avail = self.availability(s)
        revenue = None
        if revenue_per_minute is not None:
            revenue = round(s.revenue_at_risk(revenue_per_minute, degraded_weight), 2)
        # Percent, like the target it is compared with (4 decimals: the fraction's 6).
        return SlaWindow(availability=None if avail is None else round(avail * 100.0, 4),
                         budget_remaining=round(fraction, 6), budget_total_s=round(budget_total, 3),
                         budget_remaining_s=round(remaining, 3), downtime_s=round(s.down_s, 3),
                         degraded_s=round(s.degraded_s, 3), observed_s=round(s.observed_s, 3), samples=s.samples,
                         revenue_at_risk=revenue)

    def burn(self, now: float) -> tuple[dict[str, float | None], dict[str, BurnAlert]]:
        """(burn rates of the long windows, alert state per window pair)."""
        rates: dict[str, float | None] = {}
        alerts: dict[str, BurnAlert] = {}
        for name, long_s, short_s, factor in BURN_WINDOWS:
            long_sums, short_sums = self.sums(now, long_s), self.sums(now, short_s)
            long_rate = self.burn_rate(long_sums)
            # The short window only confirms the long one is still burning: one result is enough there.
            short_rate = (None if short_sums.samples == 0 or short_sums.observed_s <= 0 else
                          (short_sums.bad_s(self.degraded_is_available) / short_sums.observed_s) / self.allowed_fraction)
            firing = (long_rate is not None and short_rate is not None and long_rate >= factor
                      and short_rate >= factor and long_sums.failures(self.degraded_is_available) >= self.min_failures)
            rates[name] = None if long_rate is None else round(long_rate, 4)
            alerts[name] = BurnAlert(long=rates[name], short=None if short_rate is None else round(short_rate, 4),
                                     short_window=f"{short_s // 60}m" if short_s < 3600 else f"{short_s // 3600}h",
                                     threshold=factor, firing=firing, samples=long_sums.samples)
        return rates, alerts

    def report(self, now: float, *, revenue_per_minute: float = 0.0, degraded_weight: float = 0.0) -> SlaReport:
        """The ``sla`` object of the snapshot (revenue at risk on the 24h and 30d windows)."""
        rates, alerts = self.burn(now)
        windows = {name: self.window(now, seconds,
                                     revenue_per_minute=revenue_per_minute if name in REVENUE_WINDOWS else None,
                                     degraded_weight=degraded_weight)
                   for name, seconds in WINDOWS.items()}
        return SlaReport(target=self.target, windows=windows, burn_rates=rates, burn_alerts=alerts,
                         latency_ms=self.latency(now, 3600))
