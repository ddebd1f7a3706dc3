"""The light keep-errors path: in a trace that is recorded but not sampled, the lean hooks make no SDK span.

Their client spans reach the span processors as the same ``ReadableSpan`` an SDK span would
have become (name, kind, parent, attributes, status, events with their attributes), so the
keep-errors buffer keeps or forgets them as before; sampled traces still get SDK spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, StaticSampler

from pulsetrace.instrumentation.clients import httpx_hook, redis_hook
from tests.instrumentation.lean_compare import LoopbackHTTP, loopback_http
from tests.servers import RedisServer


class Collect(SpanProcessor):
    """Every ended span, sampled or not (the SDK's simple processor drops unsampled ones)."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def recorded_unsampled() -> tuple[TracerProvider, Collect]:
    provider = TracerProvider(sampler=StaticSampler(Decision.RECORD_ONLY))
    collect = Collect()
    provider.add_span_processor(collect)
    return provider, collect


@pytest.fixture
def server() -> Iterator[LoopbackHTTP]:
    with loopback_http() as box:
        yield box


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    httpx_hook.uninstrument()
    redis_hook.uninstrument()


def calls(url: str, redis_url: str) -> Callable[[], None]:
    def run() -> None:
        client = redis.Redis.from_url(redis_url)
        client.set("k", "v")
        with pytest.raises(redis.ResponseError):
            client.incr("k")
        client.close()
        httpx.get(url + "/a")
        httpx.get(url + "/fail")

        async def in_async() -> None:
            async with httpx.AsyncClient() as c:
                await c.get(url + "/b")

        asyncio.run(in_async())

    return run


def run_traced(provider: TracerProvider, collect: Collect, work: Callable[[], None]) -> list[ReadableSpan]:
    with provider.get_tracer("test").start_as_current_span("root"):
        work()
    return [s for s in collect.ended if s.name != "root"]


def view(span: ReadableSpan, root_id: int) -> tuple[Any, ...]:
    events = tuple((e.name, tuple(sorted((k, v) for k, v in (e.attributes or {}).items()
                                         if k != "exception.stacktrace"))) for e in span.events)
    return (span.name, span.kind, span.parent.span_id == root_id if span.parent else None,
            span.status.status_code, span.status.description, tuple(sorted((span.attributes or {}).items())), events,
            span.context.trace_flags.sampled, span.instrumentation_scope.name if span.instrumentation_scope else None)


def test_light_spans_equal_the_sdk_spans_they_replace(server: LoopbackHTTP, redis_server: RedisServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    work = calls(server.url, redis_server.url)
    provider, collect = recorded_unsampled()
    made_by_sdk: list[str] = []
    original = Tracer.start_span

    def counting(self: Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        made_by_sdk.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tracer, "start_span", counting)
    for hook in (httpx_hook, redis_hook):
        hook.instrument(provider)
    light = run_traced(provider, collect, work)
    assert made_by_sdk == ["root"]  # the client spans were light
    root_id = next(s for s in collect.ended if s.name == "root").context.span_id
    for hook in (httpx_hook, redis_hook):
        hook.uninstrument()

    # The same calls with the light path off: the SDK makes the spans.
    provider2, collect2 = recorded_unsampled()
    for hook in (httpx_hook, redis_hook):
        hook.instrument(provider2)
        monkeypatch.setattr(hook._HOOK._tracer_for_tests(), "_sink", None)
    sdk = run_traced(provider2, collect2, work)
    root2 = next(s for s in collect2.ended if s.name == "root").context.span_id
    assert made_by_sdk == ["root", "root", *(s.name for s in sdk)]  # now the SDK made every one
    assert [view(s, root_id) for s in light] == [view(s, root2) for s in sdk]
    assert len(light) == 5 and all(not s.context.trace_flags.sampled for s in light)
    stacktraces = [e.attributes["exception.stacktrace"] for s in light for e in s.events]
    assert len(stacktraces) == 1 and "ResponseError" in stacktraces[0]
    # The downstream service was handed the light span's id as its parent.
    parent_ids = [h["traceparent"].split("-")[2] for h in server.seen[:3]]
    assert parent_ids == [f"{s.context.span_id:016x}" for s in light if s.name.startswith("GET 127")]


def test_sampled_traces_still_get_sdk_spans(server: LoopbackHTTP) -> None:
    provider = TracerProvider()
    collect = Collect()
    provider.add_span_processor(collect)
    httpx_hook.instrument(provider)
    spans = run_traced(provider, collect, lambda: httpx.get(server.url + "/a"))
    assert len(spans) == 1 and spans[0].context.trace_flags.sampled
    assert type(spans[0]).__module__.startswith("opentelemetry.sdk")


def _business_work() -> None:
    from pulsetrace.instrumentation import business_span, set_business_attributes

    with pytest.raises(RuntimeError):
        with business_span("order.create", tier="business", index=["order_id"], order_id="o-1", amount=12.5):
            set_business_attributes(method="upi")
            raise RuntimeError("payment gateway said no")


def test_business_span_in_a_recorded_unsampled_trace_is_light_and_equals_the_sdk_one(
        clean_agent: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from pulsetrace.instrumentation import business
    from tests.otel_globals import reset_otel_globals

    def business_spans(light_on: bool) -> tuple[list[ReadableSpan], int, list[str]]:
        reset_otel_globals()
        provider, collect = recorded_unsampled()
        trace.set_tracer_provider(provider)
        made: list[str] = []
        original = Tracer.start_span

        def counting(self: Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
            made.append(name)
            return original(self, name, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(Tracer, "start_span", counting)
            if not light_on:
                m.setattr(business, "_light_sink", lambda: None)
            spans = run_traced(provider, collect, _business_work)
        root = next(s for s in collect.ended if s.name == "root").context.span_id
        return spans, root, made

    light, light_root, made_light = business_spans(True)
    sdk, sdk_root, made_sdk = business_spans(False)
    assert made_light == ["root"] and made_sdk == ["root", "order.create"]
    assert [view(s, light_root) for s in light] == [view(s, sdk_root) for s in sdk]
    (span,) = light
    attrs = span.attributes or {}
    assert attrs["business.outcome"] == "failure" and "upi" in attrs.values(), attrs
    assert span.status.status_code.name == "ERROR" and [e.name for e in span.events] == ["exception"]
