"""Span exporters, chosen by name from ``tracing.exporters``.

:data:`EXPORTERS` maps each name to ``"module:Class"``; the module is imported only when that
exporter is chosen (boto3 or gRPC are never loaded for a local-only agent). The interface is
in :mod:`pulsetrace.exporters.base`, which imports no implementation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulsetrace.exporters.base import Exporter, ExporterContext

__all__ = ["EXPORTERS", "build_exporter"]

#: Built-in exporters by name. A class takes an :class:`~pulsetrace.exporters.base.ExporterContext`.
EXPORTERS: dict[str, str] = {
    "local": "pulsetrace.exporters.local:LocalStoreExporter",
    "otlp": "pulsetrace.exporters.otlp:OtlpExporter",
    "console": "pulsetrace.exporters.console:ConsoleExporter",
    "xray-udp": "pulsetrace.exporters.xray_udp:XRayUdpExporter",
    "xray-api": "pulsetrace.exporters.xray_api:XRayApiExporter",
}


def build_exporter(name: str, ctx: ExporterContext) -> Exporter:
    """The exporter called ``name``; raises ``KeyError`` for a name that is not registered."""
    module_name, _, attr = EXPORTERS[name].partition(":")
    exporter: Exporter = getattr(importlib.import_module(module_name), attr)(ctx)
    return exporter
