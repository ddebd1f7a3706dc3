"""The local store: round trip of real SDK spans, retention, size cap, reads, counters."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pulsetrace.store import LocalStore
from tests.agent.span_factory import make_spans, make_spans_at, make_trace


def test_spans_round_trip_with_ids_parents_status_and_attributes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "st")
    spans = make_trace(children=2, error=True, root_attrs={"sampling.tier": "critical", "amount": 12.5,
                                                           "tags": ("a", "b"), "ratio": float("nan")})
    assert store.write_spans(spans) == 3
    trace_id = f"{spans[0].context.trace_id:032x}"
    got = store.trace_spans(trace_id.upper())  # lookups are case-insensitive
    assert [s.name for s in got] == ["POST /orders", "child-0", "child-1"]
    root = got[0]
    assert root.parent_span_id is None and root.kind == "server" and root.status == "error"
    assert root.status_message == "boom"
    assert root.service == "shop-api" and root.resource["service.name"] == "shop-api"
    assert root.attributes["sampling.tier"] == "critical" and root.attributes["amount"] == 12.5
    assert root.attributes["tags"] == ["a", "b"] and root.attributes["ratio"] == "nan"
    assert all(c.parent_span_id == root.span_id and c.kind == "client" for c in got[1:])
    assert root.start <= got[1].start and root.end >= got[2].end
    assert 0 <= root.duration_ms < 5000
    assert abs(int(trace_id[:8], 16) - time.time()) < 600  # X-Ray-compatible ids: epoch seconds first


def test_spans_of_two_services_written_interleaved_keep_their_own_service_and_resource(tmp_path: Path) -> None:
    # The writer encodes a resource once and reuses it while the next span shares it: interleaving
    # two services' spans (two resources) must never give a span the other's.
    store = LocalStore(tmp_path / "st")
    a, b = make_spans(3, service="shop-api"), make_spans(3, service="billing")
    store.write_spans([a[0], b[0], b[1], a[1], a[2], b[2]])
    for spans, service in ((a, "shop-api"), (b, "billing")):
        for span in spans:
            got = store.trace_spans(f"{span.context.trace_id:032x}")
            assert [(s.service, s.resource["service.name"]) for s in got] == [(service, service)]


def test_writing_a_span_twice_keeps_one_row(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    spans = make_spans(5)
    store.write_spans(spans)
    store.write_spans(spans)
    assert store.span_count() == 5


def test_recent_trace_ids_newest_first_and_limited(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    now = time.time()
    for i in range(10):
        store.write_spans(make_spans_at(3, now - 100 + i))
    ids = store.recent_trace_ids(limit=4)
    assert len(ids) == 4
    starts = [max(s.start for s in store.trace_spans(t)) for t in ids]
    assert starts == sorted(starts, reverse=True)
    assert store.recent_trace_ids(limit=100, since=now - 92.5) == store.recent_trace_ids(limit=100)[:6]
    assert store.recent_trace_ids(limit=0) == []


def test_find_trace_ids_by_prefix(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    spans = make_spans(3)
    store.write_spans(spans)
    full = f"{spans[1].context.trace_id:032x}"
    assert store.find_trace_ids(full) == [full]
    assert full in store.find_trace_ids(full[:20].upper())
    assert store.find_trace_ids("ffffffffffffffff") == []


def test_traces_spans_fetches_many_traces_at_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    traces = [make_trace(children=1) for _ in range(3)]
    for t in traces:
        store.write_spans(t)
    ids = [f"{t[0].context.trace_id:032x}" for t in traces]
    got = store.traces_spans(ids + ["0" * 32])
    assert [len(got[i]) for i in ids] == [2, 2, 2]
    assert got["0" * 32] == []


def test_retention_removes_old_spans_and_keeps_recent(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, retention_s=3600)
    now = time.time()
    store.write_spans(make_spans_at(2500, now - 7200))  # older than the retention: more than one prune chunk
    store.write_spans(make_spans_at(10, now - 60))
    assert store.span_count() == 2510
    assert store.prune(now) == 2500
    assert store.span_count() == 10


def test_retention_is_applied_while_writing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, retention_s=3600, prune_every_rows=50)
    now = time.time()
    store.write_spans(make_spans_at(40, now - 7200))
    assert store.span_count() == 40  # below the prune threshold: not yet
    store.write_spans(make_spans_at(20, now))
    assert store.span_count() == 20


def test_size_cap_keeps_the_store_bounded_and_drops_oldest_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, max_mb=1.0, prune_every_rows=200)
    base = time.time() - 1000
    for batch in range(16):  # about 4 MB of spans in all, 4x the cap
        store.write_spans(make_spans_at(100, base + batch, payload=2500))
    assert store.used_bytes() <= 1.25 * 1024 * 1024
    assert store.db_path.stat().st_size <= 2.5 * 1024 * 1024  # freed pages are reused, the file stops growing
    oldest = store.connect().execute("SELECT min(start) FROM spans").fetchone()[0]
    newest = store.connect().execute("SELECT max(start) FROM spans").fetchone()[0]
    assert oldest > base + 5  # the first batches went
    assert newest >= base + 15  # the last one is there
    assert 100 < store.span_count() < 600


def test_size_cap_does_not_prune_again_once_under_the_cap(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, max_mb=1.0, prune_every_rows=10**9, prune_every_s=10**9)
    store.write_spans(make_spans_at(600, time.time() - 100, payload=2500))
    first = store.prune()
    assert first > 0
    assert store.prune() == 0  # the file keeps its size, but the live data is under the cap


def test_reader_opens_existing_store_without_creating_anything(tmp_path: Path) -> None:
    reader = LocalStore(tmp_path / "none", create=False)
    assert not reader.exists()
    with pytest.raises(FileNotFoundError):
        reader.connect()
    assert not (tmp_path / "none").exists()
    LocalStore(tmp_path / "st").write_spans(make_spans(2))
    assert LocalStore(tmp_path / "st", create=False).span_count() == 2


def test_reader_sees_committed_spans_while_a_writer_holds_a_write_transaction(tmp_path: Path) -> None:
    writer = LocalStore(tmp_path)
    writer.write_spans(make_spans(3))
    conn = sqlite3.connect(writer.db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    conn.execute("DELETE FROM spans")
    try:
        reader = LocalStore(tmp_path, create=False)
        started = time.monotonic()
        assert reader.span_count() == 3  # WAL: the reader sees the last commit, without waiting
        assert time.monotonic() - started < 1.0
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_store_is_in_wal_mode(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_spans(make_spans(1))
    assert store.connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_counters_are_summed_over_processes_and_replaced_within_one(tmp_path: Path) -> None:
    a = LocalStore(tmp_path)
    b = LocalStore(tmp_path)  # another process: its own instance id
    a.write_counters(101, {("spans_exported", "local"): 10, ("spans_dropped", "queue_full"): 2})
    a.write_counters(101, {("spans_exported", "local"): 15, ("spans_dropped", "queue_full"): 3})  # totals so far
    b.write_counters(101, {("spans_exported", "local"): 7})  # same pid (reused by the OS), another process
    counters = LocalStore(tmp_path, create=False).counters()
    assert counters == {("spans_exported", "local"): 22.0, ("spans_dropped", "queue_full"): 3.0}
    assert a.processes() == 2


def test_other_components_can_add_tables(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    conn = store.connect()
    conn.execute("CREATE TABLE IF NOT EXISTS probe_results (probe TEXT, at REAL)")
    conn.execute("INSERT INTO probe_results VALUES ('db', 1.0)")
    store.write_spans(make_spans(1))
    assert conn.execute("SELECT count(*) FROM probe_results").fetchone()[0] == 1


def test_events_and_links_are_stored_as_json(tmp_path: Path) -> None:
    from tests.agent.span_factory import provider

    prov, collect = provider()
    tracer = prov.get_tracer("t")
    with tracer.start_as_current_span("with-event") as span:
        span.add_event("retry", {"attempt": 2})
    store = LocalStore(tmp_path)
    store.write_spans(collect.spans)
    (got,) = store.trace_spans(f"{collect.spans[0].context.trace_id:032x}")
    assert got.events[0]["name"] == "retry" and got.events[0]["attributes"] == {"attempt": 2}
    assert json.dumps(got.links) == "[]"


def test_reader_of_a_store_whose_tables_are_not_created_yet_sees_it_empty(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "spans.db").close()  # a writer has created the file, not yet the schema
    reader = LocalStore(tmp_path, create=False)
    assert reader.span_count() == 0
    assert reader.recent_trace_ids() == [] and reader.trace_spans("0" * 32) == []
    assert reader.counters() == {} and reader.processes() == 0


def _open_fds(*paths: Path) -> dict[str, int]:
    """How many of this process's file descriptors are open on each of ``paths``."""
    wanted = {str(p): 0 for p in paths}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in wanted:
            wanted[target] += 1
    return wanted


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"), reason="needs fork and /proc")
def test_a_forked_child_keeps_the_connections_of_the_parents_other_threads_open(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "st")
    opened, release = threading.Event(), threading.Event()

    def exporter_thread() -> None:  # like the pipeline's export thread: a connection in its threading.local
        store.write_counters(os.getpid(), {("spans_exported", "local"): 3.0})
        opened.set()
        release.wait(30)

    t = threading.Thread(target=exporter_thread, daemon=True)
    t.start()
    try:
        assert opened.wait(10)
        db, wal = store.db_path, Path(f"{store.db_path}-wal")
        parent = _open_fds(db, wal)
        assert parent[str(db)] >= 1 and parent[str(wal)] >= 1
        pid = os.fork()
        if pid == 0:  # the child: only this thread survives fork()
            code = 1
            try:
                gc.collect()  # the dead threads' locals are gone: nothing may close their connections
                child = _open_fds(db, wal)
                if child != parent:
                    code = 2
                else:
                    store.write_counters(os.getpid(), {("spans_exported", "local"): 5.0})  # a connection of its own
                    code = 0 if store.counters()[("spans_exported", "local")] == 8.0 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "2: inherited descriptors were closed; 3: write failed"
        assert store.counters()[("spans_exported", "local")] == 8.0
        assert store.connect().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        release.set()
        t.join(5)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_threads_connection_is_closed_when_the_thread_ends(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "st")
    store.write_counters(os.getpid(), {("spans_exported", "local"): 1.0})
    store.close()
    db = store.db_path
    assert _open_fds(db)[str(db)] == 0

    def worker() -> None:
        store.write_counters(os.getpid(), {("spans_exported", "local"): 2.0})
        assert _open_fds(db)[str(db)] >= 1

    for _ in range(5):  # the fork registry must not keep the connections of threads that ended
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    gc.collect()
    assert _open_fds(db)[str(db)] == 0
