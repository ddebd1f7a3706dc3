"""Trace ids on log records and JSON log lines, in process, with real ``logging``, structlog and spans.

What a user relies on: ``%(trace_id)s`` works in any format string inside a request; an
application that already passes ``extra={"trace_id": ...}`` keeps working; the JSON line
carries the span's ids and never a secret or personal data (the span scrubber's own
evasion table and property-based e-mails/cards); ``basicConfig``/``dictConfig`` still
configure logging with the JSON formatter on; every change is undone.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import string
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from pulsetrace.instrumentation.logs import FIELDS, install_correlation, structlog_processor
from pulsetrace.instrumentation.logs_json import JsonFormatter, install_json
from pulsetrace.instrumentation.pii import luhn_valid
from tests.instrumentation.test_pii_evasions import EVASIONS
from tests.instrumentation.test_pii_scrub import _local  # the span scrubber's own e-mail generator

TRACER = TracerProvider().get_tracer("test")


def ids_of(span: Any) -> tuple[str, str, str]:
    ctx = span.get_span_context()
    hex_trace = format(ctx.trace_id, "032x")
    return hex_trace, format(ctx.span_id, "016x"), f"1-{hex_trace[:8]}-{hex_trace[8:]}"


@pytest.fixture
def root_clean() -> Iterator[logging.Logger]:
    """The root logger as it was, afterwards (handlers, level), whatever the test did."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers[:] = []
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def correlation() -> Iterator[None]:
    undo = install_correlation("shop-api")
    yield
    undo()


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def capture(name: str = "app") -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    handler = Capture()
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, handler


def test_every_record_in_a_span_carries_its_ids_and_the_service(correlation: None) -> None:
    logger, got = capture()
    with TRACER.start_as_current_span("GET /orders") as span:
        logger.info("paid")
    logger.info("outside")
    inside, outside = got.records
    assert (inside.trace_id, inside.span_id, inside.xray_trace_id) == ids_of(span)  # type: ignore[attr-defined]
    assert inside.service == "shop-api"  # type: ignore[attr-defined]
    assert (outside.trace_id, outside.span_id, outside.xray_trace_id) == ("", "", "")  # type: ignore[attr-defined]
    line = logging.Formatter("%(trace_id)s %(xray_trace_id)s %(service)s %(message)s").format(inside)
    assert line == f"{ids_of(span)[0]} {ids_of(span)[2]} shop-api paid"


def test_an_application_passing_the_same_names_in_extra_keeps_working(correlation: None) -> None:
    logger, got = capture()
    with TRACER.start_as_current_span("op"):
        logger.info("mine", extra={"trace_id": "app-own", "service": "billing"})
    assert got.records[0].trace_id == "app-own"  # type: ignore[attr-defined]
    assert got.records[0].service == "billing"  # type: ignore[attr-defined]


def test_undo_restores_logging_and_a_second_install_is_one_patch() -> None:
    original = logging.Logger.makeRecord
    undo = install_correlation("a")
    patched = logging.Logger.makeRecord
    undo_again = install_correlation("b")
    assert logging.Logger.makeRecord is patched
    logger, got = capture()
    logger.info("x")
    assert got.records[0].service == "b"  # type: ignore[attr-defined]
    undo_again()
    undo()
    assert logging.Logger.makeRecord is original
    logger.info("y")
    assert not hasattr(got.records[1], "trace_id")


def test_contrib_logging_instrumentor_and_correlation_agree_without_repeating(correlation: None,
                                                                             root_clean: logging.Logger) -> None:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    instrumentor = LoggingInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider(), set_logging_format=False, inject_trace_context=True,
                            enable_log_auto_instrumentation=False, skip_dep_check=True)
    try:
        logger, got = capture()
        with TRACER.start_as_current_span("op") as span:
            logger.info("both")
        record = got.records[0]
        assert record.otelTraceID == ids_of(span)[0]  # type: ignore[attr-defined]
        assert (record.trace_id, record.span_id, record.xray_trace_id) == ids_of(span)  # type: ignore[attr-defined]
        line = json.loads(JsonFormatter().format(record))
        assert not [k for k in line if k.startswith("otel")], line
        assert line["trace_id"] == ids_of(span)[0]
    finally:
        instrumentor.uninstrument()


def json_line(message: str, *args: object, **extra: object) -> dict[str, Any]:
    logger, got = capture("pii")
    with TRACER.start_as_current_span("op"):
        logger.error(message, *args, extra=extra or None)
    return dict(json.loads(JsonFormatter(service="shop-api").format(got.records[-1])))


def test_a_json_line_has_the_documented_fields(correlation: None) -> None:
    logger, got = capture()
    with TRACER.start_as_current_span("op") as span:
        try:
            raise KeyError("order 8")
        except KeyError:
            logger.exception("failed %s", "order", extra={"order_id": 8, "tags": ["a", "b"], "obj": object()})
    line = json.loads(JsonFormatter().format(got.records[0]))
    assert list(line)[:8] == ["time", "level", "logger", "message", *FIELDS]
    assert (line["trace_id"], line["span_id"], line["xray_trace_id"]) == ids_of(span)
    assert line["service"] == "shop-api" and line["level"] == "ERROR" and line["logger"] == "app"
    assert line["message"] == "failed order" and "KeyError" in line["exception"]
    assert line["order_id"] == 8 and line["tags"] == ["a", "b"] and line["obj"].startswith("<object")
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_outside_a_span_the_ids_are_null() -> None:
    logger, got = capture()
    logger.warning("no request")
    line = json.loads(JsonFormatter(service="shop-api").format(got.records[0]))
    assert line["trace_id"] is None and line["xray_trace_id"] is None and line["service"] == "shop-api"


