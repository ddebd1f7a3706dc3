"""``pulsetrace alert test`` and ``pulsetrace alerts``.

- ``alert test [--channel NAME] [--severity S]``: a test alert and then its resolution, through
  the real delivery path (the same payloads, lanes, retries and rate limits), to every channel
  or one; prints each channel's HTTP result. Exit 0 when every message was delivered, else 1.
- ``alerts [--json]``: the open alerts the delivering process keeps in the local store, and the
  configured silences that are active or still to come.

Neither prints a channel's URL, routing key or header values: channels are shown by name and type.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from typing import Any

from pulsetrace.cli.main import CliError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    if "alert" not in sub.choices:
        alert = sub.add_parser("alert", parents=[common], help="alert channel tools (alert test)")
        alert_sub = alert.add_subparsers(dest="alert_command", metavar="SUBCOMMAND")
        test = alert_sub.add_parser("test", parents=[common], help="send a test alert and its resolution")
        test.add_argument("--channel", metavar="NAME", help="only this channel (default: every channel)")
        test.add_argument("--severity", choices=("critical", "warning", "business", "info"), default="critical")
        test.add_argument("--timeout", type=float, default=30.0, metavar="S",
                          help="give up on a channel after this many seconds (default 30)")
        test.set_defaults(func=alert_test)
        alert.set_defaults(func=lambda args: _usage(alert))
    if "alerts" not in sub.choices:
        p = sub.add_parser("alerts", parents=[common], help="open alerts and silences")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=alerts_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def alert_test(args: argparse.Namespace) -> int:
    from pulsetrace.alerts.channels import build_channel
    from pulsetrace.alerts.model import Alert, Delivery, DeliveryResult, Notice
    from pulsetrace.alerts.sources import runbook
    from pulsetrace.alerts.worker import DeliveryWorker
    from pulsetrace.selfmetrics import SelfMetrics
    from pulsetrace.validation import load_config

    cfg = load_config(getattr(args, "config", None))
    chosen = [c for c in cfg.alerts.channels if args.channel in (None, c.name)]
    if not cfg.alerts.channels:
        raise CliError("no alert channels configured (alerts.channels in the configuration)", 1)
    if not chosen:
        names = ", ".join(c.name for c in cfg.alerts.channels)
        raise CliError(f"no channel named {args.channel!r} (channels: {names})", 2)
    results: dict[tuple[str, str], tuple[DeliveryResult, str | None]] = {}
    done = threading.Condition()

    def collect(delivery: Delivery, result: DeliveryResult, dropped: str | None) -> None:
        with done:
            results[(delivery.channel, delivery.notice.status)] = (result, dropped)
            done.notify_all()

    worker = DeliveryWorker({c.name: build_channel(c) for c in chosen}, SelfMetrics(), queue_size=4,
                            deadline_s=max(1.0, args.timeout), on_done=collect)
    worker.start()
    now = time.time()
    key = f"test:{uuid.uuid4().hex[:12]}"
    alert = Alert(key=key, severity=args.severity, title=f"Test alert from {cfg.service.name}",
                  summary="This is a test of the pulsetrace alert path (`pulsetrace alert test`). "
                          "Its resolution follows.",
                  service=cfg.service.name, environment=cfg.service.environment, source="test", started=now,
                  value=1, threshold=0, runbook_url=runbook(cfg, key, "test"), command="pulsetrace alerts")
    wanted = [c.name for c in chosen]
    width = max(len(n) for n in wanted)
    try:
        for status in ("firing", "resolved"):
            worker.submit(Notice(alert, status, time.time(), test=True), wanted)
            end = time.monotonic() + args.timeout + 5
            with done:
                while not all((n, status) in results for n in wanted) and time.monotonic() < end:
                    done.wait(0.2)
    finally:
        worker.shutdown(0.5)
    ok = True
    for c in chosen:
        cells = []
        for status in ("firing", "resolved"):
            result, dropped = results.get((c.name, status), (None, "timeout"))
            good = result is not None and result.ok
            ok &= good
            cells.append(f"{status} {'ok' if good else 'FAILED'} ({result.detail if result else 'no answer'})")
        sys.stdout.write(f"{c.name:<{width}}  {c.type:<9}  {'  '.join(cells)}\n")
    return 0 if ok else 1


def alerts_report(cfg: Any, now: float) -> dict[str, Any]:
    from pulsetrace.alerts.book import read_open_alerts
    from pulsetrace.alerts.routing import silences_from
    from pulsetrace.store import LocalStore

    store = LocalStore(cfg.store.path, create=False)
    try:
        open_alerts = read_open_alerts(store)
    finally:
        store.close()
    silences = [dict(s.as_dict(), active=s.active(now)) for s in silences_from(cfg.alerts) if s.ends > now]
    return {"alerts": open_alerts, "silences": silences}


def alerts_command(args: argparse.Namespace) -> int:
    import sqlite3

    from pulsetrace.alerts.text import iso_time
    from pulsetrace.validation import load_config

    cfg = load_config(getattr(args, "config", None))
    try:
        report = alerts_report(cfg, time.time())
    except sqlite3.Error as exc:
        raise CliError(f"local store {cfg.store.path}: {exc}", 1) from None
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    lines = []
    if not report["alerts"]:
        lines.append("no open alerts")
    for a in report["alerts"]:
        channels = ", ".join(a["channels"]) or "-"
        lines.append(f"{a['severity'].upper():<8}  {a['state']:<9}  {a['title']}  (key {a['key']}, since "
                     f"{iso_time(a['started'])}, to {channels})")
    for s in report["silences"]:
        match = ", ".join(f"{k}={v}" for k, v in s["match"].items())
        lines.append(f"silence   {'active' if s['active'] else 'planned':<9}  {match}  "
                     f"{s['starts'] or 'now'} .. {s['ends'] or 'forever'}" + (f"  ({s['comment']})" if s["comment"] else ""))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
