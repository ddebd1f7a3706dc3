"""One way to re-initialise state in a forked child (a gunicorn/uvicorn worker, a Celery pool).

Objects that hold locks, threads or per-process counters register a bound method with
:func:`on_fork_in_child`; after ``fork()`` the child calls each one whose object is still
alive. The methods are held weakly, so registering never keeps an object alive, and one
``os.register_at_fork`` hook serves the whole process (registering one per object would
grow the interpreter's hook list for ever).

The callbacks run in the child between ``fork()`` and the child's own code: they must only
replace locks and reset in-memory state, never start threads, take locks that another thread
of the parent may have held, or do I/O. A callback that raises is skipped; the others still run.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

_callbacks: list[weakref.WeakMethod[Callable[[], Any]]] = []
_lock = threading.Lock()
_installed = False


def on_fork_in_child(method: Callable[[], Any]) -> None:
    """Call the bound ``method`` in every child forked from now on, while its object lives."""
    global _installed
    ref: weakref.WeakMethod[Callable[[], Any]] = weakref.WeakMethod(method)
    with _lock:
        _callbacks[:] = [r for r in _callbacks if r() is not None]
        _callbacks.append(ref)
        if not _installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_run_in_child)
            _installed = True


def run_in_child() -> None:
    """Run the callbacks now: for servers that fork without Python's at-fork hooks (uWSGI's workers).

    Call it once, in the child, right after the fork and before the child serves anything.
    """
    _run_in_child()


def _run_in_child() -> None:
    global _lock
    # The parent's lock may have been held by another thread at fork(): the child gets a new one.
    _lock = threading.Lock()
    for ref in list(_callbacks):
        method = ref()
        if method is None:
            continue
        try:
            method()
        except Exception:  # one broken callback must not stop the others or the child
            pass
