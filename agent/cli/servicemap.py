"""``pulsetrace servicemap``: the service graph as a table, JSON or a self-contained HTML page.

``--source local`` (default) reads the embedded store (``store.path`` /
``$PULSETRACE_STORE``) and translates the spans exactly as the X-Ray exporters do;
``--source xray`` reads X-Ray itself (``GetTraceSummaries`` + ``BatchGetTraces``,
region and endpoint from the configuration). ``--since`` bounds the window (default
15 minutes). Errors are one line on stderr; the store is only ever read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pulsetrace.cli.main import CliError
from pulsetrace.views.servicemap import ServiceGraph

SOURCES = ("local", "xray")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from pulsetrace.cli.config import command_options

    parser = subparsers.add_parser(
        "servicemap", parents=[command_options()], help="the service graph: nodes, edges, requests, errors",
        description="Show the service graph built from traces: who calls whom, how often, how it fails and how "
                    "long it takes. Reads the local store, or X-Ray with --source xray.")
    parser.add_argument("--since", default="15m", metavar="DURATION",
                        help="how far back to look, e.g. 15m, 1h, 7d (default 15m)")
    parser.add_argument("--source", choices=SOURCES, default="local",
                        help="where the traces come from (default: local)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the graph as JSON")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML page with the map")
    parser.set_defaults(func=servicemap_command)


def window_seconds(text: str) -> float:
    """A ``--since`` value in seconds; a bad one is a CLI error (exit 2)."""
    from pulsetrace.config.problems import parse_duration

    try:
        value = parse_duration(text)
    except ValueError:
        raise CliError(f"--since: not a duration (got {text!r}, expected e.g. 500ms, 15s, 2m, 1h, 7d)", 2) from None
    if value <= 0:
        raise CliError(f"--since: must be longer than zero (got {text!r})", 2)
    return value


def _local_graph(store_path: str, start: float, end: float) -> tuple[ServiceGraph, str]:
    import sqlite3

    from pulsetrace.store import LocalStore
    from pulsetrace.views.servicemap import graph_from_store

    store = LocalStore(store_path, create=False)
    where = f"local store {store_path}"
    if not store.exists():
        return ServiceGraph(start=start, end=end), where
    try:
        return graph_from_store(store, start, end), where
    except sqlite3.Error as exc:
        raise CliError(f"cannot read the local store at {store_path}: {exc}") from None
    finally:
        store.close()


def _xray_graph(cfg: Any, start: float, end: float) -> tuple[ServiceGraph, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    from pulsetrace.exporters.xray_api import make_xray_client
    from pulsetrace.views.servicemap import build_graph, fetch_xray_documents

    try:
        client = make_xray_client(cfg, read_timeout=15.0)
        documents = fetch_xray_documents(client, start, end)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise CliError(f"X-Ray refused the request: {err.get('Code', '?')}: {err.get('Message', '')}") from None
    except BotoCoreError as exc:
        raise CliError(f"X-Ray is not reachable: {exc}") from None
    region = cfg.tracing.xray.region or "the default region"
    return build_graph(documents, start=start, end=end), f"X-Ray ({region})"


def servicemap_command(args: argparse.Namespace) -> int:
    from pulsetrace.validation import load_config

    cfg = load_config(getattr(args, "config", None))
    window = window_seconds(args.since)
    end = time.time()
    start = end - window
    if args.source == "xray":
        graph, where = _xray_graph(cfg, start, end)
    else:
        graph, where = _local_graph(cfg.store.path, start, end)
    if args.json:
        sys.stdout.write(json.dumps(graph.to_json(), indent=2) + "\n")
        return 0
    if args.html:
        from pulsetrace.views.servicemap_html import render_html

        subtitle = f"{where} · last {args.since} · {graph.traces} traces, {len(graph.nodes)} nodes"
        try:
            Path(args.html).write_text(render_html(graph, subtitle=subtitle), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror or exc}") from None
        sys.stdout.write(f"service map written to {args.html} ({len(graph.nodes)} nodes, "
                         f"{len(graph.edges)} edges)\n")
        return 0
    sys.stdout.write(render_text(graph, f"{where} · last {args.since}"))
    return 0


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def render_text(graph: ServiceGraph, where: str) -> str:
    lines = [f"Service map · {where} · {graph.traces} traces", ""]
    if not graph.nodes:
        lines.append("No traces in this window.")
        return "\n".join(lines) + "\n"
    nodes = graph.sorted_nodes()
    width = max(12, *(len(n.name) for n in nodes))
    lines.append(f"{'NODE':<{width}}  {'TYPE':<8} {'REQ':>6} {'ERR':>5} {'FAULT':>5} {'THR':>5} "
                 f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for n in nodes:
        s = n.stats
        lat = s.latency()
        lines.append(f"{n.name:<{width}}  {n.type:<8} {s.requests:>6} {s.errors:>5} {s.faults:>5} "
                     f"{s.throttles:>5} {_ms(lat['p50']):>8} {_ms(lat['p90']):>8} {_ms(lat['p99']):>8}")
    lines.append("")
    edges = graph.sorted_edges()
    labels = [f"{graph.nodes[e.source].name} → {graph.nodes[e.target].name}" for e in edges]
    ewidth = max(12, *(len(label) for label in labels))
    window = graph.window_s()
    lines.append(f"{'EDGE':<{ewidth}}  {'REQ':>6} {'ERR':>5} {'FAULT':>5} {'THR':>5} {'p50 ms':>8} "
                 f"{'p99 ms':>8} {'per min':>8}")
    for label, e in zip(labels, edges):
        s = e.stats
        lat = s.latency()
        rate = f"{s.requests / (window / 60.0):.1f}" if window else "-"
        lines.append(f"{label:<{ewidth}}  {s.requests:>6} {s.errors:>5} {s.faults:>5} {s.throttles:>5} "
                     f"{_ms(lat['p50']):>8} {_ms(lat['p99']):>8} {rate:>8}")
    return "\n".join(lines) + "\n"