@pytest.mark.parametrize(("case", "text", "leak"), EVASIONS, ids=[e[0] for e in EVASIONS])
def test_no_evasion_survives_in_message_argument_extra_or_traceback(case: str, text: str, leak: str) -> None:
    dumped = json.dumps(json_line(text), ensure_ascii=False)
    assert leak not in dumped
    assert leak not in json.dumps(json_line("value %s", text), ensure_ascii=False)
    assert leak not in json.dumps(json_line("with extra", note=text), ensure_ascii=False)
    logger, got = capture("pii")
    try:
        raise ValueError(text)
    except ValueError:
        logger.exception("failed")
    assert leak not in JsonFormatter().format(got.records[-1])


def test_extra_keys_naming_secrets_or_personal_data_are_redacted_whole() -> None:
    line = json_line("login", password="open sesame", email="x", user_phone=12345, api_token="t0k")
    assert line["password"] == line["email"] == line["user_phone"] == line["api_token"] == "[REDACTED]"


@settings(max_examples=100, deadline=None)
@given(email=st.emails() | st.builds(lambda a, b: f"{a}@{b}.example.com", _local,
                                    st.text(string.ascii_lowercase, min_size=1, max_size=10)),
       prefix=st.text(alphabet=string.ascii_letters + " ,:(", max_size=10))
def test_no_email_survives_in_a_json_line(email: str, prefix: str) -> None:
    assert email not in json.dumps(json_line(f"{prefix} {email} signed up"), ensure_ascii=False)
    assert email not in json.dumps(json_line("signed up: %s", email), ensure_ascii=False)


@settings(max_examples=100, deadline=None)
@given(body=st.lists(st.integers(0, 9), min_size=12, max_size=18), sep=st.sampled_from(["", " ", "-"]))
def test_no_card_survives_in_a_json_line(body: list[int], sep: str) -> None:
    digits = "".join(map(str, body))
    card = digits + next(d for d in "0123456789" if luhn_valid(digits + d))
    shown = sep.join(card[i:i + 4] for i in range(0, len(card), 4))
    dumped = json.dumps(json_line("charged %s", shown))
    assert card not in dumped.replace(" ", "").replace("-", "")


def test_json_goes_to_a_stderr_handler_when_root_has_none_and_basicconfig_still_works(
        root_clean: logging.Logger, correlation: None, capsys: pytest.CaptureFixture[str]) -> None:
    formatter = JsonFormatter(service="shop-api")
    root_clean.handlers[:] = []  # pytest's own capture handlers are added around the test's call
    undo = install_json(formatter)
    try:
        assert len(root_clean.handlers) == 1 and root_clean.handlers[0].formatter is formatter
        stream = io.StringIO()
        logging.basicConfig(level=logging.INFO, stream=stream, format="%(message)s")  # the app's own set-up
        assert root_clean.level == logging.INFO
        with TRACER.start_as_current_span("op") as span:
            logging.getLogger("shop.views").info("order %s placed", 7)
        line = json.loads(stream.getvalue())
        assert line["message"] == "order 7 placed" and line["trace_id"] == ids_of(span)[0]
    finally:
        undo()
    assert root_clean.handlers and root_clean.handlers[0].formatter is not formatter  # basicConfig's, as it was
    assert "addHandler" not in vars(root_clean)


def test_dictconfig_handlers_on_the_root_get_the_json_formatter(root_clean: logging.Logger,
                                                               correlation: None) -> None:
    formatter = JsonFormatter()
    undo = install_json(formatter)
    try:
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s %(message)s"}},
            "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
            "root": {"level": "INFO", "handlers": ["out"]},
        })
        assert [h.formatter for h in root_clean.handlers] == [formatter]
    finally:
        undo()
    assert root_clean.handlers[0].formatter is not formatter
    assert root_clean.handlers[0].formatter._fmt == "%(levelname)s %(message)s"  # type: ignore[union-attr]


def test_structlog_users_get_the_same_fields(correlation: None) -> None:
    out = io.StringIO()
    structlog.configure(processors=[structlog_processor, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(out), cache_logger_on_first_use=False)
    try:
        with TRACER.start_as_current_span("op") as span:
            structlog.get_logger().info("paid by alice@example.com", amount=5, card="4111 1111 1111 1111",
                                        password="open sesame", tags=["bob@example.org", "ok"])
        line = json.loads(out.getvalue())
    finally:
        structlog.reset_defaults()
    assert (line["trace_id"], line["span_id"], line["xray_trace_id"]) == ids_of(span)
    assert line["service"] == "shop-api" and line["amount"] == 5
    # scrubbed by the span rules, like a JSON line from logging
    assert line["event"] == "paid by [EMAIL]" and line["password"] == "[REDACTED]"
    assert "4111" not in line["card"] and line["tags"] == ["[EMAIL]", "ok"]


@pytest.mark.parametrize(("case", "text", "leak"), EVASIONS[:8], ids=[e[0] for e in EVASIONS[:8]])
def test_structlog_events_are_scrubbed_without_an_agent(case: str, text: str, leak: str) -> None:
    event = structlog_processor(None, "info", {"event": text, "detail": text})
    assert leak not in json.dumps(event, ensure_ascii=False)
