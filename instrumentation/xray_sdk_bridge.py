"""The X-Ray SDK bridge: ``xray_recorder`` calls land in pulsetrace's traces.

Activated (through :mod:`pulsetrace.instrumentation.auto`) when the application imports
``aws_xray_sdk.core``. From then on every X-Ray SDK recorder, the global ``xray_recorder``
included, records through OpenTelemetry instead of its own segments:

- ``begin_subsegment`` (so ``capture``, ``capture_async``, ``in_subsegment``, ``record_subsegment``
  and the SDK's patched libraries) starts a child span of the current span; ``end_subsegment`` ends
  it. Namespace ``remote``/``aws`` gives a CLIENT span, ``local`` an INTERNAL one. With no current
  span (the SDK's "no segment found") or with instrumentation suppressed (the agent's own I/O),
  nothing is recorded: the caller gets an entity that is not sampled.
- ``begin_segment`` inside a span (the SDK's ``XRayMiddleware`` running inside pulsetrace's server
  span) *borrows* that span: no second server span, the middleware's annotations land on the real
  one. Outside any span (a background thread, a job) it starts a root span, continuing ``traceid`` /
  ``parent_id`` when given; ``end_segment`` ends it.
- ``current_segment``/``current_subsegment``/``get_trace_entity`` return
  :class:`~pulsetrace.instrumentation.xray_sdk_entities.XRayEntity` objects whose ``trace_id``, ``id``
  and ``sampled`` are the OpenTelemetry context's; ``put_annotation``/``put_metadata`` and
  ``is_sampled`` act on the current span.
- The SDK's own sampler is switched off (``sampling = False``: pulsetrace's sampler decides) and its
  emitter replaced by one that sends nothing, so no datagram leaves through the SDK; a later
  ``xray_recorder.configure(...)`` cannot turn them back on.
- ``patch_all()``/``patch([...])`` skip the libraries pulsetrace instruments itself (so each call is
  recorded once) and patch the others, whose subsegments then come through this bridge.

Every patch is undone by the returned undo; the entity stack lives in a context variable, so threads
and asyncio tasks each have their own. Never raises into the application: a failure in the bridge
leaves the call untraced.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from pulsetrace.background import is_suppressed
from pulsetrace.instrumentation.xray_sdk_entities import XRayEntity

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["SDK_MODULES", "activate"]

_log = logging.getLogger("pulsetrace.instrumentation.xray_sdk")

#: The SDK's patchable modules → the pulsetrace instrumentation that records the same calls.
SDK_MODULES: dict[str, str] = {
    "botocore": "botocore", "aiobotocore": "botocore", "boto3": "botocore", "aioboto3": "botocore",
    "httpx": "httpx", "requests": "requests", "psycopg": "psycopg",
    "sqlalchemy_core": "sqlalchemy", "pymysql": "pymysql", "mysql": "mysql", "sqlite3": "sqlite3",
    "pymongo": "pymongo", "pg8000": "pg8000", "pynamodb": "botocore",
}

_stack: contextvars.ContextVar[tuple[XRayEntity, ...]] = contextvars.ContextVar("pulsetrace_xray_sdk", default=())


class _NullEmitter:
    """Stands in for the SDK's UDP emitter: pulsetrace's exporters send the traces."""

    def send_entity(self, entity: Any) -> None:
        pass

    def set_daemon_address(self, address: Any) -> None:
        pass

    @property
    def ip(self) -> str:
        return ""

    @property
    def port(self) -> int:
        return 0


def _push(entity: XRayEntity) -> None:
    _stack.set((*_stack.get(), entity))


def _pop(kind: str) -> XRayEntity | None:
    stack = _stack.get()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i].type == kind:
            _stack.set(stack[:i])
            return stack[i]
    return None


def _entity_for_current_span() -> XRayEntity | None:
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    return XRayEntity(span, getattr(span, "name", "") or "segment", segment=True, owned=False)


def _remote_parent(traceid: Any, parent_id: Any, sampling: Any) -> Any:
    """An OpenTelemetry context continuing an X-Ray trace given to ``begin_segment``, or ``None``."""
    try:
        parts = str(traceid).split("-")
        if len(parts) != 3 or not parent_id:
            return None
        ctx = SpanContext(trace_id=int(parts[1] + parts[2], 16), span_id=int(str(parent_id), 16), is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.DEFAULT if sampling == 0 else TraceFlags.SAMPLED))
        return trace.set_span_in_context(NonRecordingSpan(ctx), otel_context.Context())
    except (TypeError, ValueError):
        return None


class _Bridge:
    """The replacement methods, bound to one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("pulsetrace.xray_sdk_bridge")

    def begin_segment(self, recorder: Any, name: str | None = None, traceid: Any = None, parent_id: Any = None,
                      sampling: Any = None) -> XRayEntity | None:
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            entity = XRayEntity(current, name or getattr(recorder, "service", "") or "segment", segment=True,
                                owned=False)
        else:
            parent = _remote_parent(traceid, parent_id, sampling)
            seg_name = name or getattr(recorder, "service", None) or "segment"
            span = self.tracer.start_span(seg_name, context=parent, kind=SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(span))
            entity = XRayEntity(span, seg_name, segment=True, owned=True, token=token)
        _push(entity)
        return entity

    def end_segment(self, recorder: Any, end_time: float | None = None) -> None:
        entity = _pop("segment")
        if entity is None:
            return
        entity.close(end_time)
        if entity.token is not None:
            otel_context.detach(entity.token)

    def begin_subsegment(self, recorder: Any, name: str, namespace: str = "local") -> XRayEntity:
        if is_suppressed() or not trace.get_current_span().get_span_context().is_valid:
            # No span to hang it under (the SDK's "no segment found"), or the agent's own I/O
            # (the local store's sqlite3 writes, say, when patch_all patched sqlite3): nothing recorded.
            return self._unrecorded(name, namespace)
        stack = _stack.get()
        parent = next((e for e in reversed(stack) if e.type == "segment"), None)
        if parent is None:
            # No SDK segment open: the span we are under stands for it (pulsetrace's server span),
            # or the segment the outermost subsegment was opened under.
            parent = stack[0].parent_segment if stack else _entity_for_current_span()
        kind = SpanKind.CLIENT if namespace in ("remote", "aws") else SpanKind.INTERNAL
        span = self.tracer.start_span(name, kind=kind)
        token = otel_context.attach(trace.set_span_in_context(span))
        entity = XRayEntity(span, name, segment=False, owned=True, namespace=namespace, token=token, parent=parent)
        _stack.set((*stack, entity))
        return entity

    def begin_subsegment_without_sampling(self, recorder: Any, name: str) -> XRayEntity:
        return self._unrecorded(name, "local")

    @staticmethod
    def _unrecorded(name: str, namespace: str, *, segment: bool = False) -> XRayEntity:
        """An entity that records nothing, for callers that need one to hold (``sampled`` is false)."""
        parent = trace.get_current_span().get_span_context()
        span = NonRecordingSpan(SpanContext(parent.trace_id if parent.is_valid else random.getrandbits(128),
                                            random.getrandbits(64), is_remote=False))
        token = otel_context.attach(trace.set_span_in_context(span))
        entity = XRayEntity(span, name, segment=segment, owned=True, namespace=namespace, token=token)
        _push(entity)
        return entity

    def end_subsegment(self, recorder: Any, end_time: float | None = None) -> bool:
        entity = _pop("subsegment")
        if entity is None:
            return False
        entity.close(end_time)
        if entity.token is not None:
            otel_context.detach(entity.token)
        return True

    def current_segment(self, recorder: Any) -> XRayEntity | None:
        stack = _stack.get()
        for entity in reversed(stack):
            if entity.type == "segment":
                return entity
        if stack:
            return stack[-1].parent_segment
        return _entity_for_current_span()

    def current_subsegment(self, recorder: Any) -> XRayEntity | None:
        stack = _stack.get()
        return stack[-1] if stack and stack[-1].type == "subsegment" else None

    def get_trace_entity(self, recorder: Any) -> XRayEntity | None:
        stack = _stack.get()
        return stack[-1] if stack else _entity_for_current_span()

    def put_annotation(self, recorder: Any, key: str, value: Any) -> None:
        entity = self.get_trace_entity(recorder)
        if entity is not None:
            entity.put_annotation(key, value)

    def put_metadata(self, recorder: Any, key: str, value: Any, namespace: str = "default") -> None:
        entity = self.get_trace_entity(recorder)
        if entity is not None:
            entity.put_metadata(key, value, namespace)

    def is_sampled(self, recorder: Any) -> bool:
        return bool(trace.get_current_span().get_span_context().trace_flags.sampled)

    def stream_subsegments(self, recorder: Any) -> None:
        pass  # spans are exported by pulsetrace's pipeline as they end


