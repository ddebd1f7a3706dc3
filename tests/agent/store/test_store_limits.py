"""The local store keeps its limits: the cap across restarts (file size measured), pruning off the
export thread, corruption recovery, private permissions and symlink refusal.

Real agents run as subprocesses (``runtime.start`` with the ``local`` exporter, spans from the
SDK's tracer) so that restarts are real restarts; the files are measured on disk.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pulsetrace.cli.main import main
from pulsetrace.config.schema import Config, StoreConfig
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.local import LocalStoreExporter
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore, StoreMaintainer, StorePathError
from tests.agent.span_factory import make_spans, make_spans_at

ROOT = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024

WRITER = textwrap.dedent("""
    import sys, time
    from pulsetrace import runtime
    from pulsetrace.validation import config_from_mapping
    store, spans, max_mb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    cfg = config_from_mapping({"service": {"name": "cap"}, "store": {"path": store, "max_mb": max_mb},
                               "tracing": {"exporters": ["local"], "queue_size": 50000,
                                           "sampling": {"tiers": {"general": {"rate": 1.0, "reservoir": 0}}}}},
                              env={})
    agent = runtime.start(config=cfg, instrument=False)
    tracer = agent.tracer("cap")
    blob = "x" * 300
    for i in range(spans):
        with tracer.start_as_current_span(f"op-{i}", attributes={"blob": blob, "i": i}):
            pass
        if i % 2000 == 1999:
            time.sleep(0.05)  # a service's pace, not a burst larger than the queue
    runtime.shutdown(30.0)
