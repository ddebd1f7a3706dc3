"""Run the same client calls under contrib's instrumentor and under pulsetrace's lean hook, and compare.

Contrib is run with ``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup,database/dup`` (old and new
attribute keys, which is what the lean hooks record). Each side gets its own
``TracerProvider`` with an in-memory exporter; the calls run inside a root span so
parentage can be compared.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler


@dataclass
class Capture:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def client_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name != "root"]

    def root(self) -> ReadableSpan:
        return next(s for s in self.spans() if s.name == "root")


def capture(sampler: Sampler = ALWAYS_ON) -> Capture:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(sampler))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Capture(provider, exporter)


def unsampled_capture() -> Capture:
    return capture(ALWAYS_OFF)


@contextmanager
def contrib_dup_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Contrib instrumentors record old and new keys while inside (their mode is read once per process)."""
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability as Stability

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup,database/dup")
    Stability._initialized = False
    try:
        yield
    finally:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
        Stability._initialized = False


def run_under_root(cap: Capture, calls: Callable[[], Any]) -> None:
    tracer = cap.provider.get_tracer("test")
    with tracer.start_as_current_span("root"):
        calls()


@dataclass(frozen=True)
class Shape:
    """What a user of a span relies on, minus the name and the keys a side may leave out."""

    kind: str
    parent_is_root: bool
    status: str
    status_description: str | None
    events: tuple[str, ...]
    attributes: tuple[tuple[str, Any], ...]


def shape(span: ReadableSpan, root: ReadableSpan, drop: frozenset[str],
          normalise: Callable[[str, Any], Any] = lambda _k, v: v) -> Shape:
    attrs = {k: normalise(k, v) for k, v in (span.attributes or {}).items() if k not in drop}
    return Shape(
        kind=span.kind.name,
        parent_is_root=span.parent is not None and root.context is not None
        and span.parent.span_id == root.context.span_id,
        status=span.status.status_code.name,
        status_description=span.status.description,
        events=tuple(e.name for e in span.events),
        attributes=tuple(sorted(attrs.items())),
    )


def assert_same_spans(contrib: Capture, lean: Capture, *, contrib_only: frozenset[str],
                      lean_only: frozenset[str] = frozenset(), lean_name: Callable[[ReadableSpan], str] | None = None,
                      normalise: Callable[[str, Any], Any] = lambda _k, v: v) -> None:
    """Both sides made the same client spans, in the same order, apart from the documented differences.

    ``contrib_only``: keys contrib records and the lean hook leaves out on purpose (each must
    be really absent from the lean span, so the list cannot hide a regression).
    ``lean_only``: keys the lean hook adds (the current conventions' ``error.type`` where contrib
    has none); compared only for presence on failed spans by the caller.
    ``lean_name``: the name the lean hook must give, from contrib's span (default: the same name).
    """
    c_spans, l_spans = contrib.client_spans(), lean.client_spans()
    assert [s.kind for s in l_spans] == [s.kind for s in c_spans]
    assert len(l_spans) == len(c_spans) > 0
    c_root, l_root = contrib.root(), lean.root()
    for c, l in zip(c_spans, l_spans, strict=True):
        expected_name = lean_name(c) if lean_name else c.name
        assert l.name == expected_name
        assert not (set(l.attributes or {}) & contrib_only), f"{l.name}: lean span records a key it should not"
        assert shape(l, l_root, lean_only, normalise) == shape(c, c_root, contrib_only, normalise), c.name


@dataclass
class LoopbackHTTP:
    """A threaded HTTP/1.1 server on 127.0.0.1: ``/fail`` answers 500, anything else 200; headers are kept."""

    server: http.server.ThreadingHTTPServer
    seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def loopback_http() -> Iterator[LoopbackHTTP]:
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            seen.append({k.lower(): v for k, v in self.headers.items()})
            code = 500 if self.path.startswith("/fail") else 200
            self.send_response(code)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    box = LoopbackHTTP(server, seen)
    try:
        yield box
    finally:
        box.stop()
        thread.join(timeout=10)