#: The recorder methods the bridge replaces (the async recorder's methods call these).
_METHODS = ("begin_segment", "end_segment", "begin_subsegment", "begin_subsegment_without_sampling", "end_subsegment", "current_segment",
            "current_subsegment", "get_trace_entity", "put_annotation", "put_metadata", "is_sampled",
            "stream_subsegments")


def _never_raises(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``method`` (a bound method of :class:`_Bridge`) as a recorder method that never raises."""
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            _log.debug("X-Ray SDK bridge: %s failed", name, exc_info=True)
            if name.startswith("begin_"):
                # Callers use what begin_* returns at once (XRayMiddleware does): an entity that
                # records nothing, never None.
                try:
                    return _Bridge._unrecorded(str(args[0]) if args else "segment", "local",
                                              segment=name == "begin_segment")
                except Exception:
                    return None
            return False if name in ("end_subsegment", "is_sampled") else None

    call.__name__ = name
    call.__doc__ = f"pulsetrace: the X-Ray SDK's ``{name}`` recorded through OpenTelemetry."
    return call


def _silence(recorder: Any) -> None:
    """The SDK's own sampler off and its emitter silent, on one recorder."""
    try:
        recorder._sampling = False
        recorder._emitter = _NullEmitter()
    except Exception:
        _log.debug("could not silence an X-Ray recorder", exc_info=True)


def activate(module: ModuleType, provider: TracerProvider, ours: Callable[[], Iterable[str]]) -> Callable[[], None]:
    """Bridge ``aws_xray_sdk.core`` (``module``) to ``provider``; ``ours`` names the libraries
    pulsetrace instruments. Returns the undo."""
    from aws_xray_sdk.core import patcher
    from aws_xray_sdk.core.recorder import AWSXRayRecorder

    bridge = _Bridge(provider)
    originals: dict[str, Any] = {name: AWSXRayRecorder.__dict__[name] for name in (*_METHODS, "configure")}
    for name in _METHODS:
        setattr(AWSXRayRecorder, name, _never_raises(getattr(bridge, name), name))
    original_configure = originals["configure"]

    def configure(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_configure(self, *args, **kwargs)
        _silence(self)  # whatever was configured, the SDK neither samples nor sends
        return result

    AWSXRayRecorder.configure = configure
    recorder = getattr(module, "xray_recorder", None)
    if recorder is not None:
        _silence(recorder)
    original_patch = patcher.patch

    def patch(modules_to_patch: Iterable[str], raise_errors: bool = True, ignore_module_patterns: Any = None) -> Any:
        enabled = set(ours())
        mine = tuple(m for m in modules_to_patch if m not in enabled and SDK_MODULES.get(m) not in enabled)
        skipped = sorted(set(modules_to_patch) - set(mine))
        if skipped:
            _log.debug("X-Ray SDK patch skipped for %s: pulsetrace instruments them", ", ".join(skipped))
        if not mine:
            return None
        return original_patch(mine, raise_errors, ignore_module_patterns)

    patcher.patch = patch
    # ``from aws_xray_sdk.core import patch`` binds the name in the package too.
    core_patch = getattr(module, "patch", None)
    if core_patch is original_patch:
        module.patch = patch  # type: ignore[attr-defined]

    def undo() -> None:
        for name, value in originals.items():
            setattr(AWSXRayRecorder, name, value)
        patcher.patch = original_patch
        if getattr(module, "patch", None) is patch:
            module.patch = original_patch  # type: ignore[attr-defined]

    return undo
