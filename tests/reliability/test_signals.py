"""Signals during traffic: SIGTERM to ``pulsetrace run``, SIGKILL to one uvicorn worker.

SIGTERM: with ``--workers 2`` and the export interval at 5 s (so that the spans of the
last requests are still queued in the workers when the signal comes), four client
threads keep sending requests; the supervisor forwards SIGTERM, uvicorn finishes the
requests in flight and each worker flushes on its way out. Promised: every request
that was answered 200 has its server span in the store, and the whole thing exits 0
within ``EXIT_BOUND_S`` (uvicorn's graceful shutdown plus the agent's 1.5 s
``shutdown_timeout`` plus 1.5 s of slack on two busy cores).

SIGKILL of one worker: the supervisor, the uvicorn manager and the other worker carry
on; requests keep succeeding (each opens a new connection, so only those in flight on
the killed worker can fail); uvicorn starts a replacement worker, which is
instrumented like the first (its requests' spans reach the store).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from tests.integration.service_runner import all_spans, wait_for, write_config
from tests.reliability.support import agent_tracebacks, alive, app_pids, ppid, start_rel_service, stop_tree, traffic, worker_pids

EXIT_BOUND_S = 1.5 + 1.5 + 1.5


def test_sigterm_mid_traffic_flushes_the_spans_of_every_answered_request(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store, extra={"tracing": {"export_interval": "5s"}})
    svc = start_rel_service(tmp_path, cfg, workers=2)
    try:
        worker_pids(svc, expected=2)
        with traffic(svc.url, ["/hello"], threads=4) as load:
            assert wait_for(lambda: len(load.answers) >= 100, timeout=30), load.outcomes[-5:]
            started = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            code = svc.proc.wait(30)
            elapsed = time.monotonic() - started
    finally:
        stop_tree(svc)
    answered = {seq for seq, status, _ in load.answers if status == 200}
    assert code == 0, svc.output()[-2000:]
    assert elapsed < EXIT_BOUND_S, f"exit took {elapsed:.2f} s"
    stored: set[int] = set()
    for span in all_spans(store):
        if span.kind == "server":
            query = parse_qs(str(span.attributes.get("url.query", "")))
            stored.update(int(v) for v in query.get("seq", []))
    print(f"{len(answered)} requests answered before exit; exit took {elapsed:.2f} s")
    missing = sorted(answered - stored)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no span: {missing[:20]}"
    assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())


def test_sigkill_of_one_worker_leaves_the_supervisor_and_the_other_worker_serving(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = write_config(tmp_path / "c.yaml", store)
    svc = start_rel_service(tmp_path, cfg, workers=2)
    try:
        first = worker_pids(svc, expected=2)
        manager = next(p for p in app_pids(svc) if p not in first and ppid(p) == svc.proc.pid)
        victim, survivor = first
        with traffic(svc.url, ["/whoami"], threads=2) as load:
            assert wait_for(lambda: len(load.answers) >= 20, timeout=20)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            # requests keep succeeding after the kill (a count, not a rate: the machine may be busy)
            assert wait_for(lambda: len([s for s in load.since(killed_at) if s == 200]) >= 30, timeout=30), \
                f"requests stopped succeeding: {load.since(killed_at)[-20:]}"
            after = load.since(killed_at)
            assert len([s for s in after if s != 200]) <= 4, f"more failures than requests in flight: {after}"
            assert svc.proc.poll() is None and alive(manager) and alive(survivor)
            replacement = wait_for(lambda: [p for p in worker_pids(svc, expected=2) if p not in first], timeout=20)
            assert replacement, "uvicorn did not start a replacement worker"
        new_pid = replacement[0]
        marker = uuid.uuid4().hex[:12]
        served_by_new: list[int] = []
        with httpx.Client(timeout=10, headers={"connection": "close"}) as client:
            for i in range(200):
                r = client.get(f"{svc.url}/whoami?m={marker}&i={i}")
                assert r.status_code == 200
                if r.json()["pid"] == new_pid:
                    served_by_new.append(i)
                    if len(served_by_new) >= 3:
                        break
        assert served_by_new, "the replacement worker never served a request"

        def stored_indexes() -> set[int]:
            out: set[int] = set()
            for span in all_spans(store):
                q = parse_qs(str(span.attributes.get("url.query", "")))
                if q.get("m") == [marker]:
                    out.update(int(v) for v in q.get("i", []))
            return out

        assert wait_for(lambda: set(served_by_new) <= stored_indexes(), timeout=15), (
            "spans of the replacement worker did not reach the store")
    finally:
        code = stop_tree(svc)
    assert code == 0, svc.output()[-2000:]
    assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())
