"""``/health`` from the snapshot vs a "Rex-style" handler that pings PostgreSQL and Redis per request.

Both run on the same server stack (:class:`pulsetrace.http.HealthServer` on its own event
loop thread): ours answers from the probes' snapshot while the probes keep running (postgres
and redis, every second); the peer awaits ``SELECT 1`` (asyncpg pool of 10) and ``PING``
(redis pool) on every request, as health endpoints that check per request do. Load: ``wrk
-t1 -c50`` on loopback (a Python asyncio client when wrk is missing), ours and the peer
interleaved over the rounds. Reported: requests/s (goal ≥ 10× the peer, issue 11) and p99 latency
(goal ≤ 0.1× the peer); then ours again while 1,000 idle connections are held open against it (by a
process of its own), against ours with none held: the p99 must stay within 50 ms.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Comparison, interleaved

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _parse_wrk(text: str) -> tuple[float, float]:
    """(requests/s, p99 seconds) from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    p99 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    return rps, p99


def _wrk(port: int, seconds: float) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
                          f"http://127.0.0.1:{port}/health"], capture_output=True, text=True, timeout=seconds + 30)
    return _parse_wrk(out.stdout)


async def _python_load(port: int, seconds: float) -> tuple[float, float]:
    """A keep-alive asyncio client with 50 connections, for machines without wrk."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]))
            latencies.append(time.perf_counter() - t0)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(50)))
    latencies.sort()
    return len(latencies) / (time.perf_counter() - started), latencies[int(len(latencies) * 0.99) - 1]


def _hold_idle(port: int, connections: int, seconds: float) -> subprocess.Popen[bytes]:
    """A process holding ``connections`` idle connections to ``port`` (re-dialled when closed) for ``seconds``."""
    import sys
    from pathlib import Path

    attacker = Path(__file__).resolve().parents[1] / "tests" / "reliability" / "apps" / "health_attacker.py"
    # From 20 loopback addresses (50 each, within the per-client cap), as many clients would.
    proc = subprocess.Popen([sys.executable, str(attacker), "hold", str(port), f"{seconds:g}", str(connections), "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # let it dial them all before the load starts (a benchmark, not a test: no condition to wait on)
    return proc


def _load(port: int, seconds: float) -> tuple[float, float]:
    if shutil.which("wrk"):
        return _wrk(port, seconds)
    return asyncio.run(_python_load(port, seconds))


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-health-peer", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _start_peer(dsn: str, redis_url: str) -> tuple[_LoopThread, int, Callable[[], None]]:
    import asyncpg
    import redis.asyncio as redis

    from pulsetrace.http import HealthServer, Request, Response, json_response

    lt = _LoopThread()
    state: dict[str, Any] = {}

    async def setup() -> int:
        state["pool"] = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        state["redis"] = redis.Redis.from_url(redis_url, max_connections=50)

        async def handler(req: Request) -> Response:
            try:
                async with state["pool"].acquire() as conn:
                    await conn.fetchval("SELECT 1")
                await state["redis"].ping()
            except Exception:
                return json_response(503, {"status": "DOWN"})
            return json_response(200, {"status": "UP", "stale": False})

        server = HealthServer(handler, "127.0.0.1", 0, max_connections=1024)
        await server.start()
        state["server"] = server
        return server.port

    port = lt.run(setup())

    def stop() -> None:
        async def teardown() -> None:
            await state["server"].stop()
            await state["pool"].close()
            await state["redis"].aclose()

        lt.run(teardown())
        lt.close()

    return lt, port, stop


def run(quick: bool) -> list[Comparison]:
    from pulsetrace.validation import config_from_mapping
    from pulsetrace.demo.local_servers import PostgresServer, RedisServer, free_port
    from pulsetrace.healthchecks.handle import start_in_thread

    seconds = 2.0 if quick else 5.0
    rounds = 2 if quick else 4
    pg = PostgresServer.create()
    rd = RedisServer.create()
    store = tempfile.mkdtemp(prefix="pulsetrace-bench-health-")
    handle = None
    stop_peer: Callable[[], None] | None = None
    try:
        cfg = config_from_mapping({"store": {"path": store}, "health": {
            "listen": f"127.0.0.1:{free_port()}", "max_connections": 1200, "probes": [
                {"name": "db", "type": "postgres", "dsn": pg.dsn, "interval": "1s", "timeout": "0.5s",
                 "critical": True},
                {"name": "cache", "type": "redis", "url": rd.url, "interval": "1s", "timeout": "0.5s",
                 "critical": True}]}}, env={})
        handle = start_in_thread(cfg)
        deadline = time.monotonic() + 10
        while handle.snapshot().status.value != "UP" and time.monotonic() < deadline:
            time.sleep(0.05)
        _, peer_port, stop_peer = _start_peer(pg.dsn, rd.url)
        ours_port = handle.port
        ours_p99: list[float] = []
        peer_p99: list[float] = []

        def ours() -> float:
            rps, p99 = _load(ours_port, seconds)
            ours_p99.append(p99)
            return rps

        def peer() -> float:
            rps, p99 = _load(peer_port, seconds)
            peer_p99.append(p99)
            return rps

        ours_rps, peer_rps = interleaved(rounds, ours, peer)
        held_p99: list[float] = []
        quiet_p99: list[float] = []

        def held() -> float:
            holder = _hold_idle(ours_port, 1000, seconds + 8)
            try:
                _, p99 = _load(ours_port, seconds)
            finally:
                holder.terminate()
                holder.wait(10)
            held_p99.append(p99)
            return p99

        def quiet() -> float:
            _, p99 = _load(ours_port, seconds)
            quiet_p99.append(p99)
            return p99

        interleaved(rounds, held, quiet)
        checks = sum(s.runner.checks for s in handle.service.probes.values())
        tool = "wrk -t1 -c50" if shutil.which("wrk") else "asyncio client, 50 connections"
        note = (f"{tool}, {seconds:g}s × {rounds} rounds per side, loopback, 2 vCPUs shared; ours answered from "
                f"the snapshot while 2 probes ran every 1s ({checks} checks in total); the peer awaited SELECT 1 "
                f"(asyncpg pool of 10) + PING per request. Median p99: ours "
                f"{statistics.median(ours_p99) * 1e3:.2f} ms, peer {statistics.median(peer_p99) * 1e3:.2f} ms.")
        held_note = (f"p99 with 1,000 idle connections held (a process of its own dials them from 20 loopback "
                     f"addresses and holds them; max_connections 1200, so all stay open): median "
                     f"{statistics.median(held_p99) * 1e3:.2f} ms "
                     f"(goal ≤ 50 ms), against {statistics.median(quiet_p99) * 1e3:.2f} ms with none held.")
        return [
            Comparison("/health throughput", "snapshot (pulsetrace)", "per-request checks (Rex-style)", "req/s",
                       ours=ours_rps, peer=peer_rps, goal=(">=", 10.0), note=note),
            Comparison("/health p99 latency", "snapshot (pulsetrace)", "per-request checks (Rex-style)", "s",
                       ours=ours_p99, peer=peer_p99, goal=("<=", 0.1)),
            Comparison("/health p99, 1,000 idle connections held", "1,000 held", "none held", "s",
                       ours=held_p99, peer=quiet_p99, goal=None, note=held_note),
        ]
    finally:
        if stop_peer is not None:
            stop_peer()
        if handle is not None:
            handle.stop(1.0)
        rd.stop()
        pg.destroy()
        shutil.rmtree(store, ignore_errors=True)
