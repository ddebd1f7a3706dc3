"""pulsetrace agent: configuration, bootstrap, CLI, sampling, pipeline, exporters, health server.

Importing ``agent`` does nothing; call :func:`start` (or run under ``pulsetrace run``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["start", "shutdown"]


def start(config_path: str | None = None) -> Any:
    """Start the agent in this process (idempotent). Raises ``pulsetrace.config.load.ConfigError`` on a bad config."""
    from pulsetrace.runtime import start as _start

    return _start(config_path)


def shutdown(timeout: float = 5.0) -> None:
    """Flush and stop the agent, waiting at most ``timeout`` seconds."""
    from pulsetrace.runtime import shutdown as _shutdown

    _shutdown(timeout)
