"""Client span cost per call, in process: pulsetrace's lean httpx hook against contrib's instrumentor.

``httpx.Client.get`` is called with the transport's connection pool replaced by one that
answers at once (no sockets), so what is measured is httpx building the request plus the
instrumentation: the lean hook, contrib's ``HTTPXClientInstrumentor``, or nothing. Both
instrumentations run on the same SDK provider (a no-op exporter behind the
``BatchSpanProcessor``), inside a root span that is sampled, not sampled (keep-errors off:
not recorded) or recorded but not sampled (keep-errors on). The row is the instrumentation's
own cost (the call minus the bare call), ours over contrib's, per round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, Sampler, StaticSampler

from benchmarks.harness import Comparison, interleaved


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _InstantPool:
    """Stands in for httpcore's connection pool: a 200 with a small body, no I/O."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        return httpcore.Response(200, headers=[(b"content-length", b"2")], content=b"ok")

    def close(self) -> None:
        pass


def _client() -> httpx.Client:
    client = httpx.Client(base_url="http://inventory.internal:8081")
    client._transport._pool = _InstantPool()  # type: ignore[attr-defined]
    return client


MODES: dict[str, Sampler] = {
    "sampled": ALWAYS_ON,
    "unsampled, keep-errors off": ParentBased(ALWAYS_OFF),
    "unsampled, keep-errors on": StaticSampler(Decision.RECORD_ONLY),
}


def _provider(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=1 << 16))
    return provider


@contextmanager
def _lean(provider: TracerProvider) -> Iterator[None]:
    from pulsetrace.instrumentation.clients import httpx_hook

    httpx_hook.instrument(provider)
    try:
        yield
    finally:
        httpx_hook.uninstrument()


@contextmanager
def _contrib(provider: TracerProvider) -> Iterator[None]:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@contextmanager
def _none(provider: TracerProvider) -> Iterator[None]:
    yield


def _per_call(setup: Callable[[TracerProvider], Any], sampler: Sampler, n: int) -> float:
    provider = _provider(sampler)
    client = _client()
    try:
        with setup(provider):
            root = provider.get_tracer("bench").start_span("GET /orders")
            token = otel_context.attach(trace.set_span_in_context(root))
            try:
                for _ in range(min(200, n)):  # warm-up
                    client.get("/stock")
                start = time.perf_counter()
                for _ in range(n):
                    client.get("/stock")
                return (time.perf_counter() - start) / n
            finally:
                otel_context.detach(token)
                root.end()
    finally:
        client.close()
        provider.shutdown()


def run(quick: bool) -> list[Comparison]:
    rounds, n = (3, 1000) if quick else (7, 4000)
    out: list[Comparison] = []
    for mode, sampler in MODES.items():
        bare: list[float] = []

        def ours() -> float:
            b = _per_call(_none, sampler, n)
            bare.append(b)
            return max(1e-9, _per_call(_lean, sampler, n) - b)

        def peer() -> float:
            return max(1e-9, _per_call(_contrib, sampler, n) - _per_call(_none, sampler, n))

        o, p = interleaved(rounds, ours, peer)
        out.append(Comparison(f"httpx client span, {mode}, per call", "lean hook", "contrib HTTPXClientInstrumentor",
                              "s", o, p, goal=None,
                              note=f"the instrumentation's own cost: a call through httpx.Client (the pool answers "
                              f"at once, no I/O) minus the same call uninstrumented ({sum(bare) / len(bare) * 1e6:.0f} "
                              "µs)"))
    return out
