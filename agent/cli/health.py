"""``pulsetrace serve``, ``pulsetrace check`` and ``pulsetrace sla``.

- ``serve``: probes + health server in the foreground (a sidecar); exits 0 on SIGTERM/SIGINT.
- ``check``: one round of every probe, concurrently, then a table or the details JSON;
  exit 0 UP, 1 DEGRADED, 2 DOWN. Writes nothing to the store.
- ``sla``: the SLA report per probe from the local store's minute buckets.

Every line printed is built from redacted probe output; no configuration secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from pulsetrace.cli.main import CliError

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.healthchecks.snapshot import HealthSnapshot


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the probes and the health server (sidecar)",
                       description="Run the health probes and the health HTTP server until SIGTERM.")
    p.set_defaults(func=serve)
    p = sub.add_parser("check", parents=[common], help="run every probe once; exit 0 UP, 1 DEGRADED, 2 DOWN",
                       description="Run one round of every probe and print the result.")
    p.add_argument("--json", action="store_true", help="print the details JSON")
    p.set_defaults(func=check)
    p = sub.add_parser("sla", parents=[common], help="SLA report per probe from the local store",
                       description="Availability, error budget, burn rate and revenue at risk per probe.")
    p.add_argument("--window", default="30d", help="rolling window, e.g. 1h, 24h, 7d, 30d (default 30d, at most 30d)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=sla)


def _load(args: argparse.Namespace) -> Config:
    from pulsetrace.validation import load_config

    return load_config(args.config)


# -- serve ------------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if not cfg.health.enabled:
        raise CliError("health is disabled in the configuration (health.enabled: false)", 2)
    _log_to_stderr()
    return asyncio.run(_serve(cfg))


def _log_to_stderr() -> None:
    log = logging.getLogger("pulsetrace.health")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pulsetrace %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


async def _serve(cfg: Config) -> int:
    from pulsetrace.healthchecks.service import HealthService, open_store
    from pulsetrace.selfmetrics import SelfMetrics

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = SelfMetrics()
    service = HealthService(cfg, store=open_store(cfg), metrics=metrics)
    try:
        await service.start()
    except OSError as exc:
        await service.stop(0.5)
        raise CliError(f"cannot listen on {cfg.health.listen}: {exc.strerror or exc}", 1) from None
    publisher = None
    if cfg.metrics.cloudwatch.mode != "off":  # the sidecar also publishes the health metrics
        from pulsetrace.metrics.health_metrics import wire_health_metrics

        publisher = wire_health_metrics(cfg, service.add_snapshot_listener, metrics)
    from pulsetrace.cli.run import start_alerts

    alerts = start_alerts(cfg, service.add_snapshot_listener, metrics)
    port = service.server.port if service.server is not None else 0
    host = cfg.health.listen.rpartition(":")[0] or "127.0.0.1"
    sys.stderr.write(f"pulsetrace: health on http://{host}:{port}/health ({len(service.probes)} probes)\n")
    sys.stderr.flush()
    try:
        await stop.wait()
    finally:
        await service.stop(2.0)
        if alerts is not None:
            await asyncio.to_thread(alerts.stop, 2.0)
        if publisher is not None:
            await asyncio.to_thread(publisher.shutdown, 2.0)
    return 0


# -- check ------------------------------------------------------------------------------------------


def check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from pulsetrace.healthchecks.status import exit_code

    snapshot = asyncio.run(_one_round(cfg))
    if args.json:
        sys.stdout.write(json.dumps(snapshot.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(check_table(snapshot))
    return exit_code(snapshot.status)


async def _one_round(cfg: Config) -> HealthSnapshot:
    from pulsetrace.runtime import probe_round

    snapshot: HealthSnapshot = await probe_round(cfg)
    return snapshot


def _cell(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def check_table(snapshot: HealthSnapshot) -> str:
    probes = snapshot.probes
    if not probes:
        return f"status {snapshot.status.value}: no probes configured (health.probes)\n"
    name_w = max(5, *(len(n) for n in probes))
    lines = [f"{'PROBE':<{name_w}}  {'STATUS':<8}  {'CRITICAL':<8}  {'LATENCY':>9}  DETAIL"]
    for name, p in sorted(probes.items()):
        latency = "-" if p.latency_ms is None else f"{p.latency_ms:.1f} ms"
        lines.append(f"{name:<{name_w}}  {p.status.value:<8}  {'yes' if p.critical else 'no':<8}  "
                     f"{latency:>9}  {_cell(p.detail, 90)}")
    lines.append(f"overall: {snapshot.status.value}")
    return "\n".join(lines) + "\n"


# -- sla --------------------------------------------------------------------------------------------


def sla(args: argparse.Namespace) -> int:
    from pulsetrace.config.problems import parse_duration

    cfg = _load(args)
    try:
        window_s = parse_duration(args.window)
    except ValueError:
        raise CliError(f"--window {args.window!r} is not a duration (e.g. 1h, 24h, 7d, 30d)", 2) from None
    if not 60 <= window_s <= 30 * 86400:
        raise CliError(f"--window {args.window} out of range (1m to 30d: history is kept for 30 days)", 2)
    report = sla_report(cfg, args.window, int(window_s), time.time())
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(sla_table(report))
    return 0


def sla_report(cfg: Config, window: str, window_s: int, now: float) -> dict[str, Any]:
    """The ``sla --json`` document from the store (no probe runs)."""
    from pulsetrace.healthchecks.history import HealthHistory
    from pulsetrace.healthchecks.sla import RETENTION_MINUTES, SlaTracker
    from pulsetrace.store import LocalStore

    store = LocalStore(cfg.store.path, create=False)
    history = HealthHistory(store) if store.exists() else None
    hc = cfg.health
    out: list[dict[str, Any]] = []
    for probe in hc.probes:
        tracker = SlaTracker(probe.sla, degraded_is_available=hc.degraded_is_available, min_samples=1,
                             min_failures=hc.burn_min_failures, hist_minutes=window_s // 60 + 1)
        transitions = []
        if history is not None:
            tracker.load(history.load_minutes(probe.name, int(now // 60) - RETENTION_MINUTES), now)
            transitions = [t for t in history.transitions(probe.name, 1000) if t.at >= now - window_s]
        w = tracker.window(now, window_s, revenue_per_minute=probe.impact.revenue_per_minute,
                           degraded_weight=probe.impact.degraded_weight)
        rate = tracker.burn_rate(tracker.sums(now, window_s))
        out.append({
            "name": probe.name, "target": probe.sla, "critical": probe.critical,
            "availability": w.availability,
            "budget_total_s": w.budget_total_s, "budget_remaining_s": w.budget_remaining_s,
            "budget_remaining": w.budget_remaining,
            "burn_rate": None if rate is None else round(rate, 4),
            "revenue_at_risk": w.revenue_at_risk,
            "downtime_s": w.downtime_s, "degraded_s": w.degraded_s, "observed_s": w.observed_s,
            "samples": w.samples, "latency_ms": tracker.latency(now, window_s),
            "transitions": len(transitions),
            "status": transitions[-1].to_status.value if transitions else None,
        })
    return {"window": window, "generated_at": now, "probes": out}


def _dur(seconds: float | None) -> str:
    from pulsetrace.views.units import format_seconds

    return format_seconds(seconds)


def sla_table(report: dict[str, Any]) -> str:
    probes = report["probes"]
    if not probes:
        return "no probes configured (health.probes)\n"
    header = ("PROBE", "TARGET", "AVAILABILITY", "BUDGET", "BUDGET LEFT", "BURN", "DOWN", "P99", "REVENUE AT RISK")
    rows = []
    for p in probes:
        avail = "no data" if p["availability"] is None else f"{p['availability']:.3f}%"  # percent, like TARGET
        left = "-" if p["availability"] is None else (
            f"{_dur(p['budget_remaining_s'])} ({p['budget_remaining'] * 100:.0f}%)")
        burn = "-" if p["burn_rate"] is None else f"{p['burn_rate']:.2f}x"
        p99 = "-" if not p["latency_ms"] else f"{p['latency_ms']['p99']:.1f} ms"
        rows.append((p["name"], f"{p['target']:g}%", avail, _dur(p["budget_total_s"]), left, burn,
                     _dur(p["downtime_s"]), p99, f"{p['revenue_at_risk']:,.2f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = {1, 2, 3, 4, 5, 6, 7, 8}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells))

    out = [f"SLA over the last {report['window']} (time-weighted; DEGRADED counts as available unless "
           "health.degraded_is_available is false)", line(header), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    return "\n".join(out).rstrip() + "\n"
