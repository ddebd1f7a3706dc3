"""The ``otlp`` exporter: OTLP over http/protobuf or gRPC, through the upstream exporters.

Runs on the pipeline's export thread; the upstream exporter's own retry loop is
bounded by ``tracing.otlp.timeout``, so a dead collector costs dropped (counted)
spans, never a stalled application or a slow exit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from agent.exporters.base import ExporterContext, ExportOutcome

_log = logging.getLogger("pulsetrace.exporters.otlp")


def _traces_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class OtlpExporter:
    name = "otlp"

    def __init__(self, ctx: ExporterContext) -> None:
        self.cfg = ctx.config.tracing.otlp
        self._inner: Any = self._build()

    def _build(self) -> Any:
        cfg = self.cfg
        if cfg.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            endpoint = cfg.endpoint.split("://", 1)[-1]
            return GrpcExporter(endpoint=endpoint, insecure=cfg.endpoint.startswith("http://"),
                                headers=tuple(cfg.headers.items()) or None, timeout=cfg.timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=_traces_url(cfg.endpoint), headers=dict(cfg.headers) or None,
                            timeout=cfg.timeout)

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            result = self._inner.export(list(spans))
        except Exception as exc:
            _log.debug("otlp export failed: %s", exc)
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS if result == SpanExportResult.SUCCESS else ExportOutcome.FAILURE

    def after_fork(self) -> None:
        self._inner = self._build()

    def shutdown(self, timeout: float) -> None:
        try:
            self._inner.shutdown()
        except Exception:
            _log.debug("otlp shutdown failed", exc_info=True)
