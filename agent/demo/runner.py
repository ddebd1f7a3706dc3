"""``pulsetrace demo``: the whole system on embedded defaults, on loopback.

Starts PostgreSQL and Redis from the system's binaries when present (and says what
it skipped when not), a payment gateway and the shop service under ``pulsetrace
run`` (two workers), simulated RFID readers sending heartbeats, drives traffic
with a progress bar, then prints a summary: traces recorded, example span trees,
the service map, the health of every probe and the SLA table. Everything it
starts, it stops, including on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulsetrace.demo.local_servers import (
    PostgresServer,
    RedisServer,
    free_port,
    postgres_available,
    redis_available,
    wait_port,
)

READERS = [f"gate-{i:02d}" for i in range(1, 11)]


@dataclass
class DemoEnv:
    workdir: Path
    store: Path
    out: Any = sys.stdout
    skipped: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    health_port: int = 0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _pulsetrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "pulsetrace.cli.main", *args]


def _write_config(env: DemoEnv, gateway_port: int, shop_port: int) -> Path:
    probes: list[dict[str, Any]] = []
    if env.postgres is not None:
        probes.append({"name": "db", "type": "postgres", "dsn": "${DEMO_DB_DSN:-postgresql://app@127.0.0.1:1/shop}", "interval": "2s", "timeout": "1s",
                       "critical": True, "thresholds": {"connect_ms": 200, "query_ms": 100}, "sla": 99.9,
                       "impact": {"revenue_per_minute": 120, "users": 5000}})
    if env.redis is not None:
        probes.append({"name": "cache", "type": "redis", "url": "${DEMO_REDIS_URL:-redis://127.0.0.1:1/0}", "interval": "2s",
                       "timeout": "1s", "thresholds": {"ping_ms": 50}, "sla": 99.5,
                       "impact": {"revenue_per_minute": 10, "users": 5000}})
        probes.append({"name": "rfid", "type": "rfid", "interval": "2s", "timeout": "1s", "max_age": "4s",
                       "source": {"redis_url": "${DEMO_REDIS_URL:-redis://127.0.0.1:1/0}", "key_pattern": "rfid:reader:*"}, "sla": 99.0,
                       "impact": {"users": 1200}})
    probes.append({"name": "payments", "type": "http", "url": f"http://127.0.0.1:{gateway_port}/status",
                   "interval": "2s", "timeout": "1s", "expect_status": [200], "thresholds": {"latency_ms": 500},
                   "sla": 99.8, "impact": {"revenue_per_minute": 300, "users": 4000}})
    cfg = {
        "service": {"name": "shop-api", "environment": "demo", "version": "1.4.2"},
        "store": {"path": str(env.store)},
        "tracing": {"exporters": ["local"], "sampling": {"slow_ms": 200}},
        "health": {"listen": f"127.0.0.1:{env.health_port}", "probes": probes},
    }
    # Kept beside the store, so that `pulsetrace sla --config ...` works after the demo too;
    # the secrets stay in environment variables that only the demo's processes have.
    env.store.mkdir(parents=True, exist_ok=True)
    path = env.store / "demo.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _start(env: DemoEnv, cmd: list[str], extra_env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    logfile = (env.workdir / log).open("wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **extra_env}, stdout=logfile, stderr=subprocess.STDOUT,
                            cwd=env.workdir)
    env.procs.append(proc)
    return proc


def _heartbeats(env: DemoEnv, stop: threading.Event, stale_after: float) -> None:
    """Ten RFID readers report every second; one goes quiet part way through."""
    import redis

    assert env.redis is not None
    client = redis.Redis.from_url(env.redis.url)
    started = time.time()
    try:
        while not stop.is_set():
            now = time.time()
            for reader in READERS:
                if reader == "gate-07" and now - started > stale_after:
                    continue
                client.set(f"rfid:reader:{reader}", json.dumps({"ts": now, "firmware": "2.4.1"}))
            stop.wait(1.0)
    finally:
        client.close()


def _traffic(base: str, duration: float, env: DemoEnv) -> dict[str, int]:
    import httpx

    counts: dict[str, int] = {}
    deadline = time.monotonic() + duration
    started = time.monotonic()
    rng = random.Random(7)
    width = 30
    last_step = -width
    tty = bool(getattr(env.out, "isatty", lambda: False)())
    with httpx.Client(base_url=base, timeout=10.0) as client:
        while time.monotonic() < deadline:
            school = f"school-{rng.randrange(1, 60)}"
            roll = rng.random()
            try:
                if roll < 0.30:
                    r = client.post("/orders", json={"school_id": school, "items": [1, 2], "total": 250.0,
                                                     "email": "parent.of.student@example.com"})
                elif roll < 0.55:
                    r = client.post("/payments", json={"order_id": f"ord_{rng.randrange(10**6)}", "amount": 250.0,
                                                       "method": rng.choice(["upi", "card", "netbanking"]),
                                                       "school_id": school})
                elif roll < 0.80:
                    card = "card-revoked-1" if rng.random() < 0.05 else f"card-{rng.randrange(10**5)}"
                    r = client.post("/rfid/verify", json={"card_id": card, "reader_id": rng.choice(READERS),
                                                          "school_id": school})
                elif roll < 0.90:
                    r = client.post("/login", json={"user": "admin@example.com",
                                                    "password": "wrong" if rng.random() < 0.1 else "hunter2"})
                elif roll < 0.99:
                    r = client.get("/health")
                else:
                    r = client.post("/crash", json={})
                key = f"{r.status_code // 100}xx"
            except httpx.HTTPError:
                key = "failed"
            counts[key] = counts.get(key, 0) + 1
            done = min(1.0, (time.monotonic() - started) / duration)
            step = int(done * width)
            if tty or step >= last_step + width // 4 or done >= 1.0 and last_step < width:
                last_step = step
                total = sum(counts.values())
                bar = "#" * step + "." * (width - step)
                env.out.write(("\r" if tty else "") + f"  [{bar}] {done * 100:3.0f}%  {total} requests  "
                              + " ".join(f"{k}={v}" for k, v in sorted(counts.items())) + ("   " if tty else "\n"))
                env.out.flush()
            time.sleep(0.01)
    if tty:
        env.out.write("\n")
    return counts


def _stop_procs(env: DemoEnv) -> None:
    for proc in env.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in env.procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def _servers(env: DemoEnv) -> Iterator[None]:
    try:
        if postgres_available():
            env.say("  starting PostgreSQL (system binaries) ...")
            try:
                env.postgres = PostgresServer.create(password=secrets.token_urlsafe(12))
            except Exception as exc:
                env.skipped.append(f"PostgreSQL: could not start ({type(exc).__name__}); the shop runs without it")
        else:
            env.skipped.append("PostgreSQL: no initdb/pg_ctl on this machine (apt-get install postgresql); "
                               "the shop runs without a database")
        if redis_available():
            env.say("  starting Redis ...")
            try:
                env.redis = RedisServer.create()
            except Exception as exc:
                env.skipped.append(f"Redis: could not start ({type(exc).__name__}); no cache, no RFID heartbeats")
        else:
            env.skipped.append("Redis: no redis-server on this machine (apt-get install redis-server); "
                               "no cache and no RFID readers")
        yield
    finally:
        _stop_procs(env)
        if env.redis is not None:
            env.redis.stop()
        if env.postgres is not None:
            env.postgres.destroy()


def _print_summary(env: DemoEnv, config: Path, counts: dict[str, int], cli: Command) -> None:
    total = sum(counts.values())
    env.say("")
    env.say(f"Traffic: {total} requests (" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")")
    env.say("")
    env.say("== Recent traces (pulsetrace traces) ==")
    cli(["traces", "--config", str(config), "--limit", "8"])
    shown = _example_traces(env)
    for trace_id, why in shown:
        env.say("")
        env.say(f"== A {why} trace (pulsetrace traces show {trace_id}) ==")
        cli(["traces", "show", trace_id, "--config", str(config)])
    env.say("")
    env.say("== Service map (pulsetrace servicemap --since 15m) ==")
    cli(["servicemap", "--config", str(config), "--since", "15m"])
    env.say("")
    env.say("== SLA (pulsetrace sla) ==")
    cli(["sla", "--config", str(config)])
    if env.skipped:
        env.say("")
        env.say("Skipped:")
        for line in env.skipped:
            env.say(f"  - {line}")
    env.say("")
    env.say(f"The store is in {env.store}. Look again with `pulsetrace traces`, `pulsetrace servicemap` and "
            f"`pulsetrace sla --config {config}` from this directory.")


def _example_traces(env: DemoEnv) -> list[tuple[str, str]]:
    """A payment, an RFID check and an error, if the store has them."""
    from pulsetrace.store import LocalStore

    store = LocalStore(env.store, create=False)
    if not store.exists():
        return []
    conn = store.connect()
    picks: list[tuple[str, str]] = []
    queries = [
        ("payment", "SELECT trace_id FROM spans WHERE name = 'payment.create' ORDER BY start DESC LIMIT 1"),
        ("RFID verification", "SELECT trace_id FROM spans WHERE name = 'rfid.verify' ORDER BY start DESC LIMIT 1"),
        ("failed", "SELECT trace_id FROM spans WHERE status = 'error' AND parent_span_id IS NULL "
                   "ORDER BY start DESC LIMIT 1"),
    ]
    for why, sql in queries:
        row = conn.execute(sql).fetchone()
        if row and row[0] not in {t for t, _ in picks}:
            picks.append((row[0], why))
    store.close()
    return picks


#: Runs one ``pulsetrace`` command line in this process (the CLI hands in its own ``main``).
Command = Callable[[list[str]], int]


def _db_outage(env: DemoEnv, stop: threading.Event, after: float, length: float) -> None:
    """Stops PostgreSQL ``after`` seconds into the traffic and starts it again ``length`` seconds later."""
    if stop.wait(after) or env.postgres is None:
        return
    env.say(f"\n  stopping PostgreSQL for {length:g}s (a database outage) ...")
    env.postgres.stop("immediate")
    stop.wait(length)
    try:
        env.postgres.start()
        env.say("\n  PostgreSQL is back")
    except Exception as exc:  # the summary still runs; the db probe simply stays DOWN
        env.say(f"\n  PostgreSQL did not come back ({type(exc).__name__})")


def run_demo(duration: float, cli: Command, store: Path | None = None, out: Any = None,
             db_outage: float = 0.0) -> int:
    """Run the demo for ``duration`` seconds, then show its traces, map and SLA through ``cli``.

    ``db_outage`` > 0 stops PostgreSQL for that many seconds a third of the way in, so the
    store records a DOWN period of the ``db`` probe and the failing requests it causes.
    """
    out = out or sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="pulsetrace-demo-"))
    store_path = (store or Path(".pulsetrace")).resolve()
    env = DemoEnv(workdir=workdir, store=store_path, out=out, health_port=free_port())
    env.say("pulsetrace demo: a shop service, a payment gateway and RFID readers, instrumented and probed.")
    stop = threading.Event()
    with _servers(env):
        gateway_port, shop_port = free_port(), free_port()
        config = _write_config(env, gateway_port, shop_port)
        secrets_env: dict[str, str] = {}
        if env.postgres is not None:
            secrets_env["DEMO_DB_DSN"] = env.postgres.dsn
            secrets_env["SHOP_DB_DSN"] = env.postgres.dsn
        if env.redis is not None:
            secrets_env["DEMO_REDIS_URL"] = env.redis.url
            secrets_env["SHOP_REDIS_URL"] = env.redis.url
        base_env = {**secrets_env, "PULSETRACE_STORE": str(store_path)}
        env.say("  starting the payment gateway under pulsetrace run ...")
        _start(env, _pulsetrace("run", "--config", str(config), "--no-health", "--", sys.executable, "-m", "uvicorn",
                                "pulsetrace.demo.gateway:app", "--port", str(gateway_port), "--log-level", "warning"),
               {**base_env, "OTEL_SERVICE_NAME": "payment-gateway"}, "gateway.log")
        env.say("  starting the shop (2 workers) under pulsetrace run, health on "
                f"http://127.0.0.1:{env.health_port}/health ...")
        _start(env, _pulsetrace("run", "--config", str(config), "--", sys.executable, "-m", "uvicorn",
                                "pulsetrace.demo.shop:app", "--port", str(shop_port), "--workers", "2",
                                "--log-level", "warning"),
               {**base_env, "SHOP_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}"}, "shop.log")
        try:
            wait_port(gateway_port, 90)  # a busy machine starts two uvicorns slowly
            wait_port(shop_port, 90)
        except TimeoutError:
            env.say(f"the services did not start; their logs are in {workdir}")
            return 1
        beat = None
        if env.redis is not None:
            beat = threading.Thread(target=_heartbeats, args=(env, stop, duration / 2), name="demo-rfid", daemon=True)
            beat.start()
        outage = None
        if db_outage > 0 and env.postgres is not None:
            outage = threading.Thread(target=_db_outage, args=(env, stop, duration / 3, db_outage),
                                      name="demo-db-outage", daemon=True)
            outage.start()
        env.say(f"  driving traffic for {duration:g}s ...")
        counts = _traffic(f"http://127.0.0.1:{shop_port}", duration, env)
        health = _health_details(env.health_port)
        stop.set()
        if outage is not None:
            outage.join(40)
        if beat is not None:
            beat.join(3)
        _stop_procs(env)
        if health:
            env.say("")
            env.say(f"Health at the end: {health.get('status')}  " + ", ".join(
                f"{name}={p.get('status')}" for name, p in sorted(health.get("probes", {}).items())))
        _print_summary(env, config, counts, cli)
    return 0


def _health_details(port: int) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/details", timeout=2) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError):
        return None
