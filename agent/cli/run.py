"""``pulsetrace run -- CMD ...``: the per-container supervisor.

It validates the configuration, starts ``CMD`` with the bootstrap folder on
``PYTHONPATH`` (every Python process the command starts, workers included, starts
the agent), runs the health probes and the health server once for the whole
container, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the child,
and exits with the child's exit code (128 + N when a signal N ended it). Spans are
flushed by each process on its own way out, within ``tracing.shutdown_timeout``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pulsetrace.cli.main import CliError

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: Signals a terminal sends to its whole foreground process group (the child is in ours then).
_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def boot_dir() -> str:
    """The folder holding the bootstrap ``sitecustomize.py`` (the ``pulsetrace.boot`` package's own)."""
    import pulsetrace.boot

    return str(Path(pulsetrace.boot.__file__).resolve().parent)


def child_env(config_path: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the bootstrap folder on PYTHONPATH, the config passed on.

    Only the bootstrap folder is added: ``pulsetrace`` itself is found the way the interpreter
    found it here (site-packages, or an editable install's finder), and nothing of ours is put
    on the path where it could shadow a module of the application's.
    """
    env = dict(os.environ if base is None else base)
    parts = [boot_dir()]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PULSETRACE_BOOT"] = "1"
    env["PULSETRACE_SUPERVISOR_PID"] = str(os.getpid())
    if config_path:
        env["PULSETRACE_CONFIG"] = str(Path(config_path).resolve())
    return env


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a command auto-instrumented, with probes and /health",
                       description="Run CMD auto-instrumented. Example: pulsetrace run -- uvicorn shop.app:app")
    p.add_argument("--no-health", action="store_true", help="do not run probes and the health server here")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func=run)


def start_alerts(cfg: Any, add_listener: Any, metrics: Any) -> Any:
    """The container's alert service, listening to the health snapshots; ``None`` without channels."""
    if not cfg.alerts.channels:
        return None
    from pulsetrace.alerts.service import AlertService

    try:
        service = AlertService(cfg, metrics)
        service.start()
    except Exception as exc:  # alerts must never stop the app from starting
        sys.stderr.write(f"pulsetrace: alerts not started: {type(exc).__name__}: {exc}\n")
        return None
    add_listener(service.on_snapshot)
    return service


def _start_health(cfg: Any, child_alive: Any, *, own_process: bool = True) -> tuple[Any, Any, Any]:
    """The container's health service (and its CloudWatch publisher and alerts, when configured).

    ``own_process`` is ``False`` when this is the application's process (``PULSETRACE_HEALTH=1``).
    """
    from pulsetrace.healthchecks.handle import start_in_thread
    from pulsetrace.selfmetrics import SelfMetrics

    metrics = SelfMetrics()
    try:
        handle = start_in_thread(cfg, child_alive=child_alive, metrics=metrics, own_process=own_process)
    except OSError as exc:  # e.g. the health port is taken: the app still runs
        sys.stderr.write(f"pulsetrace: health server not started: {exc}\n")
        return None, None, None
    publisher = None
    if cfg.metrics.cloudwatch.mode != "off":
        from pulsetrace.metrics.health_metrics import wire_health_metrics

        publisher = wire_health_metrics(cfg, handle.add_snapshot_listener, metrics)
    from pulsetrace.metrics.live import live_exposition

    handle.add_exposition(live_exposition(cfg.store.path))  # the workers' request and business metrics
    return handle, publisher, start_alerts(cfg, handle.add_snapshot_listener, metrics)


def _stop_in_background(health: Any, publisher: Any, alerts: Any = None) -> None:
    """Stop the health service and publisher, waiting at most ~1 s: the child has already exited."""

    def stop() -> None:
        if health is not None:
            health.stop(0.5)
        if alerts is not None:
            alerts.stop(0.5)
        if publisher is not None:
            publisher.shutdown(0.4)

    stopper = threading.Thread(target=stop, name="pulsetrace-health-stop", daemon=True)
    stopper.start()
    stopper.join(1.0)


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise CliError("nothing to run: pulsetrace run -- CMD [ARGS...]", 2)
    from pulsetrace.config.problems import ConfigError
    from pulsetrace.validation import load_config

    cfg = load_config(args.config)
    problems = []
    if cfg.tracing.instrumentations.required:  # only then: the catalogue reads every distribution's metadata
        from pulsetrace.instrumentation.auto import required_problems

        problems = required_problems(cfg)
    if problems:
        raise ConfigError(problems)
    executable = shutil.which(cmd[0])
    if executable is None:
        raise CliError(f"command not found: {cmd[0]}", 127)
    config_path = args.config or os.environ.get("PULSETRACE_CONFIG") or (
        "pulsetrace.yaml" if Path("pulsetrace.yaml").exists() else None)
    env = child_env(config_path)
    # Handlers first: a SIGTERM that arrives while the child is being started is held and
    # forwarded as soon as it exists (never leaving an orphan behind).
    child: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []
    interactive = _stdin_is_terminal()

    def forward(signum: int, _frame: object) -> None:
        if interactive and signum in _TERMINAL_SIGNALS:
            return  # the terminal sent it to the child's process group (ours) already
        if not child:
            pending.append(signum)
            return
        try:
            child[0].send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    health = publisher = alerts = None
    try:
        # At a terminal the child stays in our process group, so it can read the terminal
        # (a debugger, a prompt) and Ctrl-C / Ctrl-Z reach it directly. Otherwise (containers,
        # CI) it gets a group of its own and every signal reaches it through us, exactly once.
        proc = subprocess.Popen(cmd, env=env, process_group=None if interactive else 0)
        child.append(proc)
        for signum in pending:
            proc.send_signal(signum)
        if cfg.health.enabled and not args.no_health:
            health, publisher, alerts = _start_health(cfg, child_alive=lambda: proc.poll() is None)
        from pulsetrace.announce import announce_supervisor

        announce_supervisor(cfg, health is not None)
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop_in_background(health, publisher, alerts)
    return 128 - code if code < 0 else code
