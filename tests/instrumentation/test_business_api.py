"""The business spans API: decorator and context manager on sync/async code, methods, nesting, errors.

Spans are made by the real SDK (set as the global provider, as the agent does) and
collected in memory; the per-operation metrics come from the real recorder of a
started agent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from enum import Enum
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import StatusCode

import pulsetrace.instrumentation
from pulsetrace import runtime
from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import TierConfig
from pulsetrace.tracing.sampling import TieredSampler
from pulsetrace.instrumentation import business_operation, business_span, record_outcome, set_business_attributes
from pulsetrace.instrumentation.business import namespace_key
from tests.otel_globals import reset_otel_globals


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def by_name(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans if s.name == name]
        return span


def install(sampler: object = ALWAYS_ON) -> Collect:
    reset_otel_globals()
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)  # type: ignore[arg-type]
    collect = Collect()
    provider.add_span_processor(SimpleSpanProcessor(collect))
    trace.set_tracer_provider(provider)
    return collect


@pytest.fixture
def spans() -> Iterator[Collect]:
    yield install()
    reset_otel_globals()


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


@pytest.mark.parametrize(("operation", "key", "expected"), [
    ("rfid.verify", "school_id", "school.id"),
    ("payment.create", "amount", "payment.amount"),
    ("payment.create", "method", "payment.method"),
    ("payment.create", "payment_method", "payment.method"),
    ("order.create", "order_total_amount", "order.total_amount"),
    ("order.create", "customer.tier", "customer.tier"),
    ("order.create", "_private", "order._private"),
    (None, "flag", "business.flag"),
])
def test_keyword_names_follow_the_semantic_convention_rule(operation: str | None, key: str, expected: str) -> None:
    assert namespace_key(operation, key) == expected


def test_sync_function_gets_a_span_with_operation_tier_outcome_and_captured_arguments(spans: Collect) -> None:
    @business_operation("payment.create", tier="critical", attributes=["order_id", "amount", "method"])
    def create_payment(order_id: str, amount: Decimal, method: str = "upi", note: str = "") -> str:
        return f"pay-{order_id}"

    assert create_payment("o-7", Decimal("120.50"), note="x") == "pay-o-7"
    span = spans.by_name("payment.create")
    assert attrs(span) == {
        "business.operation": "payment.create", "business.tier": "critical", "business.outcome": "success",
        "order.id": "o-7", "payment.amount": 120.5, "payment.method": "upi",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert create_payment.__name__ == "create_payment"  # functools.wraps


async def test_async_function_span_covers_the_awaits_and_parents_the_work_inside(spans: Collect) -> None:
    @business_operation("rfid.verify", attributes={"reader_zone": "gate-1"})
    async def verify(card: str) -> bool:
        await asyncio.sleep(0.02)
        with trace.get_tracer("app").start_as_current_span("redis.get"):
            await asyncio.sleep(0)
        return True

    assert await verify("c-1") is True
    op = spans.by_name("rfid.verify")
    inner = spans.by_name("redis.get")
    assert inner.parent is not None and inner.parent.span_id == op.context.span_id
    assert attrs(op)["reader.zone"] == "gate-1"
    assert (op.end_time - op.start_time) >= 15_000_000  # type: ignore[operator]


def test_methods_staticmethods_and_classmethods(spans: Collect) -> None:
    class Payments:
        def __init__(self, gateway: str) -> None:
            self.gateway = gateway

        @business_operation("payment.capture", tier="critical", attributes=["payment_id"])
        def capture(self, payment_id: str) -> str:
            return f"{self.gateway}:{payment_id}"

        @business_operation("payment.refund", attributes=["payment_id"])
        @staticmethod
        def refund(payment_id: str) -> str:
            return payment_id

        @business_operation("payment.settle")
        @classmethod
        def settle(cls) -> str:
            return cls.__name__

    p = Payments("razorpay")
    assert p.capture("p-1") == "razorpay:p-1"
    assert Payments.refund("p-2") == "p-2" and p.refund("p-3") == "p-3"
    assert Payments.settle() == "Payments"
    assert attrs(spans.by_name("payment.capture"))["payment.id"] == "p-1"
    assert [attrs(s)["payment.id"] for s in spans.spans if s.name == "payment.refund"] == ["p-2", "p-3"]
    assert attrs(spans.by_name("payment.settle"))["business.tier"] == "business"


async def test_nested_business_spans_parent_each_other_and_name_attributes_by_their_own_operation(
        spans: Collect) -> None:
    async with business_span("order.create", tier="business", order_id="o-1") as outer:
        set_business_attributes(total=99.5)
        with business_span("payment.create", tier="critical", amount=99.5) as inner:
            set_business_attributes(method="card")
            assert inner is not outer and inner.is_recording()
    order, payment = spans.by_name("order.create"), spans.by_name("payment.create")
    assert payment.parent is not None and payment.parent.span_id == order.context.span_id
    assert attrs(order)["order.total"] == 99.5 and attrs(order)["order.id"] == "o-1"
    assert attrs(payment)["payment.method"] == "card" and "order.total" not in attrs(payment)
    assert "sampling.tier" not in attrs(payment)  # only the root carries the sampling tier


class GatewayDown(Exception):
    pass


def test_exception_is_recorded_and_re_raised_unchanged(spans: Collect) -> None:
    error = GatewayDown("gateway timeout")

    @business_operation("payment.create", tier="critical")
    def pay() -> None:
        raise error

    with pytest.raises(GatewayDown) as caught:
        pay()
    assert caught.value is error
    assert caught.traceback[-1].name == "pay"  # the traceback still ends where it was raised
    span = spans.by_name("payment.create")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["business.outcome"] == "failure"
    assert attrs(span)["business.failure_reason"] == "GatewayDown"
    (event,) = span.events
    assert event.name == "exception" and (event.attributes or {})["exception.message"] == "gateway timeout"


async def test_async_exception_and_cancellation(spans: Collect) -> None:
    @business_operation("order.create")
    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("sku")

    with pytest.raises(KeyError):
        await fail()
    assert spans.by_name("order.create").status.status_code is StatusCode.ERROR

    @business_operation("order.wait")
    async def wait() -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = spans.by_name("order.wait")
    assert attrs(cancelled)["business.outcome"] == "failure"
    assert attrs(cancelled)["business.failure_reason"] == "cancelled"
    assert cancelled.status.status_code is not StatusCode.ERROR


def test_record_outcome_marks_a_business_failure_without_an_error_status(spans: Collect) -> None:
    with business_span("rfid.verify", school_id=42):
        record_outcome(success=False, reason="card_revoked")
    span = spans.by_name("rfid.verify")
    assert attrs(span)["business.outcome"] == "failure"
    assert attrs(span)["business.failure_reason"] == "card_revoked"
    assert attrs(span)["school.id"] == 42
    assert span.status.status_code is StatusCode.UNSET


def test_generators_are_refused_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="generator"):
        @business_operation("report.stream")
        def stream() -> Iterator[int]:
            yield 1

    with pytest.raises(TypeError, match="generator"):
        @business_operation("report.stream")
        async def astream():  # type: ignore[no-untyped-def]
            yield 1


def test_bad_arguments_fail_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="unknown tier"):
        business_operation("x.y", tier="urgent")
    with pytest.raises(TypeError, match="no parameter 'amount'"):
        @business_operation("payment.create", attributes=["amount"])
        def pay(total: float) -> None:
            return None
    with pytest.raises(ValueError, match="unknown tier"):
        business_span("x.y", tier="urgent")


def test_values_are_coerced_to_attribute_types(spans: Collect) -> None:
    class Method(Enum):
        UPI = "upi"

    class Currency(str, Enum):
        INR = "INR"

    with business_span("payment.create", method=Method.UPI, amount=Decimal("10.25"), tags=["a", "b"],
                       customer=object, missing=None, currency=Currency.INR):
        pass
    a = attrs(spans.by_name("payment.create"))
    assert a["payment.method"] == "upi" and a["payment.amount"] == 10.25
    assert a["payment.currency"] == "INR" and type(a["payment.currency"]) is str
    assert a["payment.tags"] == ("a", "b") and isinstance(a["payment.customer"], str)
    assert "payment.missing" not in a


def test_index_marks_annotation_keys_including_ones_set_later(spans: Collect) -> None:
    with business_span("rfid.verify", index=["school_id", "reader.zone"], school_id=42, student_id="s-1"):
        set_business_attributes(reader_zone="north")
    a = attrs(spans.by_name("rfid.verify"))
    assert a["aws.xray.annotations"] == ("school.id", "reader.zone")


def test_in_an_unsampled_trace_no_span_is_made_and_the_api_is_a_no_op() -> None:
    collect = install(ParentBased(ALWAYS_OFF))
    try:
        with trace.get_tracer("app").start_as_current_span("GET /x") as parent:
            assert not parent.is_recording()
            with business_span("payment.create", amount=5) as span:
                assert span is parent  # no new span: the non-recording parent is handed back
                set_business_attributes(method="upi")
                record_outcome(False, "declined")

            @business_operation("order.create")
            def create() -> int:
                return 7

            assert create() == 7
        assert collect.spans == []
    finally:
        reset_otel_globals()


def test_a_business_operation_that_starts_a_trace_is_sampled_by_its_declared_tier() -> None:
    tiers = {t: TierConfig(0.0, 0.0) for t in ("critical", "business", "general", "health")}
    tiers["critical"] = TierConfig(1.0, 0.0)
    collect = install(TieredSampler(tiers, "general"))
    try:
        with business_span("payment.settle", tier="critical"):
            pass
        with business_span("report.build", tier="business"):
            pass
        (span,) = collect.spans
        assert span.name == "payment.settle"
        assert attrs(span)["sampling.tier"] == "critical" and attrs(span)["sampling.rule"] == "business.tier"
    finally:
        reset_otel_globals()


def test_every_operation_is_counted_in_the_agent_recorder_sampled_or_not(tmp_path: Path,
                                                                        clean_agent: None) -> None:
    cfg = config_from_mapping({
        "store": {"path": str(tmp_path / "store")},
        "tracing": {"exporters": ["local"], "sampling": {
            "tiers": {t: {"rate": 0.0, "reservoir": 0} for t in ("critical", "business", "general", "health")},
            "keep_errors": False, "slow_ms": 0}},
        "metrics": {"cloudwatch": {"mode": "emf", "emf_output": f"file:{tmp_path / 'emf.log'}"}},
    }, env={})
    agent = runtime.start(config=cfg, instrument=False)
    assert agent.recorder is not None

    @business_operation("payment.create", tier="critical")
    def pay(fail: str) -> None:
        if fail == "exception":
            raise GatewayDown()
        if fail == "outcome":
            record_outcome(False, "declined")

    for how in ("", "", "outcome", "exception"):
        try:
            pay(how)
        except GatewayDown:
            pass
    data = {d.name: d for d in agent.recorder.collect(time.time())
            if ("Operation", "payment.create") in d.dimensions}
    assert data["Requests"].value == 4
    assert data["Errors"].value == 1 and data["Faults"].value == 1


def test_package_exports_the_api_lazily() -> None:
    assert sorted(pulsetrace.instrumentation.__all__) == ["business_operation", "business_span", "record_outcome",
                                               "set_business_attributes"]
    for name in pulsetrace.instrumentation.__all__:
        assert callable(getattr(pulsetrace.instrumentation, name))
    with pytest.raises(AttributeError):
        getattr(pulsetrace.instrumentation, "nope")
    code = ("import sys, pulsetrace.instrumentation; "
            "assert 'pulsetrace.instrumentation.business' not in sys.modules; "
            "assert 'opentelemetry.sdk.trace' not in sys.modules; "
            "from pulsetrace.instrumentation import business_span; "
            "assert 'pulsetrace.instrumentation.business' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# -- telemetry failures while finishing the span ------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken too")


def test_an_exception_whose_str_raises_propagates_unchanged_and_the_span_ends_and_the_context_is_restored(
        spans: Collect) -> None:
    error = Unprintable()
    before = otel_context.get_current()

    @business_operation("payment.create", tier="critical")
    def pay() -> None:
        raise error

    with pytest.raises(Unprintable) as caught:
        pay()
    assert caught.value is error
    assert otel_context.get_current() == before
    assert trace.get_current_span() is trace.INVALID_SPAN
    span = spans.by_name("payment.create")  # exported: it was ended
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Unprintable: <unprintable>"
    assert attrs(span)["business.failure_reason"] == "Unprintable"
    (event,) = span.events
    assert event.name == "exception"
    assert str((event.attributes or {})["exception.type"]).endswith("Unprintable")


def test_a_long_exception_message_is_cut_in_the_status(spans: Collect) -> None:
    with pytest.raises(GatewayDown), business_span("payment.create"):
        raise GatewayDown("x" * 10_000)
    description = spans.by_name("payment.create").status.description or ""
    assert description.startswith("GatewayDown: xxx") and len(description) == 512


@pytest.mark.parametrize("broken", ["set_status", "record_exception", "set_attribute"])
def test_when_recording_the_outcome_fails_the_span_still_ends_and_the_context_is_restored(
        spans: Collect, monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    from opentelemetry.sdk.trace import Span as SdkSpan

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{broken} failed")

    monkeypatch.setattr(SdkSpan, broken, fail)
    before = otel_context.get_current()
    error = GatewayDown("gateway timeout")
    with pytest.raises(GatewayDown) as caught, business_span("payment.create"):
        raise error
    assert caught.value is error
    assert otel_context.get_current() == before
    assert spans.by_name("payment.create").end_time is not None
