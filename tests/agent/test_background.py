"""pulsetrace.background: every thread the agent starts runs with instrumentation suppressed.

What is checked is what an instrumentation checks: ``is_instrumentation_enabled()`` and
``is_http_instrumentation_enabled()`` from opentelemetry-instrumentation, read where the
agent's I/O happens (an exporter's ``export``, a metrics sink's ``send``, a PutMetricData
call, a probe's ``check`` on each kind of loop the health service runs on, the health
service's I/O threads). The end-to-end counterpart, with the real instrumentations and
real peers, is tests/integration/test_no_self_tracing.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled, is_instrumentation_enabled
from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.background import executor, is_suppressed, start_worker, suppressed
from pulsetrace.exporters.base import ExportOutcome
from pulsetrace.healthchecks.base import ProbeResult, Status
from pulsetrace.healthchecks.handle import start_in_thread
from pulsetrace.healthchecks.service import HealthService
from pulsetrace.metrics.cloudwatch_api import PutMetricDataSink
from pulsetrace.metrics.publisher import MetricDatum, MetricsPublisher, value_datum
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing.pipeline import SpanPipeline
from tests.agent.span_factory import provider
from tests.healthchecks.support import health_config

#: What a probe saw, by probe name: (thread name, instrumentation enabled, HTTP instrumentation enabled).
SEEN: dict[str, tuple[str, bool, bool]] = {}


def observed() -> tuple[str, bool, bool]:
    return threading.current_thread().name, is_instrumentation_enabled(), is_http_instrumentation_enabled()


class AsyncProbe:
    """A custom probe (``type: custom``) that notes the context its check runs in."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def check(self) -> ProbeResult:
        SEEN[self.name] = observed()
        return ProbeResult(Status.UP, 0.001, "ok")


def sync_probe(name: str) -> ProbeResult:
    """A blocking custom probe: the service runs it in its loop's default executor."""
    SEEN[name] = observed()
    return ProbeResult(Status.UP, 0.001, "ok")


def probes(*names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        target = f"{__name__}:sync_probe" if name.startswith("sync") else f"{__name__}:AsyncProbe"
        out.append({"name": name, "type": "custom", "target": target, "options": {"name": name},
                    "interval": "1s", "timeout": "1s"})
    return out


def wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- the primitives -------------------------------------------------------------------------------------------


def test_a_worker_runs_its_target_suppressed_under_its_name() -> None:
    seen: list[tuple[str, bool, bool, bool, int]] = []

    def target(n: int) -> None:
        seen.append((*observed(), threading.current_thread().daemon, n))

    start_worker("pulsetrace-test-worker", target, 7).join(10)
    assert seen == [("pulsetrace-test-worker", False, False, True, 7)]
    assert is_instrumentation_enabled()  # the starting thread is untouched


def test_suppressed_is_undone_on_exit_and_reaches_tasks_created_inside() -> None:
    async def main() -> tuple[bool, bool, bool]:
        async def inner() -> bool:
            await asyncio.sleep(0)
            return is_instrumentation_enabled()

        with suppressed():
            task = asyncio.ensure_future(inner())
            inside = is_suppressed()
        after = is_suppressed()
        return inside, after, await task

    assert asyncio.run(main()) == (True, False, False)


def test_executor_threads_are_suppressed_from_their_first_task() -> None:
    pool = executor(max_workers=2, thread_name_prefix="pulsetrace-test-pool")
    try:
        results = [pool.submit(observed).result(10) for _ in range(4)]
    finally:
        pool.shutdown(wait=True)
    assert {(enabled, http) for _, enabled, http in results} == {(False, False)}
    assert all(name.startswith("pulsetrace-test-pool") for name, _, _ in results)


# -- the span pipeline ------------------------------------------------------------------------------------------


class Observing:
    name = "observing"

    def __init__(self) -> None:
        self.export_seen: list[tuple[str, bool, bool]] = []
        self.shutdown_seen: list[tuple[str, bool, bool]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        self.export_seen.append(observed())
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        self.shutdown_seen.append(observed())


def test_exporters_and_the_counter_sink_run_suppressed() -> None:
    exporter = Observing()
    sink_seen: list[tuple[str, bool, bool]] = []
    pipeline = SpanPipeline([exporter], SelfMetrics(), interval=0.05, counter_sink=lambda: sink_seen.append(observed()),
                            counter_interval=0.05)
    prov, _ = provider()
    prov.add_span_processor(pipeline)
    tracer = prov.get_tracer("t")
    with tracer.start_as_current_span("app-work"):
        pass
    assert pipeline.force_flush(10_000)
    pipeline.shutdown(5.0)
    assert exporter.export_seen and all(s == ("pulsetrace-export-observing", False, False)
                                        for s in exporter.export_seen)
    assert exporter.shutdown_seen == [("pulsetrace-shutdown-observing", False, False)]
    assert sink_seen and all(not enabled and not http for _, enabled, http in sink_seen)


# -- the metrics flusher ------------------------------------------------------------------------------------------


class ObservingSink:
    name = "observing"

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, bool]] = []

    def send(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]:
        self.seen.append(observed())
        return []

    def close(self) -> None:
        return None

    def after_fork(self) -> None:
        return None


