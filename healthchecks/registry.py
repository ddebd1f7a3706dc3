"""Probe types by name: one table, the way a third-party plug-in would register.

``PROBES`` maps a ``type`` from the configuration to ``"module:Class"``; the module is
imported only when a probe of that type is built, so an unused driver is never loaded.
``register(name, factory)`` adds a type at run time (a factory takes ``(ProbeConfig,
ProbeContext)``); ``type: custom`` probes load their own class from ``target``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Probe, ProbeContext

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

ProbeFactory = Callable[["ProbeConfig", ProbeContext], Probe]

PROBES: dict[str, str] = {
    "postgres": "pulsetrace.healthchecks.postgres_probe:PostgresProbe",
    "redis": "pulsetrace.healthchecks.redis_probe:RedisProbe",
    "http": "pulsetrace.healthchecks.http_probe:HttpProbe",
    "rfid": "pulsetrace.healthchecks.rfid:RfidProbe",
    "passive": "pulsetrace.healthchecks.passive:PassiveProbe",
    "custom": "pulsetrace.healthchecks.custom:CustomProbe",
}
PRESETS: dict[tuple[str, str], str] = {
    ("http", "razorpay"): "pulsetrace.healthchecks.razorpay:RazorpayProbe",
}
_registered: dict[str, ProbeFactory] = {}


def register(name: str, factory: ProbeFactory) -> None:
    """Add (or replace) a probe type."""
    _registered[name] = factory


def probe_types() -> tuple[str, ...]:
    """Every probe type the configuration accepts: the built-ins and those registered since."""
    return tuple(dict.fromkeys((*PROBES, *_registered)))


def _resolve(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def factory_for(cfg: ProbeConfig) -> ProbeFactory:
    if cfg.type in _registered:
        return _registered[cfg.type]
    ref = PRESETS.get((cfg.type, cfg.preset)) if cfg.preset else None
    ref = ref or PROBES.get(cfg.type)
    if ref is None:
        raise KeyError(f"unknown probe type {cfg.type!r}")
    factory: ProbeFactory = _resolve(ref)
    return factory


def build_probe(cfg: ProbeConfig, ctx: ProbeContext) -> Probe:
    """Build one probe; raises on a probe that cannot be built (a missing driver, a bad target)."""
    return factory_for(cfg)(cfg, ctx)
