"""Server-span middleware cost per request, in process: ours against the upstream ASGI middleware.

A trivial ASGI app is called directly (no sockets), so only the middleware's own
cost is measured: the upstream ``OpenTelemetryMiddleware`` (sampled, its default
per-message spans on) and pulsetrace's ``PulseTraceMiddleware``, sampled and
unsampled, each on its own SDK TracerProvider with a no-op exporter behind a
BatchSpanProcessor, against the bare app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from benchmarks.harness import Comparison, interleaved


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
          "path": "/orders/42", "raw_path": b"/orders/42", "query_string": b"", "root_path": "",
          "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*"),
                      (b"accept-encoding", b"gzip"), (b"connection", b"keep-alive")],
          "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _provider(sampled: bool) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    provider.add_span_processor(BatchSpanProcessor(_NullExporter(), max_queue_size=1 << 16))
    return provider


def _per_request(app: Any, n: int) -> float:
    async def loop() -> float:
        loop_time = asyncio.get_running_loop().time
        start = loop_time()
        for _ in range(n):
            await app(dict(_SCOPE), _receive, _send)
        return (loop_time() - start) / n

    return asyncio.run(loop())


def run(quick: bool) -> list[Comparison]:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from pulsetrace.instrumentation.asgi import PulseTraceMiddleware

    n = 3000 if quick else 20000
    rounds = 3 if quick else 7
    upstream = OpenTelemetryMiddleware(_app, tracer_provider=_provider(True))
    ours_sampled = PulseTraceMiddleware(_app, _provider(True))
    ours_unsampled = PulseTraceMiddleware(_app, _provider(False))
    upstream_unsampled = OpenTelemetryMiddleware(_app, tracer_provider=_provider(False))
    for app in (upstream, ours_sampled, ours_unsampled, upstream_unsampled, _app):
        _per_request(app, 500)
    s_o, s_p = interleaved(rounds, lambda: _per_request(ours_sampled, n), lambda: _per_request(upstream, n))
    u_o, u_p = interleaved(rounds, lambda: _per_request(ours_unsampled, n),
                           lambda: _per_request(upstream_unsampled, n))
    bare = [_per_request(_app, n) for _ in range(rounds)]
    return [
        Comparison("ASGI server span, sampled (in process)", "PulseTraceMiddleware", "upstream OpenTelemetryMiddleware",
                   "s", s_o, s_p, goal=("<=", 0.5), note="per request incl. the bare app's "
                   f"{sorted(bare)[len(bare) // 2] * 1e6:.1f} µs"),
        Comparison("ASGI server span, unsampled (in process)", "PulseTraceMiddleware",
                   "upstream OpenTelemetryMiddleware", "s", u_o, u_p, goal=("<=", 0.5)),
    ]
