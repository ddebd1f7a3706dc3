"""Entry points for ``opentelemetry-instrument``: with pulsetrace installed, it uses our configuration.

``opentelemetry-instrument CMD`` loads the distro, then a configurator, then every
instrumentor entry point. Our distro selects our configurator (when several distros are
installed, pick ours with ``OTEL_PYTHON_DISTRO=pulsetrace``); the configurator starts the
pulsetrace agent from ``pulsetrace.yaml`` / ``$PULSETRACE_CONFIG``, exactly as
``pulsetrace run`` does in each process (probes and the health server too when
``PULSETRACE_HEALTH=1``), so spans go where pulsetrace's exporters send them.

Once the agent runs, the distro loads no instrumentor itself: the agent activates every
installed one lazily, when its library is first imported, honouring
``tracing.instrumentations`` and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Loading them here
would import every library eagerly, start contrib's server spans next to ours, and import an
instrumentor package while the library it instruments is being imported (botocore's
"partially initialized module" failure). Without a running agent, the upstream behaviour stands.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator


class PulseTraceDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "pulsetrace")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        from pulsetrace.runtime import current

        if current() is not None:
            return
        super().load_instrumentor(entry_point, **kwargs)


#: Set in the environment by the process that runs the probes and the health server, so that the
#: workers it starts (spawned ones run this configurator again) leave them to it: once per container.
HEALTH_OWNER = "PULSETRACE_HEALTH_OWNER"


class PulseTraceConfigurator(_BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        try:
            from pulsetrace.runtime import start

            agent = start(os.environ.get("PULSETRACE_CONFIG") or None, role="worker")
        except Exception as exc:  # the application must start even when the agent cannot
            sys.stderr.write(f"pulsetrace: agent not started: {exc}\n")
            return
        if os.environ.get("PULSETRACE_HEALTH") == "1" and not os.environ.get(HEALTH_OWNER):
            _start_health(agent.config)


def _start_health(cfg: Any) -> None:
    """Probes, ``/health`` and their metrics in this process, as ``pulsetrace run`` runs them in its own."""
    import atexit

    from pulsetrace.cli.run import _start_health as start_health
    from pulsetrace.cli.run import _stop_in_background

    if not cfg.health.enabled:
        return
    os.environ[HEALTH_OWNER] = str(os.getpid())
    try:
        health, publisher, alerts = start_health(cfg, child_alive=None, own_process=False)
    except Exception as exc:  # never stop the application from starting
        sys.stderr.write(f"pulsetrace: health server not started: {exc}\n")
        return
    from pulsetrace.announce import announce_supervisor

    announce_supervisor(cfg, health is not None, who="pulsetrace health")
    owner = os.getpid()

    def stop() -> None:
        if os.getpid() == owner:  # a forked worker inherits this exit hook, not the service
            _stop_in_background(health, publisher, alerts)

    atexit.register(stop)
