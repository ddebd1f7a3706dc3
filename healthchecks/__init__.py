"""Health probes, scheduling, status aggregation, SLA and business impact.

``from pulsetrace.healthchecks import Probe, ProbeResult, Status`` is the API for custom probes.
The names resolve lazily: importing this package does no work and pulls in no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.healthchecks.base import Probe, ProbeResult, Status

__all__ = ["Probe", "ProbeResult", "Status"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pulsetrace.healthchecks import base

        return getattr(base, name)
    raise AttributeError(f"module 'pulsetrace.healthchecks' has no attribute {name!r}")
