"""``pulsetrace ui [--listen 127.0.0.1:8082] [--token T] [--store DIR]``: the local web console.

Serves :mod:`pulsetrace.ui.app` with uvicorn until SIGTERM/SIGINT (exit 0). Binds loopback
by default; any other address needs a token (``--token`` or ``health.token``), and the
command refuses to start without one (exit 2) rather than publish the traces. The socket
is bound before the line announcing the address is printed, so ``--listen 127.0.0.1:0``
(any free port) prints the real one.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pulsetrace.cli.main import CliError

DEFAULT_LISTEN = "127.0.0.1:8082"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from pulsetrace.cli.config import command_options

    p = subparsers.add_parser(
        "ui", parents=[command_options()], help="the local web console: service map, traces, a trace, health",
        description="A read-only web console over the local store: the service map, traces with X-Ray filter "
                    "expressions, one trace as a waterfall, and the health and SLA history.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--token", default=None, metavar="T",
                   help="require this token (default for a non-loopback --listen: health.token)")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="the local store directory (default: store.path / $PULSETRACE_STORE)")
    p.set_defaults(func=ui_command)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"ui: cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def ui_command(args: argparse.Namespace) -> int:
    from pulsetrace.http import split_listen
    from pulsetrace.validation import load_config

    cfg = load_config(getattr(args, "config", None))
    try:
        host, port = split_listen(args.listen)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise CliError(f"ui: --listen: expected HOST:PORT (got {args.listen!r})", 2) from None
    loopback = is_loopback(host)
    token = args.token or (None if loopback else (cfg.health.token or None))
    if not loopback and not token:
        raise CliError(f"ui: {host} is not a loopback address: a token is required (--token T or health.token), "
                       "or listen on 127.0.0.1", 2)
    try:
        import uvicorn

        from pulsetrace.ui.app import UiSettings, create_app
    except ImportError as exc:
        raise CliError(f"ui: the console needs the ui extra (pip install 'pulsetrace[ui]'): {exc}", 1) from None
    store = Path(args.store) if args.store else Path(cfg.store.path)
    region = cfg.tracing.xray.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    app = create_app(UiSettings(store=store, config=cfg, token=token, loopback=loopback, region=region))
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"pulsetrace: ui on http://{shown}:{bound}/ (store {store.resolve()})"
                     + (" · open it with ?token=<your token> once" if token else "") + "\n")
    sys.stderr.flush()
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                    server_header=False, date_header=False, timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising SIGTERM/SIGINT after the graceful stop (uvicorn >= 0.29
        does, which would make the exit status -15 instead of the documented 0)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _Server(config: Any) -> Any:  # noqa: N802 - reads as the class it builds
    return _server_class()(config)
