"""Passive probe: the success rate of a business operation, from its spans in the local store.

No traffic is generated: the probe counts the spans with ``business.operation ==
operation`` that started within ``window`` (written by the business-span API) and calls
one a success when ``business.outcome`` is ``success``/``ok`` (or, with no outcome, when
the span status is ok). Below ``min_samples`` spans it answers UNKNOWN rather than guess.

The rate is over *sampled* traces only. Spans exported by keep-errors
(``sampling.kept_by`` = ``error`` or ``slow``) are left out: keep-errors exports every
failed trace but only the sampled share of the successful ones, so counting them
would bias the rate towards failure (99 % true success at 30 % sampling would read
96.7 %). The sampler picks traces without looking at their outcome, so the sampled
ones are an unbiased sample of all of them; ``min_samples`` applies to that sample.
The rate is judged against ``thresholds.success_rate`` (percent, default 99: below → DOWN)
and optionally ``thresholds.degraded_rate`` (percent, above success_rate: below → DEGRADED).

The SQLite read runs on the health I/O thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

DEFAULT_SUCCESS_RATE = 99.0
_SUCCESS = ("success", "ok", "succeeded", "true")
_QUERY = ("SELECT status, json_extract(attributes, '$.\"business.outcome\"') FROM spans "
          "WHERE start >= ? AND json_extract(attributes, '$.\"business.operation\"') = ? "
          "AND json_extract(attributes, '$.\"sampling.kept_by\"') IS NULL LIMIT 500000")


class PassiveProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.success_rate = cfg.thresholds.get("success_rate", DEFAULT_SUCCESS_RATE)
        self.degraded_rate = cfg.thresholds.get("degraded_rate")

    def count(self, since: float) -> tuple[int, int]:
        """(total, successes) among the operation's sampled spans started at or after ``since``."""
        store = self.ctx.store
        if store is None or not store.exists():
            return 0, 0
        try:
            rows = store.connect().execute(_QUERY, (since, self.cfg.operation)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0, 0
            raise
        ok = 0
        for status, outcome in rows:
            if outcome is None:
                ok += status == "ok"
            else:
                ok += str(outcome).lower() in _SUCCESS
        return len(rows), ok

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        since = self.ctx.clock() - self.cfg.window
        try:
            loop = asyncio.get_running_loop()
            total, ok = await loop.run_in_executor(self.ctx.io, self.count, since)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ProbeResult(Status.UNKNOWN, time.perf_counter() - started,
                               f"local store unreadable: {describe_error(exc)}")
        return self.judge(total, ok, time.perf_counter() - started)

    def judge(self, total: int, ok: int, latency_s: float) -> ProbeResult:
        window = f"{self.cfg.window:g}s"
        m: dict[str, Measurement] = {"samples": total, "successes": ok}
        if total < self.cfg.min_samples:
            return ProbeResult(Status.UNKNOWN, latency_s, f"{total} sampled {self.cfg.operation} spans in the last "
                               f"{window} (< min_samples {self.cfg.min_samples})", m)
        rate = 100.0 * ok / total
        m["success_rate"] = round(rate, 3)
        summary = f"{self.cfg.operation} success {rate:.2f}% of {total} sampled in the last {window}"
        if rate < self.success_rate:
            return ProbeResult(Status.DOWN, latency_s, f"{summary} (< {self.success_rate:g}%)", m)
        if self.degraded_rate is not None and rate < self.degraded_rate:
            return ProbeResult(Status.DEGRADED, latency_s, f"{summary} (< {self.degraded_rate:g}%)", m)
        return ProbeResult(Status.UP, latency_s, summary, m)
