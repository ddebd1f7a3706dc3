"""Entry points for ``opentelemetry-instrument``: with pulsetrace installed, it uses our configuration.

``opentelemetry-instrument CMD`` loads the distro, then a configurator, then every
instrumentor entry point. Our distro selects our configurator (when several are
installed, pick ours with ``OTEL_PYTHON_DISTRO=pulsetrace``); the configurator
starts the pulsetrace agent from ``pulsetrace.yaml`` / ``$PULSETRACE_CONFIG``, so
spans go where pulsetrace's exporters send them (the local store by default).
The upstream instrumentors of the libraries pulsetrace instruments itself are
skipped (pulsetrace activates them on first import, honouring
``tracing.instrumentations``); any other instrumentor installed loads as usual.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

#: Upstream instrumentor entry points pulsetrace activates itself (lazily, with its own settings):
#: loading them again here would import every library eagerly and ignore ``tracing.instrumentations``.
OWNED_INSTRUMENTORS = frozenset({"httpx", "httpx2", "asyncpg", "redis", "botocore", "asgi", "wsgi", "starlette",
                                 "fastapi"})


class PulseTraceDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "pulsetrace")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name in OWNED_INSTRUMENTORS:
            return
        super().load_instrumentor(entry_point, **kwargs)


class PulseTraceConfigurator(_BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        try:
            from pulsetrace.runtime import start

            start(os.environ.get("PULSETRACE_CONFIG") or None, role="worker")
        except Exception as exc:  # the application must start even when the agent cannot
            sys.stderr.write(f"pulsetrace: agent not started: {exc}\n")
