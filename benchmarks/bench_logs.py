"""Log correlation and JSON lines against their peers, in the same process (issue 15, logs).

1. One ``logger.info("order %s placed", ref)`` inside a sampled span, through a
   ``StreamHandler`` into memory with a format naming the trace and span ids: pulsetrace's
   correlation (``%(trace_id)s %(span_id)s``) against contrib's ``LoggingInstrumentor``
   with trace-context injection (``%(otelTraceID)s %(otelSpanID)s``), the upstream way to
   the same line. Goal ≤ 1.0×.
2. The same call with correlation on against no correlation at all (the format without ids):
   what every log call pays. Reported.
3. One JSON line (``logging.format: json``: the fields, PII scrubbing of message and extras)
   against a minimal JSON formatter writing the same fields with ``json.dumps`` and no
   scrubbing: the price of scrubbing. Reported.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider

from benchmarks.harness import Comparison, interleaved, time_per_op
from pulsetrace.instrumentation.logs import install_correlation
from pulsetrace.instrumentation.logs_json import JsonFormatter

TRACER = TracerProvider().get_tracer("bench")


def _logger(fmt: logging.Formatter) -> logging.Logger:
    logger = logging.getLogger(f"bench.logs.{id(fmt)}")  # one logger per formatter: each keeps its handler
    logger.handlers[:] = [logging.StreamHandler(io.StringIO())]
    logger.handlers[0].setFormatter(fmt)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _in_span(logger: logging.Logger, n: int, extra: dict[str, object] | None = None) -> Callable[[], float]:
    def measure() -> float:
        stream = logger.handlers[0].stream  # type: ignore[attr-defined]
        stream.seek(0)
        stream.truncate()
        with TRACER.start_as_current_span("GET /orders"):
            return time_per_op(lambda: logger.info("order %s placed", "o-1042", extra=extra), n)

    return measure


def _with_correlation(fmt: str, n: int) -> Callable[[], float]:
    logger = _logger(logging.Formatter(fmt))
    measure = _in_span(logger, n)

    def run() -> float:
        undo = install_correlation("shop-api")
        try:
            return measure()
        finally:
            undo()

    return run


def _with_contrib(n: int) -> Callable[[], float]:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    logger = _logger(logging.Formatter("%(otelTraceID)s %(otelSpanID)s %(levelname)s %(message)s"))
    measure = _in_span(logger, n)

    def run() -> float:
        instrumentor = LoggingInstrumentor()
        instrumentor.instrument(tracer_provider=TracerProvider(), set_logging_format=False, inject_trace_context=True,
                                enable_log_auto_instrumentation=False, skip_dep_check=True)
        try:
            return measure()
        finally:
            instrumentor.uninstrument()

    return run


class _PlainJson(logging.Formatter):
    """The same fields as pulsetrace's JSON line, no scrubbing: the least a JSON formatter does."""

    def format(self, record: logging.LogRecord) -> str:
        v = record.__dict__
        return json.dumps({"time": record.created, "level": record.levelname, "logger": record.name,
                           "message": record.getMessage(), "trace_id": v.get("trace_id"), "span_id": v.get("span_id"),
                           "xray_trace_id": v.get("xray_trace_id"), "service": v.get("service"),
                           "order_ref": v.get("order_ref")}, separators=(",", ":"))


def run(quick: bool) -> list[Comparison]:
    rounds, n = (5, 2_000) if quick else (15, 10_000)
    fmt = "%(trace_id)s %(span_id)s %(levelname)s %(message)s"
    ours, peer = interleaved(rounds, _with_correlation(fmt, n), _with_contrib(n))
    vs_contrib = Comparison("log line with trace ids (in a span)", "pulsetrace correlation",
                            "contrib LoggingInstrumentor", "s", ours, peer, goal=("<=", 1.0))
    plain = _in_span(_logger(logging.Formatter("%(levelname)s %(message)s")), n)
    ours, peer = interleaved(rounds, _with_correlation(fmt, n), plain)
    vs_none = Comparison("log line: correlation's own cost", "correlation on", "no correlation", "s", ours, peer)
    extra = {"order_ref": "o-1042"}
    json_ours = _in_span(_logger(JsonFormatter(service="shop-api")), n, extra)
    json_peer = _in_span(_logger(_PlainJson()), n, extra)
    undo = install_correlation("shop-api")
    try:
        ours, peer = interleaved(rounds, json_ours, json_peer)
    finally:
        undo()
    as_json = Comparison("JSON log line (scrubbed)", "pulsetrace JsonFormatter", "json.dumps, no scrubbing", "s",
                         ours, peer)
    return [vs_contrib, vs_none, as_json]
