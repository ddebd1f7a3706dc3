"""Secrets in the drivers' own log records: child loggers and tracebacks are redacted too."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pulsetrace.healthchecks import logfilter
from pulsetrace.healthchecks.redact import Redactor

SECRET = "pg-Secret-pw-77"
DSN = f"postgresql://app:{SECRET}@127.0.0.1:5432/shop"


class Capture(logging.Handler):
    """Formats every record the way a plain log handler would (message, traceback, stack)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def _fail_with_dsn() -> None:
    raise ConnectionError(f"could not connect with {DSN} (password {SECRET} rejected)")


def test_child_loggers_of_a_driver_and_their_tracebacks_are_redacted(capture: Capture) -> None:
    redactor = Redactor([SECRET])
    factory_before = logging.getLogRecordFactory()
    logfilter.install(redactor)
    try:
        log = logging.getLogger("asyncpg.pool")
        log.warning("connecting to %s", DSN)
        try:
            _fail_with_dsn()
        except ConnectionError:
            log.exception("pool failed for %s", DSN)
        logging.getLogger("redis.connection").info("Connecting to redis://:%s@cache:6379/0", SECRET)
        logging.getLogger("shop.views").info("the application's own records are left alone: %s", "plain text")
    finally:
        logfilter.uninstall(redactor)
    text = "\n".join(capture.lines)
    assert SECRET not in text, text
    assert "connecting to postgresql://app:" in text  # the rest of the line stays readable
    assert "ConnectionError: could not connect with" in text  # the traceback is kept, redacted
    assert "_fail_with_dsn" in text
    for record in capture.records:  # a handler that formats exc_info itself cannot find it either
        assert record.exc_info is None or SECRET not in logging.Formatter().formatException(record.exc_info)
    assert any(r.name == "shop.views" and r.getMessage().endswith("plain text") for r in capture.records)
    assert logging.getLogRecordFactory() is factory_before  # restored when the last service stops


def test_after_the_service_stops_records_are_untouched(capture: Capture) -> None:
    redactor = Redactor([SECRET])
    logfilter.install(redactor)
    logfilter.uninstall(redactor)
    logging.getLogger("asyncpg.pool").warning("connecting to %s", DSN)
    assert capture.lines[-1].endswith(DSN)


def test_a_factory_installed_over_ours_keeps_working_after_we_stop(capture: Capture) -> None:
    redactor = Redactor([SECRET])
    logfilter.install(redactor)
    ours = logging.getLogRecordFactory()
    seen: list[str] = []

    def theirs(*args: object, **kwargs: object) -> logging.LogRecord:
        record = ours(*args, **kwargs)
        seen.append(record.name)
        return record

    logging.setLogRecordFactory(theirs)
    try:
        logfilter.uninstall(redactor)
        assert logging.getLogRecordFactory() is theirs  # never pulled from under another library
        logging.getLogger("asyncpg.pool").warning("connecting to %s", DSN)
        assert seen[-1] == "asyncpg.pool" and capture.lines[-1].endswith(DSN)  # ours is a pass-through now
    finally:
        logging.setLogRecordFactory(logging.LogRecord)


def test_a_factory_restored_from_under_ours_does_not_stop_the_next_service_redacting(capture: Capture) -> None:
    original = logging.getLogRecordFactory()
    first, second = Redactor([SECRET]), Redactor([SECRET])
    logfilter.install(first)
    # another library restores the factory it saw before ours (contrib's logging uninstrument does)
    logging.setLogRecordFactory(original)
    try:
        logfilter.install(second)
        logging.getLogger("asyncpg.pool").warning("connecting to %s", DSN)
        assert SECRET not in capture.lines[-1]
    finally:
        logfilter.uninstall(first)
        logfilter.uninstall(second)
    assert logging.getLogRecordFactory() is original
    logging.getLogger("asyncpg.pool").warning("connecting to %s", DSN)
    assert capture.lines[-1].endswith(DSN)  # nothing of ours left
