"""The local store's disk refusing writes, under ``pulsetrace run`` with traffic.

Three ways a disk refuses: a read-only filesystem (a tmpfs mounted ``ro``), a full
one (a 256 KiB tmpfs the spans fill up), and a path that cannot be a directory (its
parent is a regular file: ``ENOTDIR``). The first two need ``mount`` (root with
CAP_SYS_ADMIN, as in CI here); where it is not permitted they are skipped, and the
third, which needs nothing, still holds the same promises:

- every request is answered 200 and the agent raises nothing into the app;
- the lost spans are counted (``spans_dropped{export_failed:local}``, visible in
  ``pulsetrace status --json`` once the store can be written again);
- when the disk takes writes again (remounted read-write, grown, or the file replaced
  by a directory) new spans are stored with no restart.

A read-only remount under a running store is not possible to stage (the kernel answers
EBUSY while SQLite holds its files open for writing), so "read-only" is a store whose
filesystem is read-only from the start.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.service_runner import all_spans, wait_for, write_config
from tests.reliability.support import agent_tracebacks, dropped, start_rel_service, stop_tree


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def _send(url: str, marker: str, n: int, spans: int = 0) -> None:
    path = f"/spans?n={spans}&m={marker}" if spans else f"/hello?m={marker}"
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            r = client.get(f"{url}{path}&i={i}")
            assert r.status_code == 200, (r.status_code, r.text[:500])


def _stored(store: Path, marker: str) -> int:
    try:
        return len([s for s in all_spans(store) if s.kind == "server" and marker in str(s.attributes.get("url.query"))])
    except Exception:  # the store is not readable (yet): nothing stored
        return 0


def _failed_local(store: Path) -> int:
    return int(dropped(store).get("export_failed:local", 0))


def test_read_only_filesystem_drops_and_counts_then_recovers_when_writable(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=4m,ro") as mnt:
        store = mnt / "store"
        cfg = write_config(tmp_path / "c.yaml", store)
        svc = start_rel_service(tmp_path, cfg)
        try:
            lost = uuid.uuid4().hex[:12]
            _send(svc.url, lost, 30)
            time.sleep(1.0)  # several export rounds fail meanwhile, without harm
            assert not store.exists()
            remount(mnt, "rw")
            kept = uuid.uuid4().hex[:12]
            _send(svc.url, kept, 10)
            assert wait_for(lambda: _stored(store, kept) == 10, timeout=20), svc.output()[-2000:]
            assert _stored(store, lost) == 0
            assert wait_for(lambda: _failed_local(store) >= 30, timeout=10), dropped(store)
        finally:
            stop_tree(svc)
        assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())


def test_full_filesystem_drops_and_counts_then_recovers_when_space_returns(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "size=256k") as mnt:
        store = mnt / "store"
        cfg = write_config(tmp_path / "c.yaml", store)
        svc = start_rel_service(tmp_path, cfg)
        try:
            filler = uuid.uuid4().hex[:12]
            # ~2,500 spans of a few hundred bytes each: far more than 256 KiB holds
            _send(svc.url, filler, 50, spans=50)
            stored_before = wait_for(lambda: _stored(store, filler) if _stored(store, filler) else None, timeout=10)
            assert stored_before is not None and stored_before < 50, stored_before
            remount(mnt, "size=64m")
            kept = uuid.uuid4().hex[:12]
            _send(svc.url, kept, 10)
            assert wait_for(lambda: _stored(store, kept) == 10, timeout=20), svc.output()[-2000:]
            assert wait_for(lambda: _failed_local(store) > 0, timeout=10), dropped(store)
        finally:
            stop_tree(svc)
        assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())


def test_store_path_under_a_regular_file_drops_and_counts_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a regular file where the store's parent directory should be\n")
    store = blocker / "store"
    cfg = write_config(tmp_path / "c.yaml", store)
    svc = start_rel_service(tmp_path, cfg)
    try:
        lost = uuid.uuid4().hex[:12]
        _send(svc.url, lost, 30)
        time.sleep(1.0)  # several export rounds fail meanwhile, without harm
        blocker.unlink()
        blocker.mkdir()
        kept = uuid.uuid4().hex[:12]
        _send(svc.url, kept, 10)
        assert wait_for(lambda: _stored(store, kept) == 10, timeout=20), svc.output()[-2000:]
        assert _stored(store, lost) == 0
        assert wait_for(lambda: _failed_local(store) >= 30, timeout=10), dropped(store)
    finally:
        stop_tree(svc)
        shutil.rmtree(blocker, ignore_errors=True)
    assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())
