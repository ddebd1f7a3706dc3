"""End-to-end overhead: one realistic route under uvicorn, driven by ``wrk``, in six configurations.

Every configuration serves the same app (:mod:`benchmarks.e2e_app`: ``POST /orders``
with one business span around a PostgreSQL query through an asyncpg pool, a Redis
``SET``+``GET`` and a call to a loopback HTTP service through a shared
``httpx.AsyncClient``), each in its own long-lived server process under its real
wrapper, all at the same time, and is driven in turn:

=================  =============================================================================
uninstrumented     ``uvicorn`` alone; the business span is a no-op
upstream OTel      ``opentelemetry-instrument uvicorn`` with opentelemetry-distro's defaults
                   (always-on sampling, OTLP traces + metrics + logs, batch processor), the
                   protocol set to http/protobuf, to a local accept-everything OTLP endpoint;
                   the contrib asyncpg/redis/httpx instrumentors it loads; the app wrapped in
                   ``OpenTelemetryMiddleware`` with its defaults (there is no ASGI
                   auto-instrumentor: the upstream docs tell users to wrap the app)
upstream, lean     the same, the middleware's per-message send/receive spans excluded and the
                   metrics/logs exporters off: what a careful user would tune (report only)
X-Ray SDK          aws-xray-sdk's async recorder, every request sampled, ``patch_all()``, an
                   ASGI port of its aiohttp middleware (:mod:`benchmarks.xray_asgi`), UDP to a
                   local socket. It patches httpx but neither asyncpg nor redis, so it records
                   3 entities per request where the OTel configurations record 6 or more
pulsetrace 100 %   ``pulsetrace run -- uvicorn``, every tier at rate 1.0, exporting xray-udp
                   to a local UDP socket (the local store while xray-udp has not landed)
pulsetrace same   pulsetrace 100 % with only what the X-Ray SDK instruments on this route (the
work           server span, the business span, httpx: asyncpg and redis disabled), so both
                   record 3 entities per request: the "same work" comparison
pulsetrace tiers   ``pulsetrace run -- uvicorn`` with the default configuration (default tiers:
                   ``/orders*`` is the business tier, 30 % + 1 trace/s; the local store)
pulsetrace tiers,  the same with ``PULSETRACE_LEAN_CLIENTS=0``: contrib's httpx/asyncpg/redis
contrib clients    instrumentors instead of the lean hooks (what the lean hooks save, report only)
=================  =============================================================================

Rounds are interleaved (each round runs every configuration once, starting at a different
place in the list each round, backwards on odd rounds); each run is ``wrk -t1 -c32 --latency`` for a fixed time, then a
settle second so the run's own export work is charged to it. CPU is user+system of
the server's whole process tree (wrapper included) from ``/proc``; resident memory
(RSS) of that tree is read at the end of every run, at steady load. The peers (the
inventory service, the OTLP/UDP sinks) run in their own processes.

``python -m benchmarks --only e2e`` runs it with the others; ``python -m
benchmarks.bench_e2e [--quick] [--markdown FILE]`` also writes the absolute table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.e2e_load import (
    WrkResult,
    post_script,
    process_rss_bytes,
    run_wrk,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from benchmarks.harness import Comparison, tool
from pulsetrace.demo.local_servers import PostgresServer, RedisServer, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"item": "book", "amount": 499.0, "method": "upi"})
CONNECTIONS = 32
SETTLE_S = 1.0

#: Spans (X-Ray entities) each configuration records per request on this route, for the per-entity
#: CPU rows. Counted from what each exports for one request: the X-Ray SDK a segment and two
#: subsegments (business, httpx); pulsetrace the server, business, asyncpg, two redis and httpx spans
#: (the pool's reset query is not recorded); upstream the server span and its three send/receive
#: spans, business, asyncpg twice (the reset query), two redis and httpx.
ENTITIES = {"xray": 3, "pt100": 6, "ptsame": 3, "otel": 10, "otel-lean": 7}


@dataclass
class Variant:
    key: str
    label: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    sink_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    runs: list[WrkResult] = field(default_factory=list)
    cpu_per_req: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    #: RSS of the processes that serve requests (the tree without pulsetrace's supervisor).
    app_rss: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rps(self) -> list[float]:
        return [r.rps for r in self.runs]

    def p50(self) -> list[float]:
        return [r.p50_s for r in self.runs]

    def p99(self) -> list[float]:
        return [r.p99_s for r in self.runs]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PULSETRACE_", "AWS_XRAY_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _uvicorn(port: int) -> list[str]:
    # h11 and the asyncio loop pinned, so every configuration parses HTTP the same way
    # whatever else is installed.
    return [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.e2e_app:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--http", "h11", "--loop", "asyncio", "--no-access-log", "--log-level", "warning"]


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _peer(role: str, port: int, udp_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "benchmarks.e2e_peers", "--role", role, "--port", str(port)]
    if udp_port:
        cmd += ["--udp-port", str(udp_port)]
    proc = _spawn(cmd, _base_env(), workdir / f"peer-{role}-{port}.log")
    wait_port(port, 15)
    return proc


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def xray_udp_available() -> bool:
    return importlib.util.find_spec("pulsetrace.exporters.xray_udp") is not None


def _pulsetrace_config(path: Path, store: Path, *, all_sampled: bool, udp_port: int | None,
                       disabled: tuple[str, ...] = ()) -> Path:
    cfg: dict[str, Any] = {"service": {"name": "shop-api"}, "store": {"path": str(store)},
                           "health": {"listen": f"127.0.0.1:{free_port()}"}}
    if all_sampled:
        cfg["tracing"] = {"sampling": {"tiers": {t: {"rate": 1.0, "reservoir": 0}
                                                 for t in ("critical", "business", "general", "health")}}}
        if udp_port is not None:
            cfg["tracing"]["exporters"] = ["xray-udp"]
            cfg["tracing"]["xray"] = {"daemon_address": f"127.0.0.1:{udp_port}"}
    if disabled:
        cfg.setdefault("tracing", {})["instrumentations"] = {"disabled": list(disabled)}
    path.write_text(yaml.safe_dump(cfg))
    return path


def build_variants(workdir: Path, dsn: str, redis_url: str, downstream: str) -> list[Variant]:
    base = {**_base_env(), "BENCH_DB_DSN": dsn, "BENCH_REDIS_URL": redis_url, "BENCH_DOWNSTREAM_URL": downstream}
    oi = tool("opentelemetry-instrument")
    variants: list[Variant] = []
    port = free_port()
    variants.append(Variant("bare", "uninstrumented", _uvicorn(port), {**base, "BENCH_MODE": "none"}, port))
    for key, label, mode, extra in (
        ("otel", "upstream OTel (defaults)", "otel", {}),
        ("otel-lean", "upstream OTel (lean)", "otel-lean", {"OTEL_METRICS_EXPORTER": "none",
                                                             "OTEL_LOGS_EXPORTER": "none"}),
    ):
        port, sink = free_port(), free_port()
        env = {**base, "BENCH_MODE": mode, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}",
               "OTEL_SERVICE_NAME": "shop-api", **extra}
        variants.append(Variant(key, label, [oi, *_uvicorn(port)], env, port, sink_port=sink))
    port, sink = free_port(), free_port()
    udp = free_port()
    variants.append(Variant("xray", "X-Ray SDK", _uvicorn(port), {**base, "BENCH_MODE": "xray",
                                                                    "BENCH_XRAY_DAEMON": f"127.0.0.1:{udp}"},
                            port, sink_port=sink))
    variants[-1].info["udp_port"] = udp
    ours = [sys.executable, "-m", "pulsetrace.cli.main", "run", "--config"]
    port, sink = free_port(), free_port()
    udp = free_port()
    use_udp = xray_udp_available()
    cfg100 = _pulsetrace_config(workdir / "pt100.yaml", workdir / "store-100", all_sampled=True,
                                udp_port=udp if use_udp else None)
    variants.append(Variant("pt100", "pulsetrace 100 %", [*ours, str(cfg100), "--", *_uvicorn(port)],
                            {**base, "BENCH_MODE": "pulsetrace"}, port, sink_port=sink if use_udp else None))
    variants[-1].info.update(udp_port=udp, exporter="xray-udp" if use_udp else "local",
                             store=str(workdir / "store-100"))
    port, sink, udp = free_port(), free_port(), free_port()
    cfgsame = _pulsetrace_config(workdir / "ptsame.yaml", workdir / "store-same", all_sampled=True,
                                 udp_port=udp if use_udp else None, disabled=("asyncpg", "redis"))
    variants.append(Variant("ptsame", "pulsetrace 100 %, same work as the X-Ray SDK",
                            [*ours, str(cfgsame), "--", *_uvicorn(port)], {**base, "BENCH_MODE": "pulsetrace"}, port,
                            sink_port=sink if use_udp else None))
    variants[-1].info.update(udp_port=udp, exporter="xray-udp" if use_udp else "local",
                             store=str(workdir / "store-same"))
    port = free_port()
    cfgdef = _pulsetrace_config(workdir / "ptdefault.yaml", workdir / "store-default", all_sampled=False,
                                udp_port=None)
    variants.append(Variant("ptdefault", "pulsetrace default tiers", [*ours, str(cfgdef), "--", *_uvicorn(port)],
                            {**base, "BENCH_MODE": "pulsetrace"}, port))
    variants[-1].info.update(exporter="local", store=str(workdir / "store-default"))
    port = free_port()
    cfgcontrib = _pulsetrace_config(workdir / "ptcontrib.yaml", workdir / "store-contrib", all_sampled=False,
                                    udp_port=None)
    variants.append(Variant("ptcontrib", "pulsetrace default tiers, contrib client instrumentors",
                            [*ours, str(cfgcontrib), "--", *_uvicorn(port)],
                            {**base, "BENCH_MODE": "pulsetrace", "PULSETRACE_LEAN_CLIENTS": "0"}, port))
    variants[-1].info.update(exporter="local", store=str(workdir / "store-contrib"))
    return variants


def _start(v: Variant, workdir: Path, peers: list[subprocess.Popen[bytes]]) -> None:
    if v.sink_port is not None:
        peers.append(_peer("sink", v.sink_port, int(v.info.get("udp_port", 0)), workdir))
    v.log = workdir / f"{v.key}.log"
    v.proc = _spawn(v.cmd, v.env, v.log)
    try:
        wait_port(v.port, 60)
        v.info.update(_get_json(v.url + "/bench/info"))
    except Exception as exc:
        raise RuntimeError(f"{v.label} did not start: {exc}\n{v.log.read_text(errors='replace')[-3000:]}") from exc


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _measure(v: Variant, seconds: float, script: Path) -> None:
    assert v.proc is not None
    cpu0 = tree_cpu_seconds(v.proc.pid)
    result = run_wrk(v.url + "/orders", seconds, connections=CONNECTIONS, script=script)
    v.rss.append(float(tree_rss_bytes(v.proc.pid)))
    supervisor = process_rss_bytes(v.proc.pid) if v.key.startswith("pt") else 0
    v.app_rss.append(v.rss[-1] - supervisor)
    time.sleep(SETTLE_S)
    cpu1 = tree_cpu_seconds(v.proc.pid)
    if result.non_2xx or result.errors or v.proc.poll() is not None:
        log = v.log.read_text(errors="replace")[-3000:] if v.log else ""
        raise RuntimeError(f"{v.label}: {result.non_2xx} non-2xx answers, {result.errors} socket errors, "
                           f"exit code {v.proc.poll()}\n{log}")
    v.runs.append(result)
    v.cpu_per_req.append((cpu1 - cpu0) / max(1, result.requests))


def _exported(v: Variant) -> str:
    if v.sink_port is not None:
        stats = _get_json(f"http://127.0.0.1:{v.sink_port}/stats")
        if stats.get("sampled_traces"):
            v.info["spans_per_trace"] = stats["sampled_spans"] / stats["sampled_traces"]
        if stats["udp_datagrams"]:
            return f"{stats['udp_datagrams']:,} UDP datagrams"
        paths = ", ".join(f"{p} {n:,}" for p, n in sorted(stats["otlp_paths"].items()))
        return f"OTLP POSTs: {paths}" if paths else "nothing"
    store = v.info.get("store")
    if store:
        from pulsetrace.store import LocalStore

        s = LocalStore(store, create=False)
        if not s.exists():
            return "nothing"
        try:
            return f"{s.span_count():,} spans in the local store"
        finally:
            s.close()
    return "–"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def absolute_table(variants: list[Variant]) -> str:
    lines = ["| configuration | req/s (median, min–max) | p50 | p99 | server CPU per request | RSS at load (tree) | "
             "business span | exported during the run |", "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        rps = v.rps()
        lines.append(f"| {v.label} | {_med(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) | {_med(v.p50()) * 1e3:.1f} ms"
                     f" | {_med(v.p99()) * 1e3:.1f} ms | {_med(v.cpu_per_req) * 1e6:,.0f} µs | "
                     f"{_med(v.rss) / 2**20:,.0f} MiB ({_med(v.app_rss) / 2**20:,.0f} MiB app) | "
                     f"{v.info.get('business_span', '?')} | {v.info.get('exported', '?')} |")
    return "\n".join(lines)


def _entities(v: Variant) -> float:
    """Spans per request: counted in the OTLP exports when the sink saw some, else :data:`ENTITIES`."""
    measured = v.info.get("spans_per_trace")
    return float(measured) if measured else float(ENTITIES[v.key])


def _per_entity(v: Variant, bare: Variant) -> list[float]:
    """CPU per recorded span, per round: the configuration's CPU per request over the uninstrumented one's."""
    n = _entities(v)
    return [max(0.0, c - b) / n for c, b in zip(v.cpu_per_req, bare.cpu_per_req, strict=False)]


def comparisons(by: dict[str, Variant], rounds: int, seconds: float) -> list[Comparison]:
    bare, otel, lean, xray, pt100, ptsame, ptdef = (by[k] for k in ("bare", "otel", "otel-lean", "xray", "pt100",
                                                                    "ptsame", "ptdefault"))
    setup = (f"{rounds} interleaved rounds × {seconds:g} s of wrk -t1 -c{CONNECTIONS} per configuration; "
             f"pulsetrace 100 % exports {pt100.info.get('exporter')}")
    compact = "; ".join(f"{v.label}: {_med(v.rps()):,.0f} req/s, p50 {_med(v.p50()) * 1e3:.1f} ms, "
                        f"p99 {_med(v.p99()) * 1e3:.1f} ms, {_med(v.cpu_per_req) * 1e6:,.0f} µs CPU/req, "
                        f"RSS {_med(v.rss) / 2**20:,.0f} MiB"
                        for v in by.values())
    entity_note = ("(CPU per request − uninstrumented CPU per request) / spans recorded per request, per round; "
                   "spans per request (upstream's counted in its OTLP exports): "
                   + ", ".join(f"{by[k].label}: {_entities(by[k]):.1f}" for k in ENTITIES))
    out = [
        Comparison("e2e throughput: default tiers vs none", ptdef.label, bare.label, "req/s", ptdef.rps(), bare.rps(),
                   goal=(">=", 0.92), note=f"{setup}. Absolute: {compact}"),
        Comparison("e2e CPU/request: default tiers vs none", ptdef.label, bare.label, "s", ptdef.cpu_per_req,
                   bare.cpu_per_req, goal=("<=", 1.08)),
        Comparison("e2e throughput: 100 %, same work as the X-Ray SDK", ptsame.label, xray.label, "req/s", ptsame.rps(),
                   xray.rps(), goal=(">=", 1.0), note="both record 3 entities per request: the server span/segment, "
                   "the business span/subsegment and the httpx call (pulsetrace's asyncpg and redis hooks disabled; "
                   "the X-Ray SDK has none for them)"),
        Comparison("e2e throughput: 100 % vs X-Ray SDK", pt100.label, xray.label, "req/s", pt100.rps(), xray.rps(),
                   goal=None, note="not the same work: the X-Ray SDK records 3 entities per request, pulsetrace 6 "
                   "(the asyncpg query and the two redis commands too)"),
        Comparison("e2e CPU per recorded span vs X-Ray SDK", pt100.label, xray.label, "s", _per_entity(pt100, bare),
                   _per_entity(xray, bare), goal=("<=", 1.0), note=entity_note),
        Comparison("e2e CPU per recorded span vs upstream OTel", pt100.label, otel.label, "s",
                   _per_entity(pt100, bare), _per_entity(otel, bare), goal=None),
        Comparison("e2e throughput: 100 % vs upstream OTel", pt100.label, otel.label, "req/s", pt100.rps(), otel.rps(),
                   goal=(">=", 1.5), note="upstream: opentelemetry-instrument + OpenTelemetryMiddleware defaults "
                   "(send/receive spans, OTLP traces+metrics+logs over http/protobuf)"),
        Comparison("e2e throughput: 100 % vs upstream OTel, lean", pt100.label, lean.label, "req/s", pt100.rps(),
                   lean.rps(), goal=None, note="upstream with send/receive spans excluded and metrics/logs off"),
        Comparison("e2e CPU/request: default tiers, lean hooks vs contrib's", ptdef.label, by["ptcontrib"].label,
                   "s", ptdef.cpu_per_req, by["ptcontrib"].cpu_per_req, goal=None,
                   note="the same pulsetrace configuration, the client spans by the lean hooks or by contrib's "
                   "instrumentors (PULSETRACE_LEAN_CLIENTS=0)"),
        Comparison("e2e RSS at steady load: 100 % vs upstream OTel", pt100.label, otel.label, "MiB",
                   [r / 2**20 for r in pt100.rss], [r / 2**20 for r in otel.rss], goal=("<=", 1.0),
                   note="resident memory of the server's process tree (pulsetrace's supervisor included: it runs "
                   "the probes and /health, which upstream does not have) at the end of each run"),
        Comparison("e2e RSS at steady load, app process: 100 % vs upstream OTel", pt100.label, otel.label, "MiB",
                   [r / 2**20 for r in pt100.app_rss], [r / 2**20 for r in otel.app_rss], goal=None,
                   note="the process serving requests only (pulsetrace's supervisor left out)"),
    ]
    for name, ours, peer in (("default tiers vs none", ptdef, bare), ("100 % vs X-Ray SDK", pt100, xray),
                             ("same work vs X-Ray SDK", ptsame, xray), ("100 % vs upstream OTel", pt100, otel)):
        out.append(Comparison(f"e2e p50: {name}", ours.label, peer.label, "s", ours.p50(), peer.p50()))
        out.append(Comparison(f"e2e p99: {name}", ours.label, peer.label, "s", ours.p99(), peer.p99()))
        if name != "default tiers vs none":
            out.append(Comparison(f"e2e CPU/request: {name}", ours.label, peer.label, "s", ours.cpu_per_req,
                                  peer.cpu_per_req))
    return out


def measure(quick: bool) -> tuple[list[Variant], list[Comparison]]:
    rounds, seconds = (2, 3.0) if quick else (5, 8.0)
    warmup = 1.0 if quick else 2.0
    workdir = Path(tempfile.mkdtemp(prefix="pulsetrace-bench-e2e-"))
    redis: RedisServer | None = None
    pg_server: PostgresServer | None = None
    peers: list[subprocess.Popen[bytes]] = []
    variants: list[Variant] = []
    script = post_script(BODY)
    try:
        redis = RedisServer.create()
        pg_server = PostgresServer.create()
        downstream_port = free_port()
        peers.append(_peer("downstream", downstream_port, 0, workdir))
        variants = build_variants(workdir, pg_server.dsn, redis.url, f"http://127.0.0.1:{downstream_port}")
        for v in variants:
            _start(v, workdir, peers)
        for v in variants:
            run_wrk(v.url + "/orders", warmup, connections=CONNECTIONS, script=script)
        time.sleep(SETTLE_S)
        for i in range(rounds):
            # Each round starts elsewhere in the list and odd rounds run backwards, so no two configurations
            # are always neighbours in time (a burst of load elsewhere would hit both alike).
            shift = (3 * i) % len(variants)
            order = variants[shift:] + variants[:shift]
            if i % 2:
                order.reverse()
            for v in order:
                print(f"   round {i + 1}/{rounds}: {v.label}", file=sys.stderr, flush=True)
                _measure(v, seconds, script)
        for v in variants:
            v.info["exported"] = _exported(v)
        return variants, comparisons({v.key: v for v in variants}, rounds, seconds)
    finally:
        for v in variants:
            _stop(v.proc)
        for p in peers:
            _stop(p)
        script.unlink(missing_ok=True)
        if redis is not None:
            redis.stop()
        if pg_server is not None:
            pg_server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def run(quick: bool) -> list[Comparison]:
    variants, results = measure(quick)
    print(absolute_table(variants), file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_e2e")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", metavar="FILE", help="write the absolute table and the ratios as Markdown")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import table

    variants, results = measure(args.quick)
    text = absolute_table(variants) + "\n\n" + table(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
