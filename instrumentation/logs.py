"""Trace ids on log records: ``logging`` (every record) and structlog (a processor to add).

With ``logging.correlation: true`` every record made by a ``logging.Logger`` carries
``trace_id`` and ``span_id`` (lowercase hex, W3C form), ``xray_trace_id``
(``1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx``, what the X-Ray console searches for) and
``service`` (the resource's ``service.name``), so ``%(trace_id)s`` works in any format
string. Outside a span the three ids are ``""``.

Why ``Logger.makeRecord`` is wrapped and not the record factory: ``makeRecord`` refuses an
``extra`` key already on the record with a ``KeyError``; an application that already logs
``extra={"trace_id": ...}`` or ``extra={"service": ...}`` would start failing. The fields
are set after the extras, and a field the application set itself is left alone.

Contrib's ``logging`` instrumentor (activated by the catalogue) sets ``otelTraceID``/``otelSpanID``
through the record factory; when it did, its ids are reused rather than read again, and
``OTEL_PYTHON_LOG_CORRELATION=true`` keeps giving upstream's format string: the two add
their own names to the same record and never overwrite each other's.

Must never raise into a logging call, never do I/O, and never run at import time: the
patch is made by :func:`install_correlation` and undone by its return value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from opentelemetry import trace

from pulsetrace.instrumentation.pii import PiiScrubber

__all__ = ["FIELDS", "correlation_ids", "install_correlation", "structlog_processor"]

#: The record attributes (and JSON / structlog keys) correlation adds.
FIELDS = ("trace_id", "span_id", "xray_trace_id", "service")

_EMPTY = ("", "", "")
Undo = Callable[[], None]


class _Ids:
    """The last span's formatted ids: consecutive records of one request format them once."""

    __slots__ = ("span_id", "strings", "trace_id")

    def __init__(self, trace_id: int, span_id: int, strings: tuple[str, str, str]) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.strings = strings


_last = _Ids(0, 0, _EMPTY)


def _format(trace_id: int, span_id: int) -> tuple[str, str, str]:
    global _last
    last = _last  # one read: another thread may replace it meanwhile, never mutate it
    if last.trace_id == trace_id and last.span_id == span_id:
        return last.strings
    hex_trace = format(trace_id, "032x")
    strings = (hex_trace, format(span_id, "016x"), f"1-{hex_trace[:8]}-{hex_trace[8:]}")
    _last = _Ids(trace_id, span_id, strings)
    return strings


def correlation_ids() -> tuple[str, str, str]:
    """``(trace_id, span_id, xray_trace_id)`` of the current span, or three ``""`` outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return _EMPTY
    return _format(ctx.trace_id, ctx.span_id)


def _ids_from_contrib(record_dict: dict[str, Any]) -> tuple[str, str, str] | None:
    """The ids contrib's record factory already put on the record, or ``None``."""
    trace_hex = record_dict.get("otelTraceID")
    span_hex = record_dict.get("otelSpanID")
    if not isinstance(trace_hex, str) or not isinstance(span_hex, str):
        return None
    if trace_hex == "0" or span_hex == "0":
        return _EMPTY
    try:
        return _format(int(trace_hex, 16), int(span_hex, 16))
    except ValueError:
        return None


_install_lock = threading.Lock()
_installed: list[Callable[..., logging.LogRecord]] = []


def install_correlation(service: str, scrubber: PiiScrubber | None = None) -> Undo:
    """Put the ids and ``service`` on every record from now on; the returned call undoes it.

    ``scrubber`` (the configuration's PII rules) is what :func:`structlog_processor` scrubs
    events with while this is installed. Idempotent: a second install while one is active
    changes the service name and scrubber only.
    """
    state: dict[str, Any] = {"service": service, "on": True, "scrubber": scrubber}

    with _install_lock:
        original = logging.Logger.makeRecord
        if _installed and original is _installed[-1]:
            prior = getattr(original, "_pulsetrace_state", None)
            if isinstance(prior, dict):
                prior["service"] = service
                prior["scrubber"] = scrubber
            return lambda: None

        def makeRecord(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
            record = original(self, *args, **kwargs)
            if not state["on"]:
                return record
            try:
                values = record.__dict__
                ids = _ids_from_contrib(values)
                if ids is None:
                    ids = correlation_ids()
                setdefault = values.setdefault
                setdefault("trace_id", ids[0])
                setdefault("span_id", ids[1])
                setdefault("xray_trace_id", ids[2])
                setdefault("service", state["service"])
            except Exception:  # a log call must never fail because of us
                pass
            return record

        makeRecord._pulsetrace_state = state  # type: ignore[attr-defined]
        logging.Logger.makeRecord = makeRecord  # type: ignore[method-assign]
        _installed.append(makeRecord)

    def undo() -> None:
        with _install_lock:
            state["on"] = False
            # Restored only when nobody wrapped it after us; otherwise ours stays as a pass-through.
            if logging.Logger.__dict__.get("makeRecord") is makeRecord:
                logging.Logger.makeRecord = original  # type: ignore[method-assign]
            if makeRecord in _installed:
                _installed.remove(makeRecord)

    return undo


def structlog_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: adds ``trace_id``, ``span_id``, ``xray_trace_id`` and ``service``, and scrubs.

    Put it before the renderer (after ``format_exc_info``, so tracebacks are scrubbed too):
    ``structlog.configure(processors=[..., pulsetrace.structlog_processor,
    structlog.processors.JSONRenderer()])``. Keys the event already has are kept. Every other
    value goes through the span scrubber (the running agent's ``tracing.pii`` rules, else the
    defaults): e-mails, cards, secrets in text, and keys that name secrets or personal data.
    """
    try:
        state = _state()
        scrubber = state.get("scrubber") if state is not None else None
        if not isinstance(scrubber, PiiScrubber):
            scrubber = _default_scrubber()
        values = {k: v for k, v in event_dict.items() if k not in FIELDS}
        scrubbed = scrubber.attributes(values)
        if scrubbed is not None:
            for key, value in scrubbed.items():
                if value is not values[key]:
                    event_dict[key] = list(value) if isinstance(value, tuple) and isinstance(values[key], list) \
                        else value
        ids = correlation_ids()
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
        event_dict.setdefault("xray_trace_id", ids[2])
        service = str(state["service"]) if state is not None else _provider_service()
        if service:
            event_dict.setdefault("service", service)
    except Exception:
        pass
    return event_dict


_defaults: list[PiiScrubber] = []


def _default_scrubber() -> PiiScrubber:
    if not _defaults:
        _defaults.append(PiiScrubber())
    return _defaults[0]


def _state() -> dict[str, Any] | None:
    """The active correlation's state (service name, scrubber), or ``None``."""
    if _installed:
        state = getattr(_installed[-1], "_pulsetrace_state", None)
        if isinstance(state, dict):
            return state
    return None


def _provider_service() -> str:
    """The global tracer provider's ``service.name`` (no correlation installed)."""
    resource = getattr(trace.get_tracer_provider(), "resource", None)
    name = getattr(resource, "attributes", {}).get("service.name") if resource is not None else None
    return name if isinstance(name, str) else ""
