"""Keep probe secrets out of the drivers' own log records.

httpx logs every request line at INFO (``HTTP Request: GET https://gw/status?token=...``), and
asyncpg/redis errors echo the DSN they were given, so a probe's secret would reach any log
handler. While a health service runs, every record of the drivers' loggers *and their child
loggers* (``asyncpg.pool``, ``redis.connection``, ``httpcore.http11`` ...) passes through its
redactors (known secret values and credential patterns are masked; other text is untouched):
the message, the formatted traceback of ``exc_info`` and ``stack_info``.

Logger filters are not inherited by child loggers and handlers come and go with the
application's logging configuration, so the redaction is attached where every record is
born: the logging record factory is wrapped while a health service runs and restored when
the last one stops (left as a pass-through if another library wrapped it meanwhile). A
traceback that carried a secret is kept as redacted text (``exc_text``) and its
``exc_info`` removed, so a handler that formats the exception itself cannot find the secret
either. Installed by :class:`~pulsetrace.healthchecks.service.HealthService`. Never raises.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from pulsetrace.healthchecks.redact import Redactor

#: Loggers whose records (and their children's) are redacted: the probes' drivers, and asyncio,
#: which logs the exceptions of tasks nobody awaited (a probe's driver error among them).
DRIVER_LOGGERS = ("httpx", "httpcore", "asyncpg", "redis", "asyncio")

_WITHHELD = "(log record withheld: it could not be redacted)"


class SecretLogFilter(logging.Filter):
    """Redacts a record in place (message, traceback, stack); usable as a logger or handler filter too."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._redactors: list[Redactor] = []

    def add(self, redactor: Redactor) -> None:
        with self._lock:
            self._redactors.append(redactor)

    def remove(self, redactor: Redactor) -> bool:
        """Forget ``redactor``; True when none is left."""
        with self._lock:
            if redactor in self._redactors:
                self._redactors.remove(redactor)
            return not self._redactors

    def _scrub(self, text: str) -> str:
        with self._lock:
            redactors = list(self._redactors)
        for r in redactors:
            text = r.scrub(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            scrubbed = self._scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        except Exception:
            record.msg, record.args = _WITHHELD, None
        try:
            if record.exc_info and record.exc_info[0] is not None:
                text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                scrubbed = self._scrub(text)
                if scrubbed != text:
                    record.exc_text, record.exc_info = scrubbed, None
            elif record.exc_text:
                record.exc_text = self._scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = self._scrub(record.stack_info)
        except Exception:
            record.exc_info, record.exc_text, record.stack_info = None, _WITHHELD, None
        return True


Factory = Callable[..., logging.LogRecord]


class _RedactingFactory:
    """Wraps the previous record factory; redacts the drivers' records as they are made."""

    def __init__(self, previous: Factory, redact: SecretLogFilter) -> None:
        self.previous = previous
        self.redact = redact
        self.active = True
        self._driver: dict[str, bool] = {}  # logger name → under DRIVER_LOGGERS (few names: unbounded is fine)

    def _is_driver(self, name: str) -> bool:
        found = self._driver.get(name)
        if found is None:
            found = any(name == p or name.startswith(p + ".") for p in DRIVER_LOGGERS)
            self._driver[name] = found
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        if self.active and self._is_driver(record.name):
            self.redact.filter(record)
        return record


_filter = SecretLogFilter()
#: Our factories still active, newest last. Usually one; another if a library replaced the record
#: factory with one that no longer calls ours (a restore to what it saw before us).
_factories: list[_RedactingFactory] = []
_lock = threading.Lock()


def install(redactor: Redactor) -> None:
    _filter.add(redactor)
    with _lock:
        current = logging.getLogRecordFactory()
        if not _factories or current is not _factories[-1]:
            # None of ours, or someone else's on top: put ours on top. If theirs still calls an
            # older one of ours, a record is redacted twice, which changes nothing.
            factory = _RedactingFactory(current, _filter)
            _factories.append(factory)
            logging.setLogRecordFactory(factory)


def uninstall(redactor: Redactor) -> None:
    if _filter.remove(redactor):
        with _lock:
            for factory in reversed(_factories):
                factory.active = False
                if logging.getLogRecordFactory() is factory:
                    logging.setLogRecordFactory(factory.previous)
                # else another library wrapped ours meanwhile: pulling it out would drop theirs; ours
                # stays in their chain as a pass-through.
            _factories.clear()
