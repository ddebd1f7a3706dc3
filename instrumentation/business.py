"""Business-context spans: ``payment.create``, ``rfid.verify``, ``order.create`` ...

The public API (re-exported by :mod:`instrumentation`):

- :func:`business_operation` decorates a sync or async function or method;
- :func:`business_span` is a sync and async context manager yielding the span;
- :func:`set_business_attributes` adds attributes to the current span;
- :func:`record_outcome` records ``success`` / ``failure`` (and why).

A business span carries ``business.operation``, ``business.tier`` (the sampling
tier when it starts a trace), ``business.outcome`` (``success`` | ``failure``),
``business.failure_reason`` and the attributes given, named the way the
OpenTelemetry semantic conventions name them (:func:`namespace_key`):
a key with a dot is kept; ``<entity>_<field>`` becomes ``<entity>.<field>``
(``school_id`` → ``school.id``, ``payment_method`` → ``payment.method``); any other
key is put under the operation's first word (``amount`` on ``payment.create`` →
``payment.amount``).

An exception is recorded on the span (status ``ERROR``, outcome ``failure``,
reason the exception type) and re-raised untouched. Cancellation
(``asyncio.CancelledError``) is a ``failure`` with reason ``cancelled`` but not an
error. Every operation is also counted in the per-operation metrics recorder when
the agent has one.

Cost: inside a trace that is not sampled and not recorded (keep-errors off), no
span is created at all: the operation only times itself and updates the metrics.
Telemetry failures never reach the application.
"""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import enum
import functools
import inspect
import numbers
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from pulsetrace.config.schema import TIER_NAMES
from pulsetrace.instrumentation import hooks as _hooks
from pulsetrace.instrumentation.annotations import ANNOTATIONS_ATTR, merge_index_keys
from pulsetrace.instrumentation.clients.light import LightSink, light_child, sink_for

__all__ = ["business_operation", "business_span", "namespace_key", "record_outcome", "set_business_attributes"]

TRACER_NAME = "pulsetrace.business"
OPERATION_ATTR = "business.operation"
TIER_ATTR = "business.tier"
OUTCOME_ATTR = "business.outcome"
REASON_ATTR = "business.failure_reason"
DEFAULT_TIER = "business"

F = TypeVar("F")

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]


class _Operation:
    """The business operation in progress in this context (for nested calls and record_outcome)."""

    __slots__ = ("index", "name", "reason", "span", "success", "tier", "value", "value_key")

    def __init__(self, name: str, tier: str, index: frozenset[str], value_key: str | None = None,
                 value: object = None) -> None:
        self.name = name
        self.tier = tier
        self.span: Span = trace.INVALID_SPAN
        self.success: bool | None = None
        self.reason: str | None = None
        self.index = index
        #: The keyword whose value is recorded as a metric (``business_operation(value=...)``), and the value.
        self.value_key = value_key
        self.value = value


class ValueMetric:
    """``business_operation(..., value="amount", value_metric="Revenue")``: the value's sum by outcome."""

    __slots__ = ("key", "name", "unit")

    def __init__(self, operation: str, key: str, name: str | None, unit: str) -> None:
        self.key = key
        self.name = name or "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", f"{operation} {key}")
                                    if p)
        self.unit = unit

    def record(self, operation: str, success: bool, value: object) -> None:
        recorder = _hooks.metric_recorder
        if recorder is None or value is None or isinstance(value, bool):
            return
        if isinstance(value, (decimal.Decimal, numbers.Real)):
            recorder.record(self.name, float(value), self.unit,
                            {"Operation": operation, "Outcome": "success" if success else "failure"})


_CURRENT: contextvars.ContextVar[_Operation | None] = contextvars.ContextVar("pulsetrace_business_operation",
                                                                             default=None)
_tracer_cache: tuple[trace.TracerProvider, trace.Tracer] | None = None
_light_cache: tuple[trace.TracerProvider, LightSink | None] | None = None
#: operation prefix → keyword → attribute name.
_key_cache: dict[str, dict[str, str]] = {}


def _tracer() -> trace.Tracer:
    global _tracer_cache
    provider = trace.get_tracer_provider()
    cached = _tracer_cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(TRACER_NAME)
    _tracer_cache = (provider, tracer)
    return tracer


def _light_sink() -> LightSink | None:
    """Where business spans of recorded, unsampled traces go without an SDK span (:mod:`.light`)."""
    global _light_cache
    provider = trace.get_tracer_provider()
    cached = _light_cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    sink = sink_for(provider, TRACER_NAME)
    _light_cache = (provider, sink)
    return sink


