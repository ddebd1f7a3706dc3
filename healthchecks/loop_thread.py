"""An asyncio loop on a thread of its own: where the probes run, apart from any HTTP handling.

The probes, their scheduling, SLA accounting and the snapshot live on a :class:`LoopThread`
(``pulsetrace-probes``); the health HTTP server runs on another loop (the caller's under
``pulsetrace serve``, ``pulsetrace-health`` under ``pulsetrace run``). So no amount of HTTP
work, however hostile, can hold up a probe round: the two only share the GIL, which Python
hands over every few milliseconds.

The thread is a :func:`pulsetrace.background.start_worker` thread, so nothing on it is
traced, and its loop's default executor suppresses tracing too. Never raises from
:meth:`LoopThread.stop`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from pulsetrace.background import executor, start_worker

_log = logging.getLogger("pulsetrace.health")
T = TypeVar("T")


class LoopThread:
    """One event loop running forever on one named daemon thread, until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread: threading.Thread = start_worker(name, self._main)
        self._ready.wait(10.0)

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        # Blocking calls of custom probes run in the default executor, which does not copy the context.
        loop.set_default_executor(executor(thread_name_prefix=f"{self.name}-io"))
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                _log.debug("health: closing the %s loop", self.name, exc_info=True)
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on this loop; the future resolves on the calling side."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on this loop, from another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop (tasks still running are cancelled) and wait for the thread."""
        if self.thread.is_alive() and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile
                pass
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)
