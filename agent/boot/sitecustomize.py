"""Started in every Python process under ``pulsetrace run`` (this folder is on PYTHONPATH).

Starts the agent in this process (workers spawned or forked by uvicorn/gunicorn
included: spawn re-runs this file, fork is handled by the pipeline's at-fork hook),
then hands over to any other ``sitecustomize`` further down the path, as
``opentelemetry-instrument`` does. A failure prints one line and leaves the
application running uninstrumented.
"""

from __future__ import annotations

import os
import signal
import sys


def _chain_other_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    mod = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        import importlib

        try:
            importlib.import_module("sitecustomize")
        except ImportError:
            pass
    finally:
        sys.path[:] = saved
        if mod is not None and "sitecustomize" not in sys.modules:
            sys.modules["sitecustomize"] = mod


def _flush_on_sigterm() -> None:
    """With no SIGTERM handler of the app's own, flush spans, then die of SIGTERM as before."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: object) -> None:
        # The flush runs on a thread and is waited for with a deadline: this handler
        # interrupts the main thread anywhere, possibly holding a lock the flush needs.
        from pulsetrace.background import start_worker
        from pulsetrace.runtime import shutdown

        timeout = float(os.environ.get("PULSETRACE_SHUTDOWN_TIMEOUT", "1.5"))
        try:
            flusher = start_worker("pulsetrace-sigterm-flush", shutdown, timeout)
            flusher.join(timeout + 0.25)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread of the main interpreter
        pass


def _boot() -> None:
    if os.environ.get("PULSETRACE_BOOT") != "1":
        return
    try:
        from pulsetrace.runtime import start

        start(os.environ.get("PULSETRACE_CONFIG") or None, role="worker")
        _flush_on_sigterm()
    except Exception as exc:  # never stop the application from starting
        sys.stderr.write(f"pulsetrace: agent not started in pid {os.getpid()}: {exc}\n")


_boot()
_chain_other_sitecustomize()