def namespace_key(operation: str | None, key: str) -> str:
    """The attribute name for a keyword given to a business operation (see the module docstring)."""
    prefix = operation.split(".", 1)[0] if operation else "business"
    names = _key_cache.get(prefix)
    if names is None:
        if len(_key_cache) >= 1024:
            _key_cache.clear()
        names = _key_cache[prefix] = {}
    out = names.get(key)
    if out is not None:
        return out
    if "." in key:
        out = key
    else:
        entity, sep, field = key.partition("_")
        out = f"{entity}.{field}" if sep and entity and field else f"{prefix}.{key}"
    if len(names) < 4096:
        names[key] = out
    return out


_PRIMITIVES = frozenset({str, bool, int, float})


def _coerce(value: object) -> AttributeValue | None:
    """An attribute value OpenTelemetry accepts; ``None`` to leave the attribute out."""
    if type(value) in _PRIMITIVES:
        return value  # type: ignore[return-value]
    if value is None:
        return None
    if isinstance(value, enum.Enum):  # before str/int: ``class Method(str, Enum)`` records its value
        return _coerce(value.value)
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (numbers.Real, decimal.Decimal)):  # money, fractions, numpy: filterable numbers
        return float(value)
    if isinstance(value, (list, tuple)):
        items = [v for v in (_coerce(v) for v in value) if isinstance(v, (str, bool, int, float))]
        if items and all(type(v) is type(items[0]) for v in items):
            return cast(AttributeValue, tuple(items))
        return tuple(str(v) for v in items)
    return str(value)


def _attributes(operation: str, tier: str, given: Mapping[str, object], index: frozenset[str]) -> dict[str, Any]:
    # The outcome starts as success (one attribute write less on the common path); a failure overwrites it.
    attrs: dict[str, Any] = {OPERATION_ATTR: operation, TIER_ATTR: tier, OUTCOME_ATTR: "success"}
    names = _key_cache.get(operation.split(".", 1)[0]) or {}  # one prefix lookup per span, not one per key
    for key, value in given.items():
        coerced = _coerce(value)
        if coerced is not None:
            attrs[names.get(key) or namespace_key(operation, key)] = coerced
    if index:
        listed = [k for k in index if k in attrs]
        if listed:
            attrs[ANNOTATIONS_ATTR] = tuple(listed)
    return attrs


def _index_keys(operation: str, index: Iterable[str] | None) -> frozenset[str]:
    if not index:
        return frozenset()
    if isinstance(index, str):
        index = (index,)
    return frozenset(namespace_key(operation, k) for k in index)


def _check_tier(tier: str) -> str:
    if tier not in TIER_NAMES:
        raise ValueError(f"unknown tier {tier!r}: expected one of {', '.join(TIER_NAMES)}")
    return tier


#: Longest status description written for an exception.
_MAX_STATUS_CHARS = 512


