"""The ``otlp`` exporter: OTLP over http/protobuf or gRPC, through the upstream exporters.

Runs on its pipeline channel thread (encoding included, never on the request path).
The upstream exporter's own retry loop is bounded by ``tracing.otlp.timeout``, so a
dead collector costs dropped (counted) spans and at most that long per batch on this
thread, never a stalled application or a slow exit. The upstream exporters log a
warning on every failed batch; while a collector is down that would flood the host
application's log, so their messages are rate-limited to one per minute per logger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from pulsetrace.config.schema import OtlpConfig
from pulsetrace.exporters.base import ExporterContext, ExportOutcome

_log = logging.getLogger("pulsetrace.exporters.otlp")

#: The upstream loggers that report every failed or retried batch.
_UPSTREAM_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_GRPC_PORT = 4317


class RateLimitFilter(logging.Filter):
    """Lets through one record per ``interval_s`` for the logger it is attached to."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last = -float("inf")
        self._lock = threading.Lock()
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last >= self.interval_s:
                self._last = now
                return True
            self.suppressed += 1
            return False


def _install_rate_limits() -> None:
    for name in _UPSTREAM_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a base endpoint (``/v1/traces`` appended unless already there)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``(host:port, insecure)`` for the gRPC exporter from an ``http(s)://host[:port][/path]`` endpoint.

    The configuration's default endpoint is the OTLP/HTTP port; with ``protocol: grpc``
    and that default left in place, the OTLP/gRPC port 4317 is meant.
    """
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or endpoint.rstrip("/") == DEFAULT_HTTP_ENDPOINT:
        port = DEFAULT_GRPC_PORT
    return f"{host}:{port}", parts.scheme != "https"


class OtlpExporter:
    name = "otlp"

    def __init__(self, ctx: ExporterContext) -> None:
        self.cfg: OtlpConfig = ctx.config.tracing.otlp
        _install_rate_limits()
        self._inner: Any = self._build()

    def _build(self) -> Any:
        cfg = self.cfg
        if cfg.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            target, insecure = grpc_target(cfg.endpoint)
            # gRPC metadata keys must be lower-case; an upper-case one fails every call.
            headers = tuple((k.lower(), v) for k, v in cfg.headers.items()) or None
            return GrpcExporter(endpoint=target, insecure=insecure, headers=headers, timeout=cfg.timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=traces_url(cfg.endpoint), headers=dict(cfg.headers) or None,
                            timeout=cfg.timeout)

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            result = self._inner.export(list(spans))
        except Exception as exc:
            _log.debug("otlp export failed: %s", type(exc).__name__)
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS if result == SpanExportResult.SUCCESS else ExportOutcome.FAILURE

    def after_fork(self) -> None:
        # The parent's HTTP session / gRPC channel must not be shared with the child.
        self._inner = self._build()

    def shutdown(self, timeout: float) -> None:
        try:
            self._inner.shutdown()
        except Exception:
            _log.debug("otlp shutdown failed", exc_info=True)
