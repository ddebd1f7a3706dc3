"""The local store's files on disk: private permissions, no symlinks, a corrupt file moved aside.

The store holds request data (span attributes, SQL, URLs): its directory is created 0700 and
its files 0600 (SQLite gives the ``-wal`` and ``-shm`` files the database file's mode). A
symbolic link where the store directory or one of its files should be is refused with
:class:`StorePathError` (following one would let whoever planted it make the agent create or
overwrite a file elsewhere). A database SQLite reports as corrupt (``SQLITE_CORRUPT``,
``SQLITE_NOTADB``) is renamed ``spans.db.corrupt-<UTC time>`` with its ``-wal``/``-shm`` so a new
one can be created; nothing is deleted.

Pure filesystem work: no SQLite connection is opened here. Never follows a symlink it creates.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

__all__ = ["COMPANIONS", "StorePathError", "check_no_symlinks", "is_corruption", "move_aside", "precreate",
           "prepare_dir", "recovered_files"]

#: Files SQLite keeps beside the database in WAL mode.
COMPANIONS = ("-wal", "-shm")
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class StorePathError(OSError):
    """The store's path cannot be used safely (a symlink, not a directory); the message says why."""


def _is_symlink(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def prepare_dir(directory: Path, create: bool) -> None:
    """The store directory exists (created 0700 when ``create``) and is not a symlink."""
    if _is_symlink(directory):
        raise StorePathError(f"the store path {directory} is a symbolic link: refused (point store.path at the "
                             "real directory)")
    if create and not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it first
        else:
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; 0700 is what we mean


def check_no_symlinks(db_path: Path) -> None:
    """Refuse a database (or ``-wal``/``-shm``) that is a symbolic link."""
    for path in (db_path, *(Path(str(db_path) + s) for s in COMPANIONS)):
        if _is_symlink(path):
            raise StorePathError(f"{path} is a symbolic link: refused (the store never follows links; "
                                 "remove it or point store.path elsewhere)")


def precreate(db_path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite would create it 0644).

    An existing file of ours readable by others is tightened to 0600 (and its companions).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(db_path, flags, 0o600)
    except FileExistsError:
        for path in (db_path, *(Path(str(db_path) + s) for s in COMPANIONS)):
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
                    os.chmod(path, 0o600)
            except OSError:
                continue
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def is_corruption(exc: BaseException) -> bool:
    """Whether a SQLite error says the database file is corrupt or not a database at all."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def move_aside(db_path: Path) -> Path:
    """Rename the database and its companions to ``<name>.corrupt-<UTC time>``; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{n}")
    os.rename(db_path, target)
    for suffix in COMPANIONS:
        try:
            os.rename(str(db_path) + suffix, str(target) + suffix)
        except FileNotFoundError:
            pass
    return target


def recovered_files(directory: Path, db_name: str) -> list[str]:
    """Names of the corrupt databases moved aside in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    prefix = f"{db_name}.corrupt-"
    return sorted(n for n in names if n.startswith(prefix) and not n.endswith(COMPANIONS))
