"""Passive probe (business spans in the local store) and custom probes loaded from a dotted path."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status as OtelStatus
from opentelemetry.trace import StatusCode

from pulsetrace.store import LocalStore
from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.custom import CustomProbe, CustomProbeError
from pulsetrace.healthchecks.passive import PassiveProbe
from pulsetrace.healthchecks.redact import Redactor
from tests.healthchecks.support import probe_cfg, probe_context


class _ToStore(SpanExporter):
    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def export(self, spans: Any) -> SpanExportResult:
        self.store.write_spans(spans)
        return SpanExportResult.SUCCESS


def write_business_spans(store: LocalStore, operation: str, outcomes: list[str | None], *, ago: float = 5.0,
                         error_status: bool = False, kept_by: str | None = None) -> None:
    provider = TracerProvider(resource=Resource({"service.name": "shop"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(_ToStore(store)))
    tracer = provider.get_tracer("test")
    start = int((time.time() - ago) * 1e9)
    for outcome in outcomes:
        attrs: dict[str, Any] = {"business.operation": operation}
        if outcome is not None:
            attrs["business.outcome"] = outcome
        if kept_by is not None:
            attrs["sampling.kept_by"] = kept_by
        span = tracer.start_span(operation, attributes=attrs, start_time=start)
        if error_status:
            span.set_status(OtelStatus(StatusCode.ERROR))
        span.end(end_time=start + 1_000_000)
    provider.shutdown()


def passive(store: LocalStore | None, **fields: Any) -> PassiveProbe:
    cfg = probe_cfg(type="passive", operation="payment.create", window="60s", min_samples=10, **fields)
    return PassiveProbe(cfg, probe_context(store=store))


async def test_success_rate_above_the_threshold_is_up(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_business_spans(store, "payment.create", ["success"] * 99 + ["failure"])
    write_business_spans(store, "order.create", ["failure"] * 50)  # another operation does not count
    result = await passive(store, thresholds={"success_rate": 98.5}).check()
    assert result.status is Status.UP, result.detail
    assert result.measurements == {"samples": 100, "successes": 99, "success_rate": 99.0}


async def test_traces_kept_only_because_they_failed_or_were_slow_do_not_bias_the_rate(tmp_path: Path) -> None:
    # 99 % true success sampled at 30 %: 297 successes and 3 failures were sampled; keep-errors also
    # exported the 7 failures the sampler had passed over, and one slow success.
    store = LocalStore(tmp_path)
    write_business_spans(store, "payment.create", ["success"] * 297 + ["failure"] * 3)
    write_business_spans(store, "payment.create", ["failure"] * 7, kept_by="error")
    write_business_spans(store, "payment.create", ["success"], kept_by="slow")
    result = await passive(store, thresholds={"success_rate": 98.5}).check()
    assert result.status is Status.UP, result.detail
    assert result.measurements == {"samples": 300, "successes": 297, "success_rate": 99.0}
    assert "sampled" in result.detail


async def test_success_rate_below_the_thresholds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_business_spans(store, "payment.create", ["success"] * 97 + ["failure"] * 3)
    down = await passive(store, thresholds={"success_rate": 98.5}).check()
    assert down.status is Status.DOWN and "97.00%" in down.detail
    degraded = await passive(store, thresholds={"success_rate": 95, "degraded_rate": 98.5}).check()
    assert degraded.status is Status.DEGRADED


async def test_without_an_outcome_the_span_status_decides(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_business_spans(store, "payment.create", [None] * 10)
    write_business_spans(store, "payment.create", [None] * 10, error_status=True)
    result = await passive(store, thresholds={"success_rate": 40}).check()
    assert result.measurements["success_rate"] == 50.0


async def test_below_min_samples_or_outside_the_window_is_unknown(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_business_spans(store, "payment.create", ["failure"] * 5)
    write_business_spans(store, "payment.create", ["failure"] * 50, ago=600)  # older than the window
    result = await passive(store).check()
    assert result.status is Status.UNKNOWN and "min_samples" in result.detail
    assert (await passive(LocalStore(tmp_path / "none", create=False)).check()).status is Status.UNKNOWN


# -- custom probes -----------------------------------------------------------------------------------------


@pytest.fixture
def checks_module() -> Any:
    mod = types.ModuleType("pt_custom_checks")

    class QueueProbe:
        def __init__(self, limit: int = 10, api_token: str = "") -> None:
            self.limit = limit
            self.api_token = api_token

        async def check(self) -> ProbeResult:
            return ProbeResult(Status.UP if self.limit > 5 else Status.DEGRADED, 0.001, f"limit {self.limit}")

    async def async_fn(flag: bool = True) -> bool:
        return flag

    def blocking_fn() -> Status:
        time.sleep(0.05)  # runs on a worker thread: the loop stays free
        return Status.DEGRADED

    def leaky_fn(api_token: str = "") -> ProbeResult:
        raise RuntimeError(f"login to queue failed with token {api_token}")

    mod.QueueProbe = QueueProbe  # type: ignore[attr-defined]
    mod.async_fn = async_fn  # type: ignore[attr-defined]
    mod.blocking_fn = blocking_fn  # type: ignore[attr-defined]
    mod.leaky_fn = leaky_fn  # type: ignore[attr-defined]
    mod.not_callable = 3  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def custom(target: str, **options: Any) -> CustomProbe:
    cfg = probe_cfg(type="custom", target=target, options=options)
    return CustomProbe(cfg, probe_context(redactor=Redactor([str(v) for v in options.values()])))


async def test_custom_class_with_options(checks_module: Any) -> None:
    assert (await custom("pt_custom_checks:QueueProbe", limit=3).check()).status is Status.DEGRADED
    assert (await custom("pt_custom_checks.QueueProbe").check()).detail == "limit 10"


async def test_custom_functions_async_and_blocking(checks_module: Any) -> None:
    assert (await custom("pt_custom_checks:async_fn", flag=False).check()).status is Status.DOWN
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    result = await custom("pt_custom_checks:blocking_fn").check()
    t.cancel()
    assert result.status is Status.DEGRADED
    assert ticks >= 3  # the loop kept running while the blocking check slept


async def test_custom_exception_is_down_and_redacted(checks_module: Any) -> None:
    result = await custom("pt_custom_checks:leaky_fn", api_token="q-T0k3n-77").check()
    assert result.status is Status.DOWN and "q-T0k3n-77" not in result.detail and "login to queue" in result.detail


def test_bad_targets_raise_a_clear_error(checks_module: Any) -> None:
    for target, message in (("pt_no_such_module:X", "cannot import"), ("pt_custom_checks:Nope", "no attribute"),
                            ("pt_custom_checks:not_callable", "neither")):
        with pytest.raises(CustomProbeError, match=message):
            custom(target)
