"""The local store's SQLite connections across threads and fork().

One connection per thread and per process: each lives in a :class:`Held` slot of the store's
``threading.local``. A connection inherited through fork() is never used nor closed in the
child (closing it there releases POSIX locks the parent relies on). Never raises from a finalizer.
"""

from __future__ import annotations

import os
import sqlite3

__all__ = ["Held", "install_fork_hook"]

#: Connections inherited through fork(): never used nor closed in the child (closing one there
#: releases POSIX locks and may checkpoint or unlink files the parent still uses), just kept from
#: the garbage collector.
_INHERITED: list[sqlite3.Connection] = []
#: Every connection this process opened and has not closed yet, by ``id``. Connections live in
#: per-thread ``threading.local`` slots, and fork() frees the slots of every thread but the one
#: that forked (CPython clears their thread states), which would close the child's copies of
#: the parent's descriptors; the at-fork hook moves them all to ``_INHERITED`` first. Plain
#: dict operations, no lock: the hook runs in a child where another thread may have held one.
_OPENED: dict[int, sqlite3.Connection] = {}
_fork_hook_installed = False


def _keep_inherited() -> None:
    """After fork(), in the child: the parent's connections are kept alive, never used or closed."""
    _INHERITED.extend(_OPENED.values())
    _OPENED.clear()


def install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_keep_inherited)


class Held:
    """One thread's connection, in the store's ``threading.local``; registered in ``_OPENED``.

    Unregistered when its thread ends (the slot is freed) or the store is closed, but only in
    the process that opened it: in a forked child the connection is the parent's and stays open.
    """

    __slots__ = ("conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.pid = os.getpid()
        _OPENED[id(conn)] = conn

    def release(self, close: bool) -> None:
        """Let go of the connection: closed (``close``) or left to whoever still holds it."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.pid != os.getpid():
            # The parent's: the fork hook moved it to _INHERITED (kept here too should the hook not
            # have run, e.g. a fork through a path that skips Python's at-fork hooks).
            if not any(c is conn for c in _INHERITED):
                _INHERITED.append(conn)
            return
        _OPENED.pop(id(conn), None)
        if close:
            conn.close()

    def __del__(self) -> None:
        # The thread ended or the store was dropped: not closed here, since a caller may still hold
        # the connection (``LocalStore(p).connect().execute(...)``); it closes when the last
        # reference goes, as any sqlite3 connection does.
        try:
            self.release(close=False)
        except Exception:  # a finalizer must not raise
            pass
