"""Where the time goes: the end-to-end route in one process under cProfile, by function.

``python -m benchmarks.profile_e2e [--mode default|all|none] [--requests N] [--top K]``
serves ``N`` requests of :mod:`benchmarks.e2e_app` (the same route as ``bench_e2e``) through
httpx's in-process ASGI transport, with pulsetrace started in this process (default tiers,
100 %, or nothing), PostgreSQL and Redis real, the inventory call going to a loopback
``benchmarks.e2e_peers`` process. Prints the functions with the most own time, and the
total per request, so docs/performance.md can say where the remaining cost is. HTTP
parsing by uvicorn is not in it (no server): it profiles the instrumentation, not the server.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pulsetrace.demo.local_servers import PostgresServer, RedisServer, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent


def _config(mode: str, store: Path) -> dict[str, object]:
    cfg: dict[str, object] = {"service": {"name": "shop-api"}, "store": {"path": str(store)},
                              "health": {"enabled": False}}
    if mode == "all":
        cfg["tracing"] = {"sampling": {"tiers": {t: {"rate": 1.0, "reservoir": 0}
                                                 for t in ("critical", "business", "general", "health")}}}
    return cfg


async def _drive(app: object, n: int, body: bytes) -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        for _ in range(n):
            r = await client.post("/orders", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 201, r.text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_e2e")
    parser.add_argument("--mode", choices=("default", "all", "none"), default="default")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU per request, no profiler")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pulsetrace-profile-"))
    pg, rds = PostgresServer.create(), RedisServer.create()
    port = free_port()
    peer = subprocess.Popen([sys.executable, "-m", "benchmarks.e2e_peers", "--role", "downstream", "--port",
                             str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        os.environ.update(BENCH_DB_DSN=pg.dsn, BENCH_REDIS_URL=rds.url, BENCH_DOWNSTREAM_URL=f"http://127.0.0.1:{port}",
                          BENCH_MODE="none" if args.mode == "none" else "pulsetrace")
        if args.mode != "none":
            from pulsetrace import runtime
            from pulsetrace.validation import config_from_mapping

            runtime.start(config=config_from_mapping(_config(args.mode, workdir / "store"), env={}))
        from benchmarks.e2e_app import create_app
        from pulsetrace.instrumentation.asgi import PulseTraceMiddleware

        app = create_app()
        if args.mode != "none":
            from opentelemetry import trace

            app = PulseTraceMiddleware(app, trace.get_tracer_provider())  # type: ignore[arg-type]
        body = b'{"item": "book", "amount": 499.0, "method": "upi"}'

        async def run() -> float:
            async with app.router.lifespan_context(app) if hasattr(app, "router") else _lifespan(app):
                await _drive(app, 50, body)  # warm-up
                profile = cProfile.Profile()
                start = time.process_time()
                if args.no_profile:
                    await _drive(app, args.requests, body)
                    return time.process_time() - start
                profile.enable()
                await _drive(app, args.requests, body)
                profile.disable()
                cpu = time.process_time() - start
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out)
                print(by_area(stats, args.requests))
                stats.sort_stats("tottime").print_stats(r"pulsetrace|opentelemetry|/agent/|/instrumentation/", args.top)
                if os.environ.get("PROFILE_DUMP"):
                    profile.dump_stats(os.environ["PROFILE_DUMP"])
                print(out.getvalue())
                return cpu

        cpu = asyncio.run(run())
        print(f"mode={args.mode}: {cpu / args.requests * 1e6:,.0f} µs CPU per request"
              f"{'' if args.no_profile else ' (under the profiler)'}")
        if args.mode != "none":
            from pulsetrace import runtime

            runtime.shutdown(timeout=2.0)
    finally:
        peer.terminate()
        peer.wait(10)
        pg.destroy()
        rds.stop()
    return 0


#: Own time of each function, summed by where the function lives (first match wins).
AREAS = (
    ("pulsetrace: lean client hooks", ("/instrumentation/clients/", "pulsetrace/instrumentation/clients/")),
    ("pulsetrace: server span, business span, keep-errors, scrubbing", ("/instrumentation/", "pulsetrace/instrumentation/")),
    ("pulsetrace: sampler, pipeline, exporters, store", ("/agent/", "site-packages/pulsetrace/")),
    ("OpenTelemetry SDK (span objects, attributes, processors)", ("opentelemetry/sdk/",)),
    ("OpenTelemetry API (context, propagation)", ("opentelemetry/",)),
)


def by_area(stats: pstats.Stats, requests: int) -> str:
    """Own time per request by area, under the profiler (which inflates small functions: read the shares).

    Time blocked in the event loop's ``epoll`` wait is left out: it is waiting, not work.
    """
    totals: dict[str, float] = {}
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if "select.epoll" in name or "select.select" in name:
            continue  # waiting for the sockets (wall time, not CPU): left out of the shares
        own = row[2]
        area = next((label for label, marks in AREAS if any(m in filename for m in marks)),
                    "the application, its libraries, asyncio, sockets")
        totals[area] = totals.get(area, 0.0) + own
    whole = sum(totals.values()) or 1.0
    lines = ["| where | own time per request (profiled) | share |", "|---|---|---|"]
    for area, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {area} | {seconds / requests * 1e6:,.0f} µs | {seconds / whole:.0%} |")
    return "\n".join(lines)


def _lifespan(app: object) -> object:
    inner = getattr(app, "app", app)
    return inner.router.lifespan_context(inner)  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(main())
