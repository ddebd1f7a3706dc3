"""``pulsetrace demo [--duration 30s]``: the whole system on loopback, then a summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pulsetrace.cli.main import CliError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the demo shop, gateway and RFID readers, then summarise")
    p.add_argument("--duration", default="30s", help="how long to drive traffic (default 30s)")
    p.add_argument("--store", default=None, help="local store directory (default ./.pulsetrace)")
    p.add_argument("--db-outage", default=None, metavar="DURATION",
                   help="stop PostgreSQL this long, a third of the way in (a DOWN period to look at)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pulsetrace.cli.main import main
    from pulsetrace.config.problems import parse_duration
    from pulsetrace.demo.runner import run_demo

    try:
        duration = parse_duration(args.duration)
    except ValueError:
        raise CliError(f"--duration: not a duration: {args.duration!r} (expected e.g. 30s, 2m)", 2) from None
    if not 1 <= duration <= 3600:
        raise CliError("--duration: between 1s and 1h", 2)
    outage = 0.0
    if args.db_outage:
        try:
            outage = parse_duration(args.db_outage)
        except ValueError:
            raise CliError(f"--db-outage: not a duration: {args.db_outage!r} (expected e.g. 10s)", 2) from None
        if not 0 < outage < duration:
            raise CliError("--db-outage: longer than zero and shorter than --duration", 2)
    return run_demo(duration, main, Path(args.store) if args.store else None, db_outage=outage)
