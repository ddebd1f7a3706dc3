"""The health service with its HTTP server on a loop in a daemon thread: how ``pulsetrace run`` hosts it.

:func:`start_in_thread` returns a :class:`HealthHandle` once the server listens: the HTTP server
on ``pulsetrace-health``, the probes on ``pulsetrace-probes`` (see
:mod:`pulsetrace.healthchecks.service`). Both threads suppress instrumentation from their first
instruction. Raises only ``OSError`` (the port cannot be bound), leaving nothing running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pulsetrace.background import start_worker
from pulsetrace.healthchecks.service import HealthService, open_store

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.healthchecks.snapshot import HealthSnapshot, SnapshotListener
    from pulsetrace.selfmetrics import SelfMetrics
    from pulsetrace.store import LocalStore

__all__ = ["HealthHandle", "start_in_thread"]


class HealthHandle:
    """A :class:`HealthService` whose HTTP server runs on its own loop in a daemon thread."""

    def __init__(self, service: HealthService, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.service = service
        self.loop = loop
        self.thread = thread

    @property
    def port(self) -> int:
        return self.service.server.port if self.service.server is not None else 0

    def snapshot(self) -> HealthSnapshot:
        """The current snapshot (immutable: safe to keep)."""
        return self.service.snapshot()

    def add_snapshot_listener(self, fn: SnapshotListener) -> None:
        self.service.add_snapshot_listener(fn)

    def add_exposition(self, fn: Callable[[], str]) -> None:
        self.service.add_exposition(fn)

    def stop(self, timeout: float = 2.0) -> None:
        if not self.loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self.service.stop(timeout), self.loop)
        try:
            fut.result(timeout=timeout + 1.5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=max(0.1, timeout))


def start_in_thread(cfg: Config, child_alive: Callable[[], bool] | None = None, *,
                    store: LocalStore | None = None, metrics: SelfMetrics | None = None,
                    clock: Callable[[], float] = time.time, own_process: bool = True) -> HealthHandle:
    """Run the health server in a daemon thread ``pulsetrace-health`` (the probes in ``pulsetrace-probes``).

    ``own_process``: see :meth:`HealthService.start` (``False`` inside the application's process).
    Returns once it listens. Raises ``OSError`` when the health port cannot be bound (nothing is
    left running then).
    """
    if store is None:
        store = open_store(cfg)
    service = HealthService(cfg, store=store, child_alive=child_alive, clock=clock, metrics=metrics)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def main() -> None:  # runs with instrumentation suppressed, and so does every task created here
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await service.start(own_process=own_process)
            except BaseException as exc:
                await service.stop(0.5)  # before the caller hears of it and stops this loop
                started.set_exception(exc)
                return
            started.set_result(None)

        loop.create_task(boot())
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()

    thread = start_worker("pulsetrace-health", main)
    try:
        started.result(timeout=30.0)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2.0)
        raise
    return HealthHandle(service, loop, thread)
