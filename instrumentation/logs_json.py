"""JSON log lines (``logging.format: json``): one object per record, PII scrubbed like spans.

:class:`JsonFormatter` writes ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message``, ``trace_id``, ``span_id``, ``xray_trace_id``, ``service``, then
``exception`` (the formatted traceback) and the record's ``extra`` fields when there are
any. Every string goes through the span scrubber
(:class:`pulsetrace.instrumentation.pii.PiiScrubber`: e-mails, cards, phones, credentials,
tokens, secret pairs), and an ``extra`` key that names a secret or personal data is
redacted whole, exactly as a span attribute of that name would be. The formatter can be
used on its own: ``handler.setFormatter(pulsetrace.JsonFormatter())``.

:func:`install_json` gives the root logger's handlers this formatter (adding a stderr
handler when there is none), and so every handler added to the root logger later
(``basicConfig``, ``dictConfig``, ``fileConfig`` all add theirs with ``addHandler``);
``logging.basicConfig`` still configures logging when the only root handler is ours. All of
it is undone by the returned call. Never raises from ``format``: a record that cannot be
rendered becomes a line saying so. Nothing happens at import time.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pulsetrace.instrumentation.logs import FIELDS, correlation_ids
from pulsetrace.instrumentation.pii import PiiScrubber

__all__ = ["JsonFormatter", "install_json"]

Undo = Callable[[], None]

#: Attributes every ``LogRecord`` has: not ``extra`` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", *FIELDS}
#: What contrib's logging instrumentor adds: the same ids under its names, not repeated in the line.
_CONTRIB = frozenset({"otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"})
_MAX_EXTRAS = 32


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, scrubbed of secrets and personal data."""

    def __init__(self, scrubber: PiiScrubber | None = None, service: str = "") -> None:
        super().__init__()
        self._scrubber = scrubber if scrubber is not None else PiiScrubber()
        self._service = service

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._render(record)
        except Exception as exc:  # never fail the application's log call
            return json.dumps({"level": "ERROR", "logger": "pulsetrace",
                               "message": f"log record not rendered: {type(exc).__name__}"})

    def _render(self, record: logging.LogRecord) -> str:
        text = self._scrubber.text
        values = record.__dict__
        trace_id = values.get("trace_id")
        if isinstance(trace_id, str):  # correlation is on (or the application set its own)
            ids = (trace_id, str(values.get("span_id") or ""), str(values.get("xray_trace_id") or ""))
        else:
            ids = correlation_ids()
        service = values.get("service")
        out: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": text(record.getMessage()),
            "trace_id": ids[0] or None,
            "span_id": ids[1] or None,
            "xray_trace_id": ids[2] or None,
            "service": str(service) if service else (self._service or None),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = text(record.exc_text)
        if record.stack_info:
            out["stack"] = text(self.formatStack(record.stack_info))
        extras = {k: _plain(v) for k, v in values.items() if k not in _STANDARD and k not in _CONTRIB
                  and not k.startswith("_")}
        if extras:
            if len(extras) > _MAX_EXTRAS:
                extras = dict(list(extras.items())[:_MAX_EXTRAS])
            scrubbed = self._scrubber.attributes(extras)
            for key, value in (scrubbed if scrubbed is not None else extras).items():
                out.setdefault(key, list(value) if isinstance(value, tuple) else value)
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


def _plain(value: object) -> object:
    """An ``extra`` value as JSON can carry it: scalars kept, lists of scalars kept, the rest as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value[:64]):
        return tuple(value[:64])
    try:
        return repr(value)[:4096]
    except Exception:
        return f"<{type(value).__name__}>"


_lock = threading.Lock()


def install_json(formatter: JsonFormatter) -> Undo:
    """Give the root logger's handlers ``formatter``, now and when added; the returned call undoes it."""
    root = logging.getLogger()
    replaced: list[tuple[logging.Handler, logging.Formatter | None]] = []
    fallback: list[logging.Handler] = []

    def adopt(handler: logging.Handler) -> None:
        if handler.formatter is not formatter:
            replaced.append((handler, handler.formatter))
            handler.setFormatter(formatter)

    with _lock:
        for handler in list(root.handlers):
            adopt(handler)
        if not root.handlers:
            stderr = logging.StreamHandler(sys.stderr)
            stderr.setFormatter(formatter)
            root.addHandler(stderr)
            fallback.append(stderr)
        original_add = root.addHandler
        original_basic = logging.basicConfig

        def add_handler(handler: logging.Handler) -> None:
            original_add(handler)
            try:
                adopt(handler)
            except Exception:
                pass

        def basic_config(**kwargs: Any) -> None:
            # basicConfig does nothing while the root logger has a handler: ours must not be that handler.
            if fallback and root.handlers == fallback:
                root.removeHandler(fallback[0])
            original_basic(**kwargs)
            for handler in list(root.handlers):
                adopt(handler)

        root.addHandler = add_handler  # type: ignore[method-assign,assignment]
        logging.basicConfig = basic_config

    def undo() -> None:
        with _lock:
            if root.__dict__.get("addHandler") is add_handler:
                del root.addHandler
            if logging.basicConfig is basic_config:
                logging.basicConfig = original_basic
            for handler in fallback:
                root.removeHandler(handler)
            for handler, previous in replaced:
                if handler.formatter is formatter:
                    handler.setFormatter(previous)
            replaced.clear()
            fallback.clear()

    return undo
