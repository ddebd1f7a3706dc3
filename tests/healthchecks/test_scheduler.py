"""The scheduler: hard timeouts, no overlap, independent cadences, redaction of whatever a probe says."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from pulsetrace.healthchecks.base import Status
from pulsetrace.healthchecks.redact import Redactor
from pulsetrace.healthchecks.registry import build_probe
from pulsetrace.healthchecks.scheduler import ProbeRunner
from tests.healthchecks import probes_for_tests as pft
from tests.healthchecks.support import probe_cfg, probe_context

MOD = "tests.healthchecks.probes_for_tests"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    pft.reset()
    yield
    pft.reset()


def runner(target: str, redactor: Redactor | None = None, **fields: object) -> ProbeRunner:
    cfg = probe_cfg(type="custom", target=f"{MOD}:{target}", **fields)
    r = redactor or Redactor()
    return ProbeRunner(cfg, build_probe(cfg, probe_context(redactor=r)), r, rng=random.Random(1))


async def test_hung_check_is_down_at_the_timeout() -> None:
    r = runner("Hang", interval="1s", timeout="0.2s")
    started = time.monotonic()
    result = await r.run_once()
    took = time.monotonic() - started
    assert result.status is Status.DOWN and result.detail == "timed out after 0.2s"
    assert 0.18 < took < 0.6
    assert r.timeouts == 1
    await r.aclose()


async def test_probe_never_overlaps_itself_even_when_cancellation_is_slow() -> None:
    r = runner("SlowCancel", interval="0.2s", timeout="0.1s", jitter=0, options={"cleanup_s": 0.45})
    results = []
    stop = asyncio.Event()
    task = asyncio.create_task(r.loop(lambda _r, res: results.append(res), stop))
    await asyncio.sleep(1.3)
    stop.set()
    await asyncio.wait_for(task, 2)
    await r.aclose()
    await asyncio.sleep(0.5)
    assert pft.SlowCancel.max_running == 1
    details = [res.detail for res in results]
    assert "previous check still running past its timeout; not started again" in details
    assert all(res.status is Status.DOWN for res in results)
    assert len(results) >= 5  # the cadence held: one result per interval


async def test_one_hung_probe_does_not_delay_another() -> None:
    hung = runner("Hang", interval="0.5s", timeout="0.45s", jitter=0)
    fast = runner("Switch", interval="0.1s", timeout="0.05s", jitter=0, options={"name": "fast"})
    got: dict[str, list[float]] = {"hang": [], "fast": []}
    stop = asyncio.Event()

    def sink(rr: ProbeRunner, _result: object) -> None:
        got["hang" if rr is hung else "fast"].append(time.monotonic())

    tasks = [asyncio.create_task(r.loop(sink, stop)) for r in (hung, fast)]
    await asyncio.sleep(1.55)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    await hung.aclose()
    assert len(got["fast"]) >= 12  # 1.55 s / 0.1 s ≈ 15 rounds, unaffected by the hung probe
    gaps = [b - a for a, b in zip(got["fast"], got["fast"][1:])]
    assert max(gaps) < 0.3
    assert 2 <= len(got["hang"]) <= 4


async def test_exceptions_become_down_results_with_the_error() -> None:
    cfg = probe_cfg(type="custom", target=f"{MOD}:Switch")

    class Boom:
        async def check(self) -> object:
            raise ConnectionResetError("peer reset while sending pw=Hunt3r-2")

    r = ProbeRunner(cfg, Boom(), Redactor(["Hunt3r-2"]))  # type: ignore[arg-type]
    result = await r.run_once()
    assert result.status is Status.DOWN
    assert result.detail.startswith("check failed: ConnectionResetError") and "Hunt3r-2" not in result.detail


async def test_probe_details_and_measurements_are_redacted_again() -> None:
    pft.DETAIL["x"] = "connected as postgresql://app:L3aky-Pw@db/shop"
    r = runner("Switch", Redactor(["L3aky-Pw"]))
    result = await r.run_once()
    assert "L3aky-Pw" not in result.detail and "****" in result.detail


def test_jitter_spreads_rounds_within_the_configured_fraction() -> None:
    r = runner("Switch", interval="10s", jitter=0.2)
    delays = [r.next_delay() for _ in range(500)]
    assert 8.0 <= min(delays) < 8.5 and 11.5 < max(delays) <= 12.0
