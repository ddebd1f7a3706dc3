"""Keep probe secrets out of the drivers' own log records.

httpx logs every request line at INFO (``HTTP Request: GET https://gw/status?token=...``), so a
probe URL carrying a token would reach any INFO log handler. While a health service runs, a
filter on the drivers' loggers passes every record through its redactor (known secret values
and credential patterns are masked; other text is untouched). Installed by
:class:`~healthchecks.service.HealthService` and removed when it stops. Never raises.
"""

from __future__ import annotations

import logging
import threading

from healthchecks.redact import Redactor

DRIVER_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "asyncpg", "redis")


class SecretLogFilter(logging.Filter):
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

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            with self._lock:
                redactors = list(self._redactors)
            scrubbed = message
            for r in redactors:
                scrubbed = r.scrub(scrubbed)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        except Exception:
            record.msg, record.args = "(log record withheld: it could not be redacted)", None
        return True


_filter = SecretLogFilter()
_installed = False
_lock = threading.Lock()


def install(redactor: Redactor) -> None:
    global _installed
    _filter.add(redactor)
    with _lock:
        if not _installed:
            for name in DRIVER_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
            _installed = True


def uninstall(redactor: Redactor) -> None:
    global _installed
    if _filter.remove(redactor):
        with _lock:
            if _installed:
                for name in DRIVER_LOGGERS:
                    logging.getLogger(name).removeFilter(_filter)
                _installed = False
