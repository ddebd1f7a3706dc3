"""RFID reader heartbeats pushed to the agent (``POST /rfid/heartbeat``), for the rfid probe.

Bounded: at most ``max_readers`` readers are remembered; a new reader beyond that evicts
the one heard from longest ago. Timestamps from the future are clamped to now (a reader
with a fast clock must not look fresh forever). Thread-safe; never raises on bad input:
:meth:`HeartbeatBook.accept` returns the problems instead.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

MAX_READER_ID = 128
_READER_ID = re.compile(r"^[\w.:\-/@]{1,128}$")


class HeartbeatBook:
    def __init__(self, max_readers: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self.max_readers = max_readers
        self.clock = clock

    def beat(self, reader_id: str, ts: float | None = None) -> None:
        now = self.clock()
        when = now if ts is None else min(ts, now)
        with self._lock:
            if reader_id not in self._seen and len(self._seen) >= self.max_readers:
                oldest = min(self._seen, key=self._seen.__getitem__)
                del self._seen[oldest]
            if when >= self._seen.get(reader_id, -math.inf):
                self._seen[reader_id] = when

    def accept(self, payload: Any) -> tuple[int, list[str]]:
        """Record ``{reader_id, ts?}`` or a list of them; returns (accepted, problems)."""
        items = payload if isinstance(payload, list) else [payload]
        if len(items) > self.max_readers:
            return 0, [f"at most {self.max_readers} heartbeats per request"]
        accepted = 0
        problems: list[str] = []
        for i, item in enumerate(items):
            problem = _problem(item)
            if problem:
                problems.append(f"[{i}]: {problem}" if isinstance(payload, list) else problem)
                continue
            assert isinstance(item, Mapping)
            ts = item.get("ts")
            self.beat(str(item["reader_id"]), None if ts is None else float(ts))
            accepted += 1
        return accepted, problems

    def last_seen(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seen)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def _problem(item: Any) -> str:
    if not isinstance(item, Mapping):
        return "expected an object {reader_id, ts?}"
    reader = item.get("reader_id")
    if not isinstance(reader, str) or not _READER_ID.match(reader):
        return f"reader_id must be 1-{MAX_READER_ID} characters of letters, digits and ._:-/@"
    ts = item.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)
                           or ts < 0):
        return "ts must be epoch seconds (a number)"
    return ""
