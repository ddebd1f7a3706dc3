"""What the instrumentation needs from the running agent, handed in by the runtime.

The runtime (the composition root) calls :func:`install` when the agent starts and
:func:`clear` when it stops; the server middleware and the business-span API read
:data:`recorder` on every request. This module imports nothing of pulsetrace's, so the
instrumentation never reaches up into the runtime and can be tested without an agent:
install a recorder of your own (anything with :class:`RequestRecorder`'s ``record``).

Reading a module attribute is the whole cost on the request path; it never blocks or raises.
"""

from __future__ import annotations

from typing import Protocol


class RequestRecorder(Protocol):
    """Counts requests and business operations for the metrics (CloudWatch, ``/metrics``).

    Called on the request path of the application for every request, sampled or not: it must
    be an in-memory update that never blocks on I/O and never raises.
    """

    def record(self, operation: str, tier: str, latency_ms: float, error: bool, fault: bool, *,
               routed: bool = True, status: int = 0) -> None: ...


class MetricRecorder(Protocol):
    """Aggregates business metrics (``pulsetrace.metric``/``count``): an in-memory update, never raises."""

    def record(self, name: str, value: float, unit: str, dimensions: dict[str, object], kind: str = "metric",
               ) -> None: ...


#: The running agent's request recorder, or ``None`` (no agent, or metrics off).
recorder: RequestRecorder | None = None
#: The running agent's business metrics, or ``None`` (no agent, or metrics off).
metric_recorder: MetricRecorder | None = None
#: ``tracing.response_header``: the server middleware adds ``X-Amzn-Trace-Id``/``traceresponse``.
response_header: bool = False


def install(request_recorder: RequestRecorder | None, business_metrics: MetricRecorder | None = None, *,
            add_response_header: bool = False) -> None:
    """Called by the runtime once the agent is built."""
    global recorder, metric_recorder, response_header
    response_header = add_response_header
    recorder = request_recorder
    metric_recorder = business_metrics


def clear() -> None:
    """Called by the runtime at shutdown: the middleware goes back to recording nothing."""
    global recorder, metric_recorder, response_header
    recorder = None
    metric_recorder = None
    response_header = False
