"""The SDK tracer provider, made safe to inherit across ``fork()`` (gunicorn ``--preload``, Celery prefork).

The SDK's own ``TracerProvider`` re-runs resource detection in every forked child, from its
at-fork hook: ``get_aggregated_resources`` submits to a ``ThreadPoolExecutor``. When the
provider was built before the application imported ``concurrent.futures.thread`` (always the
case under ``pulsetrace run`` and ``opentelemetry-instrument``; Django imports it through
asgiref), that module's own at-fork hook still holds its global lock when ours runs, and
every worker hangs in ``submit`` before serving a request.

pulsetrace detects the resource once, in the parent (``tracing/resource.py``), and no
attribute of it depends on the process: the child keeps it. This subclass's at-fork step
therefore only replaces the tracers lock: it never starts a thread, takes another lock or
does I/O between ``fork()`` and the child's first request.
"""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace import TracerProvider

__all__ = ["ForkSafeTracerProvider"]


class ForkSafeTracerProvider(TracerProvider):
    """A ``TracerProvider`` whose at-fork hook keeps the parent's resource."""

    def _handle_fork(self) -> None:
        # The lock may have been held by another thread of the parent at fork(): a new one.
        self._tracers_lock = threading.Lock()
