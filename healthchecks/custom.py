"""Custom probes loaded from a dotted path: ``target: "mypkg.checks:QueueProbe"`` (or ``mypkg.checks.QueueProbe``).

The target may be:

- a class: instantiated once as ``Target(**options)``; its ``check()`` (async, or plain and
  then run on a worker thread) returns a :class:`~pulsetrace.healthchecks.base.ProbeResult`;
- an ``async def`` function: awaited as ``target(**options)`` on every check;
- a plain function: called as ``target(**options)`` on a worker thread (so a blocking
  check cannot stall the other probes or the health server).

A check may also return a :class:`~pulsetrace.healthchecks.base.Status` or a bool (True UP, False
DOWN). An exception is a DOWN result with the (redacted) error as detail.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import ProbeContext, ProbeResult, Status, describe_error

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig


class CustomProbeError(Exception):
    """The target cannot be loaded or built; the message names the reason."""


def load_target(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise CustomProbeError(f"{target!r} is not a dotted path (expected 'package.module:Name')")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CustomProbeError(f"cannot import {module_name}: {describe_error(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CustomProbeError(f"{module_name} has no attribute {attr}") from None
    return obj


def _coerce(value: object, latency_s: float) -> ProbeResult:
    if isinstance(value, ProbeResult):
        return value
    if isinstance(value, Status):
        return ProbeResult(value, latency_s, value.value)
    if isinstance(value, bool):
        return ProbeResult(Status.UP if value else Status.DOWN, latency_s, "ok" if value else "check returned False")
    return ProbeResult(Status.UNKNOWN, latency_s, f"custom probe returned {type(value).__name__}, not a ProbeResult")


class CustomProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self.ctx = ctx
        target = load_target(cfg.target)
        options = dict(cfg.options)
        self._close: Callable[[], Any] | None = None
        if inspect.isclass(target):
            try:
                instance = target(**options)
            except Exception as exc:
                raise CustomProbeError(f"{cfg.target}(**options) failed: {describe_error(exc)}") from None
            check = getattr(instance, "check", None)
            if not callable(check):
                raise CustomProbeError(f"{cfg.target} has no check() method")
            self._call: Callable[[], Any] = check
            self._close = getattr(instance, "aclose", None) or getattr(instance, "close", None)
        elif callable(target):
            self._call = functools.partial(target, **options)
        else:
            raise CustomProbeError(f"{cfg.target} is neither a class nor a function")
        self._is_async = inspect.iscoroutinefunction(self._call) or inspect.iscoroutinefunction(
            getattr(self._call, "func", None))

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            if self._is_async:
                value = await self._call()
            else:
                value = await asyncio.get_running_loop().run_in_executor(None, self._call)
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ProbeResult(Status.DOWN, time.perf_counter() - started, self.ctx.redactor.scrub(describe_error(exc)))
        result = _coerce(value, time.perf_counter() - started)
        return result

    async def aclose(self) -> None:
        if self._close is None:
            return
        try:
            out = self._close()
            if inspect.isawaitable(out):
                await asyncio.wait_for(out, timeout=1.0)
        except Exception:
            pass
