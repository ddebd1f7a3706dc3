"""The one small interface every span exporter implements, and the registry by name.

An exporter receives batches of finished, already scrubbed spans on the pipeline's
export thread (never on the request path). It must not raise: it returns an
:class:`ExportOutcome` and the pipeline counts what was lost.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.selfmetrics import SelfMetrics


class ExportOutcome(enum.Enum):
    SUCCESS = "success"
    #: The destination is unreachable or refused; the batch is lost (counted as ``export_failed``).
    FAILURE = "failure"


@runtime_checkable
class Exporter(Protocol):
    """Sends spans somewhere. Called from one export thread at a time."""

    name: str

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome: ...

    def shutdown(self, timeout: float) -> None: ...


@dataclass(frozen=True)
class ExporterContext:
    config: Config
    metrics: SelfMetrics


ExporterFactory = Callable[[ExporterContext], Exporter]


def _local(ctx: ExporterContext) -> Exporter:
    from pulsetrace.exporters.local import LocalStoreExporter

    return LocalStoreExporter(ctx)


def _otlp(ctx: ExporterContext) -> Exporter:
    from pulsetrace.exporters.otlp import OtlpExporter

    return OtlpExporter(ctx)


def _console(ctx: ExporterContext) -> Exporter:
    from pulsetrace.exporters.console import ConsoleExporter

    return ConsoleExporter(ctx)


def _xray_udp(ctx: ExporterContext) -> Exporter:
    from pulsetrace.exporters.xray_udp import XRayUdpExporter

    return XRayUdpExporter(ctx)


def _xray_api(ctx: ExporterContext) -> Exporter:
    from pulsetrace.exporters.xray_api import XRayApiExporter

    exporter: Exporter = XRayApiExporter(ctx)
    return exporter


#: Built-ins, chosen by the names in ``tracing.exporters``; imported only when chosen.
EXPORTERS: dict[str, ExporterFactory] = {
    "local": _local,
    "otlp": _otlp,
    "console": _console,
    "xray-udp": _xray_udp,
    "xray-api": _xray_api,
}