""")


def run_writer(store: Path, spans: int, max_mb: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", WRITER, str(store), str(spans), str(max_mb)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def on_disk(store: Path) -> int:
    return sum(p.stat().st_size for p in store.glob("spans.db*") if ".corrupt-" not in p.name)


def status_json(store: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["status", "--json", "--store", str(store)]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_the_size_cap_holds_across_restarts_measured_on_disk(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    sizes = []
    for _ in range(3):  # three runs of 6,000 spans, each about 3 MB of rows: 9x the cap in all
        run_writer(store, 6000, 2.0)
        sizes.append(on_disk(store))
    # Each run ends under the cap, the database and its WAL together; the file shrank, not only its live pages.
    assert max(sizes) <= 2.0 * MiB * 1.1, sizes
    info = status_json(store, capsys)
    assert info["spans"] and int(info["spans"]) < 3 * 6000  # type: ignore[call-overload]
    # Nothing was lost at shutdown to a prune on the export thread.
    assert not info["dropped"], info["dropped"]


def test_a_store_over_its_cap_is_pruned_and_shrunk_at_start_up(tmp_path: Path) -> None:
    # An older store (no incremental vacuum, over the cap): written by a store that never prunes.
    big = LocalStore(tmp_path, max_mb=1024.0, prune_every_rows=10**9, prune_every_s=10**9)
    conn = big.connect()
    conn.execute("PRAGMA auto_vacuum=NONE")
    conn.execute("VACUUM")
    for batch in range(8):
        big.write_spans(make_spans_at(400, time.time() - 100 + batch, payload=2000))
    big.close()
    before = on_disk(tmp_path)
    assert before > 5 * MiB
    # A new agent starts and writes nothing: the maintainer still brings it under the cap.
    store = LocalStore(tmp_path, max_mb=1.0)
    maintainer = StoreMaintainer(store).start()
    try:
        deadline = time.monotonic() + 60
        while maintainer.passes < 1:
            assert time.monotonic() < deadline, "no maintenance pass at start-up"
            time.sleep(0.05)
    finally:
        maintainer.stop(30.0)
    assert on_disk(tmp_path) <= 1.1 * MiB, (before, on_disk(tmp_path))
    assert LocalStore(tmp_path, create=False).span_count() > 0  # the newest spans stay


def test_pruning_never_runs_on_the_export_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = LocalStore.prune

    def recording(self: LocalStore, now: float | None = None) -> int:
        threads.append(threading.current_thread().name)
        return original(self, now)

    monkeypatch.setattr(LocalStore, "prune", recording)
    cfg = Config(store=StoreConfig(path=str(tmp_path), max_mb=1.0))
    exporter = LocalStoreExporter(ExporterContext(cfg, SelfMetrics()))
    exporter.store.prune_every_rows = 100  # a prune is due after every batch
    for _ in range(5):
        assert exporter.export(make_spans_at(150, time.time(), payload=2000)) is ExportOutcome.SUCCESS
    assert exporter.maintainer.wait_idle(30.0)
    exporter.shutdown(10.0)
    assert len(threads) >= 2  # the start-up pass and at least one the writer asked for
    assert set(threads) == {"pulsetrace-store-maintenance"}, threads


def _corrupt_a_middle_page(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(b"\xde\xad\xbe\xef" * 1024)


def test_a_corrupt_store_is_moved_aside_recreated_counted_and_shown_by_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    old = LocalStore(tmp_path)
    old.write_spans(make_spans_at(3000, time.time(), payload=500))
    old.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    old.close()
    _corrupt_a_middle_page(tmp_path / "spans.db")
    damaged = (tmp_path / "spans.db").read_bytes()

    metrics = SelfMetrics()
    exporter = LocalStoreExporter(ExporterContext(Config(store=StoreConfig(path=str(tmp_path))), metrics))
    with caplog.at_level(logging.WARNING, logger="pulsetrace.store"):
        # The start-up check finds it (no write has touched the bad page yet) ...
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("spans.db.corrupt-*")):
            assert time.monotonic() < deadline, "the corrupt store was never moved aside"
            time.sleep(0.05)
        # ... and the agent goes on writing into a new one.
        assert exporter.maintainer.wait_idle(30.0)
        assert exporter.export(make_spans(3)) is ExportOutcome.SUCCESS
        exporter.shutdown(10.0)
    (aside,) = [p for p in tmp_path.glob("spans.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    # Kept for a post-mortem: the pages as they were (opening it may have bumped the header's change counter).
    assert aside.read_bytes()[100:] == damaged[100:]
    assert metrics.counter("store_recovered") == 1
    assert any("moved aside" in r.getMessage() for r in caplog.records)

    info = status_json(tmp_path, capsys)
    health = info["store_health"]
    assert health["status"] == "recovered"  # type: ignore[index]
    assert health["recovered_files"] == [aside.name]  # type: ignore[index]
    assert "malformed" in health["detail"]  # type: ignore[index,operator]
    assert info["spans"] == 3
    capsys.readouterr()
    assert main(["status", "--store", str(tmp_path)]) == 0
    assert "health     recovered: corrupt store moved aside to " + aside.name in capsys.readouterr().out


def test_a_store_that_is_not_a_database_at_all_is_recovered_at_the_first_write(tmp_path: Path) -> None:
    (tmp_path / "spans.db").write_bytes(b"\x00garbage" * 2000)
    store = LocalStore(tmp_path, metrics=SelfMetrics())
    assert store.write_spans(make_spans(2)) == 2
    assert store.span_count() == 2
    assert len(list(tmp_path.glob("spans.db.corrupt-*"))) == 1


def test_a_new_store_is_private_directory_0700_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which SQLite alone would make 0644 files
    try:
        store = LocalStore(tmp_path / "deep" / "store")
        store.write_spans(make_spans(5))
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in store.dir.iterdir()}
        assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
        assert {"spans.db", "spans.db-wal", "spans.db-shm"} <= set(files)
        assert all(mode == 0o600 for mode in files.values()), files
        store.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_spans(make_spans(1))
    store.close()
    os.chmod(tmp_path / "spans.db", 0o644)
    LocalStore(tmp_path).write_spans(make_spans(1))
    assert stat.S_IMODE((tmp_path / "spans.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("which", ["spans.db", "spans.db-wal", "store directory"])
def test_a_symlinked_store_path_is_refused_and_nothing_is_written_through_it(
        which: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store_dir = tmp_path / "store"
    if which == "store directory":
        store_dir.symlink_to(elsewhere, target_is_directory=True)
    else:
        store_dir.mkdir()
        (store_dir / which).symlink_to(elsewhere / "target")
    metrics = SelfMetrics()
    exporter = LocalStoreExporter(ExporterContext(Config(store=StoreConfig(path=str(store_dir))), metrics))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert exporter.export(make_spans(2)) is ExportOutcome.FAILURE
    exporter.shutdown(5.0)
    assert list(elsewhere.iterdir()) == []  # nothing created or written at the link's target
    warnings = [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, clearly; the drops are counted by the pipeline
    with pytest.raises(StorePathError, match="symbolic link"):
        LocalStore(store_dir).connect()
    # The CLI says so in one line.
    capsys.readouterr()
    assert main(["traces", "--store", str(store_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "symbolic link" in err
