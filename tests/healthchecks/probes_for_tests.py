"""Custom probes used by the scheduler and service tests (loaded through ``type: custom``, like a user's).

``Switch`` answers whatever ``STATE[name]`` says; ``Hang`` never answers; ``SlowCancel`` takes
``cleanup_s`` to wind down after being cancelled and records how many checks ran at once.
"""

from __future__ import annotations

import asyncio

from pulsetrace.healthchecks.base import ProbeResult, Status

STATE: dict[str, Status] = {}
DETAIL: dict[str, str] = {}
COUNTS: dict[str, int] = {}


class Switch:
    def __init__(self, name: str = "x") -> None:
        self.name = name

    async def check(self) -> ProbeResult:
        COUNTS[self.name] = COUNTS.get(self.name, 0) + 1
        status = STATE.get(self.name, Status.UP)
        return ProbeResult(status, 0.002, DETAIL.get(self.name, status.value.lower()))


class Hang:
    def __init__(self, name: str = "hang") -> None:
        self.name = name

    async def check(self) -> ProbeResult:
        COUNTS[self.name] = COUNTS.get(self.name, 0) + 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class SlowCancel:
    running = 0
    max_running = 0

    def __init__(self, cleanup_s: float = 0.5) -> None:
        self.cleanup_s = cleanup_s

    async def check(self) -> ProbeResult:
        cls = type(self)
        cls.running += 1
        cls.max_running = max(cls.max_running, cls.running)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(self.cleanup_s))  # a driver that takes its time to let go
            raise
        finally:
            cls.running -= 1
        return ProbeResult(Status.UP)


def reset() -> None:
    STATE.clear()
    DETAIL.clear()
    COUNTS.clear()
    SlowCancel.running = SlowCancel.max_running = 0