def _describe(exc: BaseException) -> str:
    """``Type: message`` for a status description, cut to :data:`_MAX_STATUS_CHARS`.

    An exception whose ``__str__`` (or ``__repr__``) raises still gets one.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        try:
            text = repr(exc)
        except Exception:
            text = "<unprintable>"
    return f"{name}: {text}"[:_MAX_STATUS_CHARS]


def _record_exception(span: Span, exc: BaseException) -> None:
    try:
        span.record_exception(exc, escaped=True)
    except Exception:  # the SDK calls str(exc): record the event ourselves with a guarded message
        module = type(exc).__module__
        qualname = type(exc).__qualname__
        span.add_event("exception", {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": _describe(exc).partition(": ")[2],
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "exception.escaped": "True",
        })


def _finish(span: Span, token: object, exc: BaseException | None, success: bool, reason: str | None) -> None:
    """Record the outcome on ``span``, then end it and restore the context, whatever failed before.

    ``exc`` is the exception to record as an error (``None`` for none or a cancellation).
    """
    try:
        if span.is_recording():
            if exc is not None:
                try:
                    _record_exception(span, exc)
                finally:
                    span.set_status(Status(StatusCode.ERROR, _describe(exc)))
            if not success:
                span.set_attribute(OUTCOME_ATTR, "failure")
                if reason:
                    span.set_attribute(REASON_ATTR, reason)
    finally:
        try:
            span.end()
        finally:
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:  # detached in another context: nothing left to restore here
                pass


class _BusinessSpan:
    """The context manager behind :func:`business_span` and :func:`business_operation` (sync and async)."""

    __slots__ = ("_ctx_token", "_given", "_index", "_name", "_op", "_op_token", "_started", "_tier", "_value")

    def __init__(self, name: str, tier: str, given: Mapping[str, object], index: frozenset[str],
                 value: tuple[ValueMetric, object] | None = None) -> None:
        self._name = name
        self._tier = tier
        self._given = given
        self._index = index
        self._value = value
        self._op: _Operation | None = None
        self._op_token: contextvars.Token[_Operation | None] | None = None
        self._ctx_token: object = None
        self._started = 0.0

    def __enter__(self) -> Span:
        self._started = time.perf_counter()
        try:
            vm = self._value
            op = _Operation(self._name, self._tier, self._index, vm[0].key if vm is not None else None,
                            vm[1] if vm is not None else None)
            self._op = op
            self._op_token = _CURRENT.set(op)
            parent = trace.get_current_span()
            pctx = parent.get_span_context()
            if pctx.is_valid and not pctx.trace_flags.sampled and not pctx.is_remote and not parent.is_recording():
                # Not sampled and nothing records this trace: no span at all, only the metrics.
                op.span = parent
                return parent
            attributes = _attributes(self._name, self._tier, self._given, self._index)
            # Recorded only so that keep-errors can keep it: a light span unless the trace is kept.
            span = light_child(_light_sink(), self._name, parent, attributes, SpanKind.INTERNAL) \
                or _tracer().start_span(self._name, attributes=attributes)
            self._ctx_token = otel_context.attach(trace.set_span_in_context(span))
            op.span = span
            return span
        except Exception:  # telemetry must not break the operation
            return trace.INVALID_SPAN

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        latency_ms = (time.perf_counter() - self._started) * 1000.0
        op = self._op
        try:
            if op is None:
                return
            cancelled = isinstance(exc, asyncio.CancelledError)
            fault = exc is not None and not cancelled
            success = op.success if op.success is not None else exc is None
            reason = op.reason
            if not success and reason is None and exc is not None:
                reason = "cancelled" if cancelled else type(exc).__name__
            token = self._ctx_token
            if token is not None:
                self._ctx_token = None
                try:
                    _finish(op.span, token, None if cancelled else exc, success, reason)
                except Exception:  # the span is ended and the context restored even so
                    pass
            recorder = _hooks.recorder
            if recorder is not None:
                recorder.record(op.name, op.tier, latency_ms, not success and not fault, fault)
            if self._value is not None:
                self._value[0].record(op.name, success, op.value)
        except Exception:
            pass
        finally:
            token = self._op_token
            self._op_token = None
            if token is not None:
                try:
                    _CURRENT.reset(token)
                except ValueError:  # entered in another context (a generator resumed elsewhere)
                    pass

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def business_span(name: str, tier: str = DEFAULT_TIER, *, index: Iterable[str] | None = None,
                  **attributes: object) -> _BusinessSpan:
    """A business span as a context manager (``with`` or ``async with``) yielding the span.

    ``attributes`` are named by :func:`namespace_key`; ``index`` names the ones to
    make X-Ray annotations (as given or as named, e.g. ``school_id`` or ``school.id``).
    """
    _check_tier(tier)
    return _BusinessSpan(name, tier, attributes, _index_keys(name, index))


class _Capture:
    """Reads the named parameters of one call without binding the whole signature."""

    __slots__ = ("plan", "varkw")

    def __init__(self, fn: Callable[..., Any], names: Sequence[str]) -> None:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        self.plan: list[tuple[str, int | None, object]] = []
        self.varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        for name in names:
            param = sig.parameters.get(name)
            if param is None:
                if self.varkw:
                    self.plan.append((name, None, None))
                    continue
                raise TypeError(f"business_operation: {getattr(fn, '__qualname__', fn)!r} has no parameter {name!r}")
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"business_operation: cannot capture *args/**kwargs parameter {name!r}")
            position = params.index(param) if param.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                             inspect.Parameter.POSITIONAL_OR_KEYWORD) else None
            default = param.default if param.default is not inspect.Parameter.empty else None
            self.plan.append((name, position, default))

    def __call__(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, position, default in self.plan:
            if name in kwargs:
                out[name] = kwargs[name]
            elif position is not None and position < len(args):
                out[name] = args[position]
            elif default is not None:
                out[name] = default
        return out


def business_operation(name: str, tier: str = DEFAULT_TIER,
                       attributes: Mapping[str, object] | Sequence[str] | None = None,
                       index: Iterable[str] | None = None, *, value: str | None = None,
                       value_metric: str | None = None, value_unit: str = "None") -> Callable[[F], F]:
    """Decorate a function, coroutine function or method as the business operation ``name``.

    ``attributes`` is either a mapping of fixed attributes, or a list of parameter
    names whose call values are recorded (``["order_id", "amount"]`` →
    ``order.id``, ``payment.amount``). ``index`` names attributes to make X-Ray
    annotations. ``value`` names a parameter (or an attribute set during the call with
    :func:`set_business_attributes`) whose number is recorded as the business metric
    ``value_metric`` (default: the operation and the key in CamelCase, ``PaymentCreateAmount``)
    with dimensions ``Operation`` and ``Outcome``: ``value="amount", value_metric="Revenue"``
    gives the revenue taken, and the revenue that failed. Generator functions are refused at decoration time (wrap the
    work inside them in :func:`business_span` instead): their body runs after the
    call returns, so the span would time nothing.
    """
    _check_tier(tier)
    index_keys = _index_keys(name, index)
    static: Mapping[str, object] = attributes if isinstance(attributes, Mapping) else {}
    names: Sequence[str] = () if attributes is None or isinstance(attributes, (Mapping, str)) else attributes
    if isinstance(attributes, str):
        names = (attributes,)
    value_spec = ValueMetric(name, value, value_metric, value_unit) if value else None

    def decorate(fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)):
            return cast(F, type(fn)(decorate(fn.__func__)))
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"business_operation cannot wrap the generator function "
                            f"{getattr(fn, '__qualname__', fn)!r}: use `with business_span(...)` inside it")
        if not callable(fn):
            raise TypeError(f"business_operation decorates functions, not {type(fn).__name__}")
        capture = _Capture(fn, names) if names else None
        value_capture = None
        if value_spec is not None:
            try:
                value_capture = _Capture(fn, (value_spec.key,))
            except TypeError:  # not a parameter: an attribute set during the call
                value_capture = None

        def value_of(args: tuple[object, ...], kwargs: Mapping[str, object]) -> tuple[ValueMetric, object] | None:
            if value_spec is None:
                return None
            if value_capture is None:
                return value_spec, None
            try:
                return value_spec, value_capture(args, kwargs).get(value_spec.key)
            except Exception:
                return value_spec, None

        def given(args: tuple[object, ...], kwargs: Mapping[str, object]) -> Mapping[str, object]:
            if capture is None:
                return static
            try:
                captured = capture(args, kwargs)
            except Exception:
                return static
            return {**static, **captured} if static else captured

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _BusinessSpan(name, tier, given(args, kwargs), index_keys, value_of(args, kwargs)):
                    return await fn(*args, **kwargs)

            async_wrapper.__pulsetrace_business__ = name  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _BusinessSpan(name, tier, given(args, kwargs), index_keys, value_of(args, kwargs)):
                return fn(*args, **kwargs)

        wrapper.__pulsetrace_business__ = name  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def set_business_attributes(**attributes: object) -> None:
    """Add attributes to the current span, named for the current business operation."""
    try:
        op = _CURRENT.get()
        if op is not None and op.value_key is not None and op.value_key in attributes:
            op.value = attributes[op.value_key]  # the amount known only inside the call
        span = trace.get_current_span()
        if not span.is_recording():
            return
        operation = op.name if op is not None else None
        indexed: list[str] = []
        for key, value in attributes.items():
            coerced = _coerce(value)
            if coerced is None:
                continue
            full = namespace_key(operation, key)
            span.set_attribute(full, coerced)
            if op is not None and full in op.index:
                indexed.append(full)
        if indexed:
            existing = getattr(span, "attributes", None) or {}
            span.set_attribute(ANNOTATIONS_ATTR, merge_index_keys(existing.get(ANNOTATIONS_ATTR), indexed))
    except Exception:
        pass


def record_outcome(success: bool, reason: str | None = None) -> None:
    """Record the outcome of the current business operation (and on the current span)."""
    try:
        op = _CURRENT.get()
        if op is not None:
            op.success = bool(success)
            op.reason = reason
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(OUTCOME_ATTR, "success" if success else "failure")
            if not success and reason:
                span.set_attribute(REASON_ATTR, reason)
    except Exception:
        pass
