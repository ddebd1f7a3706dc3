"""Back-off with jitter: a destination that is down is not hammered, and comes back by itself.

The span pipeline's exporter channels and the CloudWatch flusher both stop trying a failing
destination for a growing, jittered delay, keep what they can in their bounded buffers
without encoding it, and resume (the whole backlog) once a try goes through. These tests
count calls, not time: what is pinned is that an outage costs a bounded number of attempts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExportOutcome
from pulsetrace.metrics.datum import MetricDatum, value_datum
from pulsetrace.metrics.publisher import PROBE_DATA, MetricsPublisher
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing import pipeline as pipeline_module
from pulsetrace.tracing.pipeline import SpanPipeline
from tests.agent.tracing.test_pipeline import emit, wait_until, wire


class Flaky:
    """An exporter whose destination is down until ``up`` is set; counts every attempt."""

    name = "flaky"

    def __init__(self) -> None:
        self.up = threading.Event()
        self.attempts = 0
        self.delivered: list[str] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        with self.lock:
            self.attempts += 1
            if not self.up.is_set():
                return ExportOutcome.FAILURE
            self.delivered.extend(s.name for s in spans)
            return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        pass

    def after_fork(self) -> None:
        pass


def test_a_failing_exporter_is_backed_off_and_its_backlog_waits_unencoded() -> None:
    metrics = SelfMetrics()
    flaky = Flaky()
    pipeline = SpanPipeline([flaky], metrics, batch_size=5, interval=0.01)  # type: ignore[list-item]
    prov = wire(pipeline)
    emit(prov, 5, "first")
    assert wait_until(lambda: flaky.attempts == 1)
    # Down: 40 more spans (8 batches) during the back-off cost no attempt at all.
    emit(prov, 40, "during")
    time.sleep(0.1)  # let the drain thread hand them to the channel (no attempt may follow)
    assert flaky.attempts == 1
    assert metrics.counter("exporter_backoffs", "flaky") == 1
    # Back up: after the (jittered, at most 0.5 s) delay one try goes through and the backlog drains.
    flaky.up.set()
    assert wait_until(lambda: len(flaky.delivered) == 40, timeout=10)
    assert [n for n in flaky.delivered if n.startswith("during")] == [f"during-{i}" for i in range(40)]
    assert metrics.counter("spans_dropped", "export_failed:flaky") == 5
    pipeline.shutdown(1.0)


def test_back_off_doubles_up_to_the_cap_with_jitter() -> None:
    flaky = Flaky()
    metrics = SelfMetrics()
    pipeline = SpanPipeline([flaky], metrics, batch_size=1, interval=0.01)  # type: ignore[list-item]
    channel = pipeline._channels[0]
    prov = wire(pipeline)
    delays = []
    for n in range(1, 9):
        emit(prov, 1, f"b{n}")
        channel.retry_at = 0.0  # skip the wait: what is pinned is the next delay chosen
        with channel.cond:
            channel.cond.notify_all()
        assert wait_until(lambda n=n: flaky.attempts == n)  # type: ignore[misc]
        assert wait_until(lambda: channel.retry_at > 0)
        delays.append(channel.retry_at - time.monotonic())
    expected = [min(pipeline_module.BACKOFF_CAP_S, pipeline_module.BACKOFF_FIRST_S * 2 ** i) for i in range(8)]
    for got, top in zip(delays, expected):
        assert top / 2 - 0.2 <= got <= top, (delays, expected)
    pipeline.shutdown(0.5)


def test_a_flush_does_not_wait_for_a_backed_off_exporter_and_counts_its_backlog() -> None:
    metrics = SelfMetrics()
    flaky = Flaky()
    pipeline = SpanPipeline([flaky], metrics, batch_size=5, interval=0.01)  # type: ignore[list-item]
    prov = wire(pipeline)
    emit(prov, 5)
    assert wait_until(lambda: flaky.attempts == 1)
    emit(prov, 10)
    started = time.monotonic()
    assert pipeline.force_flush(5000)
    assert time.monotonic() - started < 2.0  # not the back-off, not the timeout
    assert metrics.counter("spans_dropped", "export_failed:flaky") == 15
    assert flaky.attempts == 1
    pipeline.shutdown(0.5)


class DownSink:
    """A metrics sink that is down until ``up``; records the size of every send."""

    name = "down"

    def __init__(self) -> None:
        self.up = False
        self.sends: list[int] = []

    def send(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]:
        self.sends.append(len(datums))
        return [] if self.up else datums

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


def _data(n: int) -> list[MetricDatum]:
    now = time.time()
    return [value_datum(f"M{i}", "Count", (("Service", "s"),), now, 1.0) for i in range(n)]


def test_the_metrics_flusher_backs_off_and_probes_before_sending_the_whole_buffer() -> None:
    sink = DownSink()
    metrics = SelfMetrics()
    publisher = MetricsPublisher(sink, metrics, interval=1.0)
    publisher.offer(_data(500))
    assert not publisher.flush(1.0)
    assert sink.sends == [500]
    assert publisher.backoff() == 1.0
    # Within the back-off: collected, not sent (no re-encoding of the buffer every interval).
    publisher.offer(_data(10))
    assert not publisher.flush(1.0)
    assert sink.sends == [500]
    # The back-off over, still down: only a probe of PROBE_DATA goes out, and the delay doubles.
    publisher._retry_at = 0.0
    assert not publisher.flush(1.0)
    assert sink.sends == [500, PROBE_DATA]
    assert publisher.backoff() == 2.0
    assert publisher.pending() == 510  # nothing lost while the buffer has room
    # Back: the probe goes through, then everything else in the same flush.
    sink.up = True
    publisher._retry_at = 0.0
    assert publisher.flush(1.0)
    assert sink.sends == [500, PROBE_DATA, PROBE_DATA, 510 - PROBE_DATA]
    assert publisher.backoff() == 0.0 and publisher.pending() == 0


def test_an_explicit_flush_is_not_held_back_by_the_back_off() -> None:
    sink = DownSink()
    publisher = MetricsPublisher(sink, SelfMetrics(), interval=60.0)
    publisher.offer(_data(3))
    assert not publisher.flush(1.0)
    sink.up = True
    assert publisher.flush(1.0, force=True)
    assert sink.sends[-1] == 3
