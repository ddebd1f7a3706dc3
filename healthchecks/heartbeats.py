"""RFID reader heartbeats pushed to the agent (``POST /rfid/heartbeat``), for the rfid probe.

Bounded: at most ``max_readers`` readers are remembered; a new reader beyond that evicts
the one heard from longest ago. O(log n) per beat whatever the fleet size: the last-seen
times sit in a dict, and a heap of (time, reader) finds the one to evict; entries a newer
beat made obsolete stay in the heap until they surface (lazy deletion) and the heap is
rebuilt when they outnumber the live ones, so memory stays within twice the fleet.
Timestamps from the future are clamped to now (a reader with a fast clock must not look
fresh forever). Thread-safe (one lock, held for O(log n)); never raises on bad input:
:meth:`HeartbeatBook.accept` returns the problems instead.
"""

from __future__ import annotations

import heapq
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

MAX_READER_ID = 128
#: Heartbeats in one request at most (a 64 KB body holds about 1,500).
MAX_PER_REQUEST = 2000
_READER_ID = re.compile(r"^[\w.:\-/@]{1,128}\Z")


class HeartbeatBook:
    def __init__(self, max_readers: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.max_readers = max_readers
        self.clock = clock
        self.evicted = 0

    def beat(self, reader_id: str, ts: float | None = None) -> None:
        self.beat_many([(reader_id, ts)])

    def beat_many(self, beats: list[tuple[str, float | None]]) -> None:
        """Record several beats under one hold of the lock (O(log n) each)."""
        now = self.clock()
        with self._lock:
            seen, heap = self._seen, self._heap
            for reader_id, ts in beats:
                when = now if ts is None else min(ts, now)
                previous = seen.get(reader_id)
                if previous is not None and when < previous:
                    continue  # an older beat arriving late changes nothing
                if previous is None and len(seen) >= self.max_readers:
                    self._evict_one()
                seen[reader_id] = when
                heapq.heappush(heap, (when, reader_id))
            if len(heap) > 2 * len(seen) + 64:
                self._heap = [(t, r) for r, t in seen.items()]
                heapq.heapify(self._heap)

    def _evict_one(self) -> None:
        heap, seen = self._heap, self._seen
        while heap:
            when, reader = heapq.heappop(heap)
            if seen.get(reader) == when:  # the live entry (others were superseded by a later beat)
                del seen[reader]
                self.evicted += 1
                return

    def accept(self, payload: Any) -> tuple[int, list[str]]:
        """Record ``{reader_id, ts?}`` or a list of them; returns (accepted, problems)."""
        items = payload if isinstance(payload, list) else [payload]
        if len(items) > MAX_PER_REQUEST:
            return 0, [f"at most {MAX_PER_REQUEST} heartbeats per request"]
        problems: list[str] = []
        beats: list[tuple[str, float | None]] = []
        for i, item in enumerate(items):
            problem = _problem(item)
            if problem:
                problems.append(f"[{i}]: {problem}" if isinstance(payload, list) else problem)
                continue
            assert isinstance(item, Mapping)
            ts = item.get("ts")
            beats.append((str(item["reader_id"]), None if ts is None else float(ts)))
        self.beat_many(beats)
        return len(beats), problems

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
