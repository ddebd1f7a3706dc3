"""The span pipeline: sampled spans → bounded queue → export thread → scrub → exporters.

``on_end`` runs on the application's thread and only appends to a bounded deque
(a full queue drops the span and counts ``spans_dropped{reason=queue_full}``).
Everything else, scrubbing, encoding and network I/O, runs on background threads
(with instrumentation suppressed: see :mod:`pulsetrace.background`, so an export is never
traced itself): one thread drains the queue and scrubs, and each exporter has its own
thread and bounded backlog, so a destination that hangs (a TCP peer that never reads)
delays only itself. ``shutdown(timeout)`` and ``force_flush(timeout)`` never wait longer
than asked. Threads are re-created after ``fork()``.

Unsampled spans (recorded only for keep-errors) are handed to ``unsampled_hook``,
which may return spans to export after all (the local part of a failed trace).

``force_flush`` returning ``True`` means every span that ended before the call has
been through an exporter: the call takes a flush ticket and the drain thread
acknowledges it only after a pass that started after the ticket was taken has
offered everything to the channels; then the channels are waited for.

A destination that fails is backed off with jitter: after a failed batch the channel
does not try again before a delay that doubles with each failure (0.5 s up to 30 s);
meanwhile its batches wait in its bounded backlog (the oldest dropped and counted as
``backlog:<exporter>``), not encoded, not sent. The next try takes the oldest batch; when it
goes through, the backlog drains. So an outage costs the process next to no work, and
nothing on the request path. A flush (and shutdown) finds a backed-off channel's backlog
failed (counted as ``export_failed``) rather than waiting for the back-off or sending into
a destination known to be down.

``counter_sink`` (optional) is called by the pipeline thread at most every
``counter_interval`` seconds and once at shutdown, so that the agent's counters
(drops above all) reach the local store whichever exporters are configured.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from pulsetrace.background import start_worker
from pulsetrace.exporters.base import Exporter, ExportOutcome
from pulsetrace.forking import on_fork_in_child
from pulsetrace.selfmetrics import SelfMetrics

_log = logging.getLogger("pulsetrace.pipeline")

Scrubber = Callable[[ReadableSpan], ReadableSpan]
UnsampledHook = Callable[[ReadableSpan], Sequence[ReadableSpan] | None]
SpanHook = Callable[[ReadableSpan], None]
CounterSink = Callable[[], None]

#: The share of a shutdown's budget kept for the last ``counter_sink`` call (at most this many seconds).
_COUNTER_SINK_RESERVE_S = 0.2
#: Back-off of a failing exporter: the first delay, doubled per failure up to the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0


class _Channel:
    """One exporter with its own thread and a bounded backlog of batches."""

    def __init__(self, exporter: Exporter, metrics: SelfMetrics, max_batches: int) -> None:
        self.exporter = exporter
        self.metrics = metrics
        self.max_batches = max_batches
        self.cond = threading.Condition()
        self.batches: collections.deque[Sequence[ReadableSpan]] = collections.deque()
        self.busy = False
        self.stopping = False
        #: Consecutive failed batches, and the monotonic time before which no batch is tried.
        self.failures = 0
        self.retry_at = 0.0
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        return start_worker(f"pulsetrace-export-{self.exporter.name}", self._run)

    def offer(self, batch: Sequence[ReadableSpan]) -> None:
        with self.cond:
            if len(self.batches) >= self.max_batches:
                dropped = self.batches.popleft()  # drop the oldest: fresh data is worth more
                self.metrics.inc("spans_dropped", len(dropped), reason=f"backlog:{self.exporter.name}")
            self.batches.append(batch)
            self.cond.notify()

    def pending(self) -> int:
        with self.cond:
            return sum(len(b) for b in self.batches) + (1 if self.busy else 0)

    def backing_off(self) -> bool:
        """Whether the destination failed lately and its next try is not due yet."""
        return self.retry_at > time.monotonic()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (not self.batches or self.backing_off()):
                    # Woken by offer() and stop(); a backed-off channel also wakes when its delay is over.
                    self.cond.wait(max(0.0, self.retry_at - time.monotonic()) if self.batches else None)
                if self.stopping and (not self.batches or self.backing_off()):
                    left = sum(len(b) for b in self.batches)
                    self.batches.clear()
                    self.cond.notify_all()
                    if left:
                        self.metrics.inc("spans_dropped", left, reason="shutdown")
                    return
                batch = self.batches.popleft()
                self.busy = True
            started = time.perf_counter()
            try:
                outcome = self.exporter.export(batch)
            except Exception:  # an exporter must not raise; if one does, count and carry on
                _log.debug("exporter %s raised", self.exporter.name, exc_info=True)
                outcome = ExportOutcome.FAILURE
            elapsed = time.perf_counter() - started
            self.metrics.set_gauge(f"export_latency_s:{self.exporter.name}", elapsed)
            if outcome is ExportOutcome.SUCCESS:
                self.metrics.inc("spans_exported", len(batch), reason=self.exporter.name)
                self.failures = 0
                self.retry_at = 0.0
            else:
                self.metrics.inc("spans_dropped", len(batch), reason=f"export_failed:{self.exporter.name}")
                self.failures += 1
                delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(self.failures - 1, 16))
                # Jitter: a fleet that lost the same collector does not retry in step.
                self.retry_at = time.monotonic() + random.uniform(delay / 2, delay)
                self.metrics.inc("exporter_backoffs", reason=self.exporter.name)
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until the backlog has been through the exporter; ``False`` at the deadline.

        A backed-off channel's backlog is dropped and counted as failed (``export_failed``):
        the destination is known to be down, and a flush must not wait for the back-off to end.
        """
        with self.cond:
            while self.batches or self.busy:
                if not self.busy and self.backing_off():
                    failed = sum(len(b) for b in self.batches)
                    self.batches.clear()
                    self.metrics.inc("spans_dropped", failed, reason=f"export_failed:{self.exporter.name}")
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def stop(self, deadline: float) -> None:
        self.wait_idle(deadline)
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        left = max(0.0, deadline - time.monotonic())
        # An exporter's shutdown may block (a hung connection); give it what is left of
        # the deadline on a helper thread and abandon it after that.
        helper = start_worker(f"pulsetrace-shutdown-{self.exporter.name}", self._shutdown_exporter, min(left, 0.5))
        helper.join(left)

    def _shutdown_exporter(self, timeout: float) -> None:
        try:
            self.exporter.shutdown(timeout)
        except Exception:
            _log.debug("exporter %s failed to shut down", self.exporter.name, exc_info=True)


