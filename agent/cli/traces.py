"""``pulsetrace traces``, ``pulsetrace traces show ID`` and ``pulsetrace status``: the local store, read.

Reads only (never creates the store); works while services write to it. A store
that does not exist yet is not an error for ``traces`` and ``status`` (nothing was
recorded); a trace that is not there is exit code 1 for ``traces show``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from pulsetrace.cli.config import command_options
from pulsetrace.cli.main import CliError
from pulsetrace.store import LocalStore, StorePathError, store_health
from pulsetrace.views.filter import Filter, FilterSyntaxError
from pulsetrace.views.filter import parse as parse_filter
from pulsetrace.views.trace_search import search_traces
from pulsetrace.views.traces import (
    parse_trace_id,
    render_table,
    render_tree,
    summarize,
    summary_json,
    trace_json,
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, got {value}")
    return value


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    opts = command_options()
    store_opt = argparse.ArgumentParser(add_help=False)
    store_opt.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                           help="the local store directory (default: store.path / $PULSETRACE_STORE)")

    traces = subparsers.add_parser("traces", parents=[opts, store_opt], help="recent traces from the local store",
                                   description="Recent traces from the local store, newest first.")
    traces.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="how many traces (default 20)")
    traces.add_argument("--filter", metavar="EXPR", default=None,
                        help='an X-Ray filter expression, e.g. \'service("payment-gateway") AND fault\' or '
                             '\'annotation.payment_method = "upi" AND responsetime > 1\' (see docs/filters.md)')
    traces.add_argument("--since", metavar="DURATION", default=None,
                        help="only traces with a span in this last stretch of time, e.g. 15m, 1h, 7d")
    traces.add_argument("--json", action="store_true", help="print JSON")
    traces.set_defaults(func=traces_command)
    actions = traces.add_subparsers(dest="traces_action", metavar="ACTION", parser_class=type(traces))
    show = actions.add_parser("show", parents=[opts, store_opt], help="one trace as a span tree",
                              description="One trace as a span tree. TRACE_ID: 32 hex digits, the X-Ray form "
                                          "1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy, or a unique prefix.")
    show.add_argument("trace_id", metavar="TRACE_ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=show_command)

    status = subparsers.add_parser("status", parents=[opts, store_opt],
                                   help="the local store and the agent's export counters",
                                   description="Where the local store is, how much it holds, and the spans "
                                               "exported and dropped (by reason), summed over every process.")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=status_command)


def _store_dir(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "store", None)
    if explicit:
        return Path(explicit)
    from pulsetrace.validation import load_config

    return Path(load_config(getattr(args, "config", None)).store.path)


def _open(args: argparse.Namespace) -> LocalStore:
    store = LocalStore(_store_dir(args), create=False)
    try:
        store.check_path()
    except StorePathError as exc:
        raise CliError(str(exc), 1) from None
    return store


def _store_error(store: LocalStore, exc: sqlite3.Error) -> CliError:
    return CliError(f"cannot read the local store {store.db_path}: {exc}", 1)


def _dropped_line(counters: dict[tuple[str, str], float]) -> str:
    dropped = {r or "unknown": v for (n, r), v in counters.items() if n == "spans_dropped" and v}
    if not dropped:
        return ""
    parts = ", ".join(f"{r} {int(v)}" for r, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
    return f"dropped spans: {int(sum(dropped.values()))} ({parts})"


def _filter(text: str | None) -> Filter:
    try:
        return parse_filter(text)
    except FilterSyntaxError as exc:
        raise CliError(f"filter: {exc}", 2) from None


def _since(text: str | None) -> float | None:
    from pulsetrace.cli.servicemap import window_seconds

    return None if text is None else time.time() - window_seconds(text)


def traces_command(args: argparse.Namespace) -> int:
    flt = _filter(getattr(args, "filter", None))  # a bad expression is exit 2 before anything is read
    since = _since(getattr(args, "since", None))
    store = _open(args)
    if not store.exists():
        if args.json:
            sys.stdout.write("[]\n")
        sys.stderr.write(f"pulsetrace: no local store at {store.dir} yet: nothing recorded\n")
        return 0
    try:
        if flt.empty and since is None:
            ids = store.recent_trace_ids(limit=args.limit)
            by_trace = store.traces_spans(ids)
            summaries = [summarize(by_trace[t]) for t in ids if by_trace.get(t)]
            page = None
        else:
            page = search_traces(store, flt, limit=args.limit, since=since)
            summaries = [hit.summary for hit in page.hits]
        counters = store.counters()
    except sqlite3.Error as exc:
        raise _store_error(store, exc) from None
    finally:
        store.close()
    if page is not None and page.truncated:
        sys.stderr.write(f"pulsetrace: scanned the newest {page.scanned} traces; older ones were not searched "
                         "(narrow the filter or use --since)\n")
    if args.json:
        sys.stdout.write(json.dumps([summary_json(s) for s in summaries], indent=2) + "\n")
        return 0
    if not summaries:
        sys.stdout.write(f"no traces match in {store.dir}\n" if page is not None else f"no traces in {store.dir} yet\n")
    else:
        sys.stdout.write("\n".join(render_table(summaries)) + "\n")
    dropped = _dropped_line(counters)
    if dropped:
        sys.stdout.write(dropped + "\n")
    return 0


def _resolve(store: LocalStore, text: str) -> str:
    parsed = parse_trace_id(text)
    if parsed is None:
        raise CliError(f"not a trace id: {text!r} (expected 32 hex digits or 1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy)", 1)
    trace_id, complete = parsed
    if complete:
        return trace_id
    if len(trace_id) < 6:
        raise CliError(f"trace id prefix {text!r} is too short (at least 6 hex digits)", 1)
    found = store.find_trace_ids(trace_id, limit=2)
    if not found:
        raise CliError(f"trace {text} not found in {store.dir}", 1)
    if len(found) > 1:
        raise CliError(f"trace id prefix {text} is ambiguous ({found[0]}, {found[1]}, ...)", 1)
    return found[0]


def show_command(args: argparse.Namespace) -> int:
    store = _open(args)
    if not store.exists():
        raise CliError(f"trace {args.trace_id} not found: no local store at {store.dir}", 1)
    try:
        trace_id = _resolve(store, args.trace_id)
        spans = store.trace_spans(trace_id)
    except sqlite3.Error as exc:
        raise _store_error(store, exc) from None
    finally:
        store.close()
    if not spans:
        raise CliError(f"trace {args.trace_id} not found in {store.dir}", 1)
    if args.json:
        sys.stdout.write(json.dumps(trace_json(trace_id, spans), indent=2) + "\n")
        return 0
    summary = summarize(spans)
    head = (f"trace {summary.trace_id} ({summary.xray_trace_id})  {summary.spans} spans  "
            f"{summary.duration_ms:.1f} ms  {summary.status}")
    extras = [f"tier {summary.tier}"] if summary.tier else []
    if summary.kept_by:
        extras.append(f"kept by {summary.kept_by}")
    if len(summary.services) > 1:
        extras.append("services " + " → ".join(summary.services))
    lines = [head + (f"  ({', '.join(extras)})" if extras else ""), ""] + render_tree(spans)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def status_command(args: argparse.Namespace) -> int:
    store = _open(args)
    info: dict[str, Any] = {"store": str(store.dir.resolve()), "exists": store.exists(), "spans": 0,
                            "size_bytes": 0, "file_bytes": 0, "processes": 0, "oldest": None, "newest": None,
                            "exported": {}, "dropped": {}, "alerts": {"sent": {}, "dropped": {}}}
    # The store's own health first: a corrupt file is reported (exit 0), not a reason to fail.
    info["store_health"] = store_health(store)
    if store.exists() and not info["store_health"]["detail"].startswith("corrupt:"):
        try:
            conn = store.connect()
            info["spans"] = store.span_count()
            info["processes"] = store.processes()
            info["size_bytes"] = store.used_bytes(conn)
            info["file_bytes"] = store.file_bytes()
            if info["spans"]:
                oldest, newest = conn.execute("SELECT min(start), max(start) FROM spans").fetchone()
                info["oldest"], info["newest"] = oldest, newest
            for (name, reason), value in sorted(store.counters().items()):
                if name in ("spans_exported", "spans_dropped"):
                    info["exported" if name == "spans_exported" else "dropped"][reason or "unknown"] = int(value)
                elif name in ("alerts_sent", "alerts_dropped"):  # by channel / by reason:channel
                    info["alerts"][name.split("_")[1]][reason or "unknown"] = int(value)
        except sqlite3.Error as exc:
            raise _store_error(store, exc) from None
        finally:
            store.close()
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    sys.stdout.write("\n".join(_status_lines(info)) + "\n")
    return 0


def _status_lines(info: dict[str, Any]) -> list[str]:
    import time

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

    def by_reason(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "0"

    health = info["store_health"]
    health_line = [f"health     {health['status']}" + (f": {health['detail']}" if health["detail"] else "")]
    if not info["exists"]:
        return [f"store      {info['store']} (not created yet: nothing recorded)"] + (
            health_line if health["status"] != "ok" else [])
    return [
        f"store      {info['store']}",
        *health_line,
        f"spans      {info['spans']} ({info['size_bytes'] / (1024 * 1024):.1f} MiB), "
        f"from {when(info['oldest'])} to {when(info['newest'])}",
        f"processes  {info['processes']} reported",
        f"exported   {by_reason(info['exported'])}",
        f"dropped    {by_reason(info['dropped'])}",
    ] + ([f"alerts     sent {by_reason(info['alerts']['sent'])}; dropped {by_reason(info['alerts']['dropped'])}"]
         if info["alerts"]["sent"] or info["alerts"]["dropped"] else [])
