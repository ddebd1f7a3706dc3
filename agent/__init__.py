"""pulsetrace: tracing with business context, tiered sampling and health with SLAs, on OpenTelemetry.

The public API, loaded on first use (importing ``pulsetrace`` does no work, starts nothing)::

    import pulsetrace
    pulsetrace.start()                      # or run under ``pulsetrace run -- CMD``
    from pulsetrace import business_operation, business_span, set_business_attributes, record_outcome
    pulsetrace.metric("Revenue", 499.0, unit="None", method="upi")   # business metrics
    pulsetrace.count("UserRegistrations", method="google")
    from pulsetrace.healthchecks import Probe, ProbeResult, Status   # custom probes
    pulsetrace.check()                      # one round of every probe, now: the details dict
    structlog.configure(processors=[..., pulsetrace.structlog_processor, ...])   # trace ids in structlog
    handler.setFormatter(pulsetrace.JsonFormatter())   # JSON log lines with trace ids, PII scrubbed

    @pulsetrace.lambda_handler              # AWS Lambda: per-invocation flush, cold start, X-Ray parent
    def handler(event, context): ...

Everything else in the package is internal and may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.instrumentation.business import (
        business_operation,
        business_span,
        record_outcome,
        set_business_attributes,
    )
    from pulsetrace.aws_lambda import lambda_handler
    from pulsetrace.instrumentation.logs import structlog_processor
    from pulsetrace.instrumentation.logs_json import JsonFormatter
    from pulsetrace.metrics.business import count, metric
    from pulsetrace.runtime import Agent

__all__ = ["JsonFormatter", "business_operation", "business_span", "check", "count", "lambda_handler", "metric",
           "record_outcome", "set_business_attributes", "shutdown", "start", "structlog_processor"]

_LAZY = {
    "business_operation": "pulsetrace.instrumentation.business",
    "business_span": "pulsetrace.instrumentation.business",
    "record_outcome": "pulsetrace.instrumentation.business",
    "set_business_attributes": "pulsetrace.instrumentation.business",
    "lambda_handler": "pulsetrace.aws_lambda",
    "metric": "pulsetrace.metrics.business",
    "count": "pulsetrace.metrics.business",
    "structlog_processor": "pulsetrace.instrumentation.logs",
    "JsonFormatter": "pulsetrace.instrumentation.logs_json",
}


def start(config_path: str | None = None) -> Agent:
    """Start the agent in this process (idempotent).

    Raises :class:`pulsetrace.config.problems.ConfigError` on a bad configuration.
    """
    from pulsetrace.runtime import start as _start

    return _start(config_path)


def shutdown(timeout: float = 5.0) -> None:
    """Flush and stop the agent, waiting at most ``timeout`` seconds."""
    from pulsetrace.runtime import shutdown as _shutdown

    _shutdown(timeout)


def check(config_path: str | None = None) -> dict[str, Any]:
    """Run every configured probe once, now, and return the details (``pulsetrace check --json``'s
    shape). For a scheduled health-check function, where no probe runs in the background."""
    from pulsetrace.runtime import check as _check

    return _check(config_path)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pulsetrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