class SpanPipeline(SpanProcessor):
    """Bounded, non-blocking span processor feeding any number of exporters."""

    def __init__(
        self,
        exporters: Sequence[Exporter],
        metrics: SelfMetrics,
        *,
        queue_size: int = 4096,
        batch_size: int = 256,
        interval: float = 1.0,
        scrubber: Scrubber | None = None,
        unsampled_hook: UnsampledHook | None = None,
        span_hooks: Sequence[SpanHook] = (),
        max_backlog_batches: int = 64,
        counter_sink: CounterSink | None = None,
        counter_interval: float = 5.0,
    ) -> None:
        self.exporters = list(exporters)
        self.metrics = metrics
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval = interval
        self.scrubber = scrubber
        self.unsampled_hook = unsampled_hook
        self.span_hooks = list(span_hooks)
        self.max_backlog_batches = max_backlog_batches
        self.counter_sink = counter_sink
        self.counter_interval = counter_interval
        self._last_counters = time.monotonic()
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        #: Flush tickets: ``force_flush`` takes ``_flush_asked + 1``; the drain thread sets ``_flush_done``
        #: to the last ticket taken before a pass began, once that pass has offered everything.
        self._flush_cond = threading.Condition()
        self._flush_asked = 0
        self._flush_done = 0
        self._lock = threading.Lock()
        self._shutdown = False
        self._channels: list[_Channel] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        #: Set in a forked child: its threads start with its first span, not in the at-fork hook.
        self._threads_pending = False
        metrics.gauge_fn("export_queue_depth", lambda: float(len(self._queue)))
        self._start_threads()
        on_fork_in_child(self._after_fork)

    # -- threads -------------------------------------------------------------------------

    def _start_threads(self) -> None:
        self._channels = [_Channel(e, self.metrics, self.max_backlog_batches) for e in self.exporters]
        self._thread = start_worker("pulsetrace-pipeline", self._run)

    def _start_pending_threads(self) -> None:
        with self._lock:
            if not self._threads_pending:
                return
            self._threads_pending = False
            if self._shutdown:
                return
            # The exporters re-open their connections/stores here too, not in the at-fork hook (I/O).
            for exporter in self.exporters:
                try:
                    exporter.after_fork()
                except Exception:
                    _log.debug("exporter %s after_fork failed", exporter.name, exc_info=True)
            self._start_threads()

    def _after_fork(self) -> None:
        # Threads do not survive fork(); locks may be held by a thread that no longer exists.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_cond = threading.Condition()
        self._flush_asked = self._flush_done = 0
        self._last_counters = time.monotonic()
        self._queue.clear()
        # Between fork() and the child's first request nothing may start a thread (another at-fork
        # hook may still hold a lock Thread.start needs, as concurrent.futures' does): deferred.
        self._threads_pending = not self._shutdown

    # -- SpanProcessor -------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        for hook in self.span_hooks:
            try:
                hook(span)
            except Exception:  # a failing hook costs its own work, never the span
                self.metrics.inc("span_hook_errors")
        try:
            ctx = span.context
            if ctx is None or not ctx.trace_flags.sampled:
                hook_u = self.unsampled_hook
                if hook_u is None:
                    return
                kept = hook_u(span)
                if kept:
                    for s in kept:
                        self._enqueue(s)
                return
            self._enqueue(span)
        except Exception:  # telemetry never raises into the application
            self.metrics.inc("spans_dropped", reason="internal_error")

    def _enqueue(self, span: ReadableSpan) -> None:
        # No getpid() here: it is a system call per span (about 0.5 µs on this machine), and
        # the at-fork hook (run by os.fork and by servers' PyOS_AfterFork_Child) restarts us.
        if self._shutdown:
            self.metrics.inc("spans_dropped", reason="shutdown")
            return
        if self._threads_pending:
            self._start_pending_threads()
        q = self._queue
        if len(q) >= self.queue_size:
            self.metrics.inc("spans_dropped", reason="queue_full")
            return
        q.append(span)
        if len(q) >= self.batch_size:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._flush_cond:
                ticket = self._flush_asked  # every span ended before this ticket is in the queue now
            self._drain()
            with self._flush_cond:
                if ticket > self._flush_done:
                    self._flush_done = ticket
                    self._flush_cond.notify_all()
            if self.counter_sink is not None and time.monotonic() - self._last_counters >= self.counter_interval:
                self._call_counter_sink()
            if self._shutdown and not self._queue:
                return

    def _call_counter_sink(self) -> None:
        self._last_counters = time.monotonic()
        sink = self.counter_sink
        if sink is None:
            return
        try:
            sink()
        except Exception:  # the counters are a report; failing to write them costs nothing else
            self.metrics.inc("counter_sink_errors")
            _log.debug("counter sink failed", exc_info=True)

    def _drain(self) -> None:
        q = self._queue
        while q:
            batch: list[ReadableSpan] = []
            while q and len(batch) < self.batch_size:
                span = q.popleft()
                if self.scrubber is not None:
                    try:
                        span = self.scrubber(span)
                    except Exception:
                        # A span we cannot scrub is never exported: privacy over completeness.
                        self.metrics.inc("spans_dropped", reason="scrub_failed")
                        continue
                batch.append(span)
            if batch:
                for channel in self._channels:
                    channel.offer(batch)

    def _flush_queue(self, deadline: float) -> bool:
        """Wait until the spans queued before this call are offered to the channels, then for the channels."""
        if self._threads_pending:
            self._start_pending_threads()
        with self._flush_cond:
            self._flush_asked += 1
            ticket = self._flush_asked
        self._wake.set()
        with self._flush_cond:
            while self._flush_done < ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flush_cond.wait(left)
        return all(c.wait_idle(deadline) for c in self._channels)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; ``False`` if that took longer than the timeout."""
        if os.getpid() != self._pid:
            self._after_fork()
        if self._shutdown:
            return True  # the threads are gone; shutdown already flushed what it could
        return self._flush_queue(time.monotonic() + timeout_millis / 1000.0)

    def shutdown(self, timeout: float = 1.5) -> None:
        """Flush what is queued and stop, never taking longer than ``timeout`` seconds."""
        if self._shutdown:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        # With a counter sink, a slice of the budget is kept for the last report of the counters
        # (the drops of a dead exporter are counted just before it).
        reserve = min(_COUNTER_SINK_RESERVE_S, max(0.0, timeout) * 0.2) if self.counter_sink is not None else 0.0
        work_deadline = deadline - reserve
        self._flush_queue(work_deadline)
        self._shutdown = True
        self._wake.set()
        pending = len(self._queue) + sum(c.pending() for c in self._channels)
        for channel in self._channels:
            channel.stop(work_deadline)
        if pending:
            self.metrics.inc("spans_dropped", pending, reason="shutdown_timeout")
        if self.counter_sink is not None:
            # On a helper thread: a store locked by another process must not hold the exit past the deadline.
            helper = start_worker("pulsetrace-counters", self._call_counter_sink)
            helper.join(max(0.0, deadline - time.monotonic()))
