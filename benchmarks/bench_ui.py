"""The web console on a 1 GB store: time to first render of the map and of a 5,000-span trace.

A store of about 1 GB is written into a temporary directory (synthetic shop traffic spread
over seven days, five spans a trace, attributes the size the demo's are, plus one
5,000-span trace in the last minutes) and removed afterwards. ``pulsetrace ui`` serves it;
headless Chromium opens each page and the time to first render is the browser's own
``loadEventEnd`` (request sent → page laid out and painted). The peers are the commands
a user has without the console, for the same data: ``pulsetrace servicemap --html`` (the
command's wall time, then Chromium opening the file it wrote) for the map, and
``pulsetrace traces show ID`` (wall time) for the trace.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Comparison

TARGET_BYTES = 1024 ** 3
SPAN_ROWS_PER_TRACE = 5
_COLS = 17


def _row(trace: str, span: str, parent: str | None, name: str, kind: str, service: str, start: float, ms: float,
         status: str, attrs: dict[str, Any]) -> tuple[Any, ...]:
    resource = {"service.name": service, "deployment.environment": "bench", "telemetry.sdk.language": "python"}
    return (trace, span, parent, name, kind, service, start, start + ms / 1000, status, None,
            json.dumps(attrs, separators=(",", ":")), "[]", json.dumps(resource, separators=(",", ":")), "[]",
            "bench", 0, start)


def _trace_rows(rng: random.Random, start: float) -> list[tuple[Any, ...]]:
    trace = f"{int(start):08x}{rng.getrandbits(96):024x}"
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(5)]
    fail = rng.random() < 0.04
    method = rng.choice(["upi", "card", "netbanking"])
    common = {"sampling.tier": "critical", "sampling.rule": "rules[1]", "school.id": f"school-{rng.randrange(60)}",
              "payment.method": method, "aws.xray.annotations": ["payment.method", "school.id"],
              "user_agent.original": "python-httpx/0.27.0", "client.address": "10.0.3.17"}
    return [
        _row(trace, ids[0], None, "POST /payments", "server", "shop-api", start, 40, "error" if fail else "ok",
             {**common, "http.request.method": "POST", "url.path": "/payments", "server.address": "shop.internal",
              "http.response.status_code": 502 if fail else 200, "http.route": "/payments"}),
        _row(trace, ids[1], ids[0], "payment.create", "internal", "shop-api", start + 0.001, 38,
             "error" if fail else "ok", {"business.operation": "payment.create", "payment.amount": 250.0,
                                         "order.id": f"ord_{rng.randrange(10**9):09d}"}),
        _row(trace, ids[2], ids[1], "POST", "client", "shop-api", start + 0.002, 30, "error" if fail else "ok",
             {"http.request.method": "POST", "url.full": "http://gateway.internal:8080/v1/charge",
              "http.response.status_code": 500 if fail else 200}),
        _row(trace, ids[3], ids[2], "POST /v1/charge", "server", "payment-gateway", start + 0.003, 28,
             "error" if fail else "ok", {"http.request.method": "POST", "url.path": "/v1/charge",
                                         "http.response.status_code": 500 if fail else 200}),
        _row(trace, ids[4], ids[0], "SELECT shop", "client", "shop-api", start + 0.032, 3, "ok",
             {"db.system": "postgresql", "db.name": "shop", "server.address": "db.internal",
              "db.statement": "SELECT id, total FROM orders WHERE id = $1"}),
    ]


def _big_trace(now: float, n: int = 5000) -> tuple[str, list[tuple[Any, ...]]]:
    rng = random.Random(5000)
    trace = f"{int(now):08x}{rng.getrandbits(96):024x}"
    root = f"{rng.getrandbits(64):016x}"
    start = now - 120
    rows = [_row(trace, root, None, "nightly.settlement", "server", "batch-worker", start, n * 1.0 + 5, "ok",
                 {"sampling.tier": "business"})]
    for i in range(n - 1):
        rows.append(_row(trace, f"{rng.getrandbits(64):016x}", root, f"settle.batch-{i}", "client", "batch-worker",
                         start + i / 1000, 0.8, "ok", {"db.system": "postgresql", "db.name": "ledger",
                                                       "server.address": "db.internal", "batch": i}))
    return trace, rows


def build_store(path: Path, target_bytes: int = TARGET_BYTES) -> tuple[str, int]:
    """A store of about ``target_bytes`` (live pages), written with the store's own schema."""
    from pulsetrace.store import LocalStore

    store = LocalStore(path)
    conn = store.connect()
    store.close()
    conn = sqlite3.connect(path / "spans.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("DROP INDEX spans_start")  # built once at the end: much faster than row by row
    rng = random.Random(7)
    now = time.time()
    first = now - 7 * 86400
    sample = _trace_rows(rng, now)
    per_trace = sum(len(str(v)) for r in sample for v in r) + 100 * len(sample)  # rough bytes, pages included
    traces = target_bytes // per_trace
    step = (now - 600 - first) / traces
    insert = "INSERT INTO spans VALUES (" + ",".join("?" * _COLS) + ")"
    batch: list[tuple[Any, ...]] = []
    t = first
    for i in range(traces):
        batch.extend(_trace_rows(rng, t + rng.random() * step))
        t += step
        if len(batch) >= 50_000:
            conn.execute("BEGIN")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
            batch.clear()
    # the last ten minutes at the demo's rate (the map's default 15-minute window reads these)
    t = now - 600
    while t < now - 1:
        batch.extend(_trace_rows(rng, t))
        t += 0.25
    trace_id, big = _big_trace(now)
    batch.extend(big)
    conn.execute("BEGIN")
    conn.executemany(insert, batch)
    conn.execute("COMMIT")
    conn.execute("CREATE INDEX spans_start ON spans(start)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return trace_id, int(pages)


def _chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tempfile.mkdtemp(prefix='pulsetrace-bench-chromium-')}", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))


def _render(driver: Any, url: str) -> float:
    driver.get(url)
    timing = driver.execute_script("const t = performance.getEntriesByType('navigation')[0];"
                                   "return [t.startTime, t.loadEventEnd];")
    return float(timing[1] - timing[0]) / 1000.0


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds a running process has used (Linux /proc): machine load does not inflate it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_CPU: list[float] = []


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time of a command; its CPU seconds are appended to ``_CPU``."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    wall = time.perf_counter() - start
    _CPU.append(_children_cpu() - cpu)
    return wall


def _start_to_answer(cmd: list[str], env: dict[str, str]) -> float:
    import httpx

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        m = re.search(r"(http://\S+)/", proc.stderr.readline())
        if not m:
            raise RuntimeError("pulsetrace ui did not start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(m.group(1) + "/static/ui.css", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.005)
        return time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def run(quick: bool) -> list[Comparison]:
    rounds = 3 if quick else 7
    work = Path(tempfile.mkdtemp(prefix="pulsetrace-bench-ui-"))
    store = work / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PULSETRACE_"))}
    env["PULSETRACE_STORE"] = str(store)
    cli = [sys.executable, "-m", "pulsetrace.cli.main"]
    ui = None
    driver = None
    try:
        t0 = time.perf_counter()
        trace_id, size = build_store(store, TARGET_BYTES // (8 if quick else 1))
        built = time.perf_counter() - t0
        ui = subprocess.Popen([*cli, "ui", "--listen", "127.0.0.1:0", "--store", str(store)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert ui.stderr is not None
        line = ui.stderr.readline()
        m = re.search(r"(http://\S+)/", line)
        if not m:
            raise RuntimeError(f"pulsetrace ui did not start: {line}")
        base = m.group(1)
        driver = _chromium()
        _render(driver, base + "/")  # warm: first connection, page cache
        html = work / "map.html"
        peer_map_cmd = [*cli, "servicemap", "--since", "15m", "--html", str(html)]
        ours_map, peer_map, ours_trace, peer_trace, ours_list = [], [], [], [], []
        cpu_ours_map: list[float] = []
        cpu_peer_map: list[float] = []
        cpu_ours_trace: list[float] = []
        cpu_peer_trace: list[float] = []
        for i in range(rounds):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for which in order:
                if which == 0:
                    cpu = _proc_cpu(ui.pid)
                    ours_map.append(_render(driver, base + "/?since=15m"))
                    cpu_ours_map.append(_proc_cpu(ui.pid) - cpu)
                    cpu = _proc_cpu(ui.pid)
                    ours_trace.append(_render(driver, f"{base}/traces/{trace_id}"))
                    cpu_ours_trace.append(_proc_cpu(ui.pid) - cpu)
                    ours_list.append(_render(driver, base + "/traces?since=1h&filter=" +
                                             "service(%22payment-gateway%22)%20AND%20fault"))
                else:
                    wall = _wall(peer_map_cmd, env)
                    cpu_peer_map.append(_CPU[-1])
                    peer_map.append(wall + _render(driver, html.as_uri()))
                    peer_trace.append(_wall([*cli, "traces", "show", trace_id], env))
                    cpu_peer_trace.append(_CPU[-1])
        ours_start, bare_start = [], []
        for i in range(rounds):
            ours_start.append(_start_to_answer([*cli, "ui", "--listen", "127.0.0.1:0", "--store", str(store)], env))
            bare_start.append(_wall([sys.executable, "-c", "pass"], env))
        note = (f"store {size / 1024 ** 3:.2f} GiB ({built:.0f} s to build), 15-minute map window; "
                "ours = Chromium's loadEventEnd against a running `pulsetrace ui`; peers include process start")
        return [
            Comparison("ui: service map, first render, 1 GB store", "pulsetrace ui /", "servicemap --html + open",
                       "s", ours_map, peer_map, goal=None, note=note),
            Comparison("ui: 5,000-span trace, first render, 1 GB store", "pulsetrace ui /traces/ID",
                       "traces show ID", "s", ours_trace, peer_trace, goal=None,
                       note="first page of the waterfall (1,000 rows) and the details of the root span"),
            Comparison("ui: service map, CPU seconds, 1 GB store", "the ui server rendering /",
                       "servicemap --html (whole command)", "s", cpu_ours_map, cpu_peer_map, goal=None,
                       note="CPU time, which the machine's load does not inflate; the browser's own work excluded"),
            Comparison("ui: 5,000-span trace, CPU seconds, 1 GB store", "the ui server rendering /traces/ID",
                       "traces show ID (whole command)", "s", cpu_ours_trace, cpu_peer_trace, goal=None),
            Comparison("ui: start-up to the first answer", "pulsetrace ui (launch → GET /static/ui.css)",
                       "python -c pass", "s", ours_start, bare_start, goal=None,
                       note="imports Starlette, Jinja2 and uvicorn, loads the configuration, binds, answers"),
            Comparison("ui: filtered trace list, first render, 1 GB store", "pulsetrace ui /traces?filter=...",
                       "servicemap --html + open", "s", ours_list, peer_map, goal=None,
                       note='service("payment-gateway") AND fault over the last hour, 50 newest matches'),
        ]
    finally:
        if driver is not None:
            driver.quit()
        if ui is not None and ui.poll() is None:
            ui.send_signal(signal.SIGTERM)
            try:
                ui.wait(20)
            except subprocess.TimeoutExpired:
                ui.kill()
        shutil.rmtree(work, ignore_errors=True)
