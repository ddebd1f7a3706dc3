"""The start-up line: one line to stderr per process role saying what pulsetrace does there.

The application's line (written when the agent starts) names the service, where traces go,
the instrumentations activated already and those waiting for their library's first import
(what :mod:`pulsetrace.instrumentation.auto` reports), and the logging changes. The
supervisor's line (``pulsetrace run``) says where ``/health`` listens and, when that is a
loopback address, that a load balancer cannot reach it.

One line per role, not per worker: the application's line marks the environment
(``PULSETRACE_ANNOUNCED=1``), so worker processes spawned from it (uvicorn ``--workers``,
multiprocessing) stay quiet; forked workers never start the agent again. ``PULSETRACE_QUIET=1``
silences both lines. Never raises; writes nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

__all__ = ["announce_app", "announce_supervisor", "app_line", "quiet", "supervisor_line"]

_MARK = "PULSETRACE_ANNOUNCED"


def quiet() -> bool:
    return os.environ.get("PULSETRACE_QUIET", "").strip().lower() in ("1", "true", "yes", "on")


def app_line(cfg: Config, active: list[str], waiting: list[str]) -> str:
    parts = [f"traces to {', '.join(dict.fromkeys(cfg.tracing.exporters)) or 'nowhere'}"]
    parts.append("instrumented: " + (", ".join(active) or "none yet"))
    if waiting:
        parts.append("on first import: " + ", ".join(waiting))
    logs = []
    if cfg.logging.correlation:
        logs.append("trace ids")
    if cfg.logging.format == "json":
        logs.append("JSON")
    if logs:
        parts.append("logs: " + " + ".join(logs))
    if cfg.tracing.response_header:
        parts.append("X-Amzn-Trace-Id on responses")
    return f"pulsetrace: {cfg.service.name} (pid {os.getpid()}): " + "; ".join(parts)


def announce_app(cfg: Config) -> None:
    """Write the application's line once for this process tree (unless quiet)."""
    if quiet() or os.environ.get(_MARK) == "1":
        return
    try:
        from pulsetrace.instrumentation.auto import pending_names

        active, waiting = pending_names()
        sys.stderr.write(app_line(cfg, active, waiting) + "\n")
        sys.stderr.flush()
        os.environ[_MARK] = "1"
    except Exception:  # a closed stderr, an odd environment: the application starts anyway
        pass


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def supervisor_line(cfg: Config, health_listening: bool, who: str = "pulsetrace run") -> str:
    if not health_listening:
        return f"{who}: {cfg.service.name}: no health server"
    listen = cfg.health.listen
    host = listen.rpartition(":")[0]
    line = (f"{who}: {cfg.service.name}: health on http://{listen}/health, "
            f"{len(cfg.health.probes)} probe(s)")
    if _loopback(host):
        line += f" (loopback only: behind an ALB set health.listen to 0.0.0.0:{listen.rpartition(':')[2]})"
    return line


def announce_supervisor(cfg: Config, health_listening: bool, who: str = "pulsetrace run") -> None:
    """The line of the process that serves ``/health`` (``pulsetrace run``, or the first process under
    ``opentelemetry-instrument`` with ``PULSETRACE_HEALTH=1``)."""
    if quiet():
        return
    try:
        sys.stderr.write(supervisor_line(cfg, health_listening, who) + "\n")
        sys.stderr.flush()
    except Exception:
        pass
