"""Shared shapes for the benchmarks: a comparison of ours against a peer over rounds.

Each ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> list[Comparison]``.
A comparison holds one measurement per round for ours and for the peer, taken
interleaved in the same process or run, and reports the ratio ours/peer (median
over rounds, with the spread), checked against the goal the issue set.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Comparison:
    name: str
    ours_label: str
    peer_label: str
    unit: str
    ours: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)
    #: The goal on the ratio ours/peer, e.g. ``("<=", 0.5)``; ``None`` to only report.
    goal: tuple[str, float] | None = None
    note: str = ""

    def ratios(self) -> list[float]:
        return [o / p for o, p in zip(self.ours, self.peer) if p]

    @property
    def ratio(self) -> float:
        r = self.ratios()
        return statistics.median(r) if r else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        r = self.ratios()
        return (min(r), max(r)) if r else (float("nan"), float("nan"))

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        op, bound = self.goal
        return self.ratio <= bound if op == "<=" else self.ratio >= bound

    def goal_text(self) -> str:
        if self.goal is None:
            return "report"
        return f"{self.goal[0]} {self.goal[1]:g}×"


def tool(name: str) -> str:
    """The path of a command installed with this interpreter (``.venv/bin``), else on ``PATH``.

    ``.venv/bin/python -m benchmarks`` works without activating the environment.
    """
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (pip install '.[dev]')")
    return found


def time_per_op(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def interleaved(rounds: int, ours: Callable[[], float], peer: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Alternate ours and peer ``rounds`` times (peer first on odd rounds) so drift hits both."""
    o: list[float] = []
    p: list[float] = []
    for i in range(rounds):
        if i % 2:
            p.append(peer())
            o.append(ours())
        else:
            o.append(ours())
            p.append(peer())
    return o, p