def test_the_flusher_thread_sends_suppressed() -> None:
    sink = ObservingSink()
    publisher = MetricsPublisher(sink, SelfMetrics(), interval=1.0,
                                 sources=[lambda now: [value_datum("Up", "Count", (), now, 1.0)]])
    publisher.start()
    try:
        assert wait_until(lambda: sink.seen)
    finally:
        publisher.shutdown(2.0)
    assert sink.seen[0] == ("pulsetrace-metrics", False, False)


class ObservingCloudWatch:
    """A CloudWatch client stand-in: where botocore's instrumentation would record the call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, bool]] = []

    def put_metric_data(self, **_: Any) -> dict[str, Any]:
        self.seen.append(observed())
        return {}


def test_put_metric_data_runs_suppressed_even_from_an_instrumented_caller() -> None:
    cfg = health_config([])
    client = ObservingCloudWatch()
    sink = PutMetricDataSink(cfg, SelfMetrics(), client=client)
    # Called from this (unsuppressed) thread, as an explicit flush at exit would be.
    assert list(sink.send([value_datum("Up", "Count", (("Service", "s"),), time.time(), 1.0)],
                          time.monotonic() + 10)) == []
    assert client.seen == [("pulsetrace-cloudwatch-call", False, False)]


# -- the health service ---------------------------------------------------------------------------------------------


def test_start_in_thread_runs_probes_and_io_suppressed() -> None:
    SEEN.clear()
    handle = start_in_thread(health_config(probes("async-thread", "sync-thread"), listen="127.0.0.1:0"))
    try:
        assert wait_until(lambda: {"async-thread", "sync-thread"} <= set(SEEN)), SEEN
        io = asyncio.run_coroutine_threadsafe(_io_observed(handle.service), handle.loop).result(10)
    finally:
        handle.stop(2.0)
    # The probes run on their own loop, apart from the HTTP server's (pulsetrace-health).
    assert SEEN["async-thread"] == ("pulsetrace-probes", False, False)
    name, enabled, http = SEEN["sync-thread"]
    assert name.startswith("pulsetrace-probes-io") and (enabled, http) == (False, False)
    assert io[0].startswith("pulsetrace-health-io") and io[1:] == (False, False)


async def _io_observed(service: HealthService) -> tuple[str, bool, bool]:
    return await asyncio.get_running_loop().run_in_executor(service._io, observed)


async def test_serve_and_check_on_a_foreign_loop_run_probes_suppressed() -> None:
    # `pulsetrace serve` and `pulsetrace check` run the service on a loop of the CLI's main thread.
    SEEN.clear()
    service = HealthService(health_config(probes("async-round")), persist=False)
    try:
        await service.run_round()
    finally:
        await service.stop(1.0)
    assert SEEN["async-round"][1:] == (False, False)
    assert is_instrumentation_enabled()  # the caller's context is its own again

    SEEN.clear()
    service = HealthService(health_config(probes("async-serve"), listen="127.0.0.1:0"))
    await service.start()
    try:
        for _ in range(500):
            if "async-serve" in SEEN:
                break
            await asyncio.sleep(0.02)
    finally:
        await service.stop(1.0)
    assert SEEN["async-serve"][1:] == (False, False)
    assert is_instrumentation_enabled()
