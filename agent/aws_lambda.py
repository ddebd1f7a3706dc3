"""AWS Lambda: ``@pulsetrace.lambda_handler`` and the ``AWS_LAMBDA_EXEC_WRAPPER`` handler.

What a Lambda sandbox needs that a long-lived service does not:

* **Once per sandbox**: the agent starts when the handler is decorated (the init phase), with
  Lambda's defaults where the configuration says nothing (:func:`lambda_config`): spans to the
  X-Ray daemon Lambda runs beside the function (``xray-udp``, ``AWS_XRAY_DAEMON_ADDRESS``),
  metrics as EMF on stdout (Lambda ships stdout to CloudWatch Logs, which extracts the metrics: no
  API calls), a local store only under ``/tmp``, ``service.name`` the function's name, and the
  ``aws_lambda`` resource (so the X-Ray ``origin`` is ``AWS::Lambda::Function``). No probe runs:
  :func:`pulsetrace.check` runs them on demand (a scheduled health-check function).
* **Per invocation**: one SERVER span, child of Lambda's own segment when the function has active
  tracing (``_X_AMZN_TRACE_ID``: its trace id, its parent segment and its sampling decision, which
  the sampler follows), with ``faas.coldstart`` (true on the sandbox's first invocation only),
  ``faas.invocation_id``, ``faas.trigger`` and ``aws.lambda.trigger`` (api-gateway, alb,
  function-url, sqs, sns, eventbridge, schedule, s3, dynamodb), the HTTP fields of an HTTP event
  and the business operation when one is given. Then, before the handler's answer goes back to
  Lambda (after which the sandbox may freeze), spans and metrics are flushed within a bounded
  time (``flush_timeout``, and never past the invocation's own deadline).
* **Never the cause of a failure**: telemetry errors are swallowed; an exception from the handler
  is recorded as a fault and re-raised unchanged (the same object, the same traceback).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from pulsetrace.config.schema import Config

__all__ = ["lambda_config", "lambda_handler", "trigger_attributes"]

_log = logging.getLogger("pulsetrace.aws_lambda")

F = TypeVar("F", bound=Callable[..., Any])

#: Where ``AWS_LAMBDA_EXEC_WRAPPER`` keeps the function's own handler (``module.function``).
ORIGINAL_HANDLER_ENV = "PULSETRACE_ORIGINAL_HANDLER"
#: Time kept back from the invocation's deadline: the flush never makes the function time out.
DEADLINE_MARGIN_S = 0.05

_state_lock = threading.Lock()
_invocations = 0


def lambda_config(cfg: Config, env: Mapping[str, str] | None = None) -> Config:
    """``cfg`` with Lambda's defaults where the configuration file did not decide."""
    env = os.environ if env is None else env
    function = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
    tracing, metrics, store = cfg.tracing, cfg.metrics, cfg.store
    if not cfg.source:  # no configuration file: the defaults a Lambda function wants
        tracing = dataclasses.replace(tracing, exporters=["xray-udp"])
        metrics = dataclasses.replace(metrics, cloudwatch=dataclasses.replace(
            metrics.cloudwatch, mode="emf", emf_output="stdout"))
    if "local" in tracing.exporters and not os.path.isabs(store.path):
        store = dataclasses.replace(store, path=os.path.join("/tmp", store.path))  # the one writable place
    if metrics.cloudwatch.mode != "off" and (metrics.cloudwatch.mode == "api"
                                             or not metrics.cloudwatch.emf_output.startswith("file:")):
        # No API calls from a function (a PutMetricData per invocation costs its latency) and no
        # CloudWatch agent beside it: EMF on stdout, which Lambda already ships to CloudWatch Logs.
        metrics = dataclasses.replace(metrics, cloudwatch=dataclasses.replace(
            metrics.cloudwatch, mode="emf", emf_output="stdout"))
    service = cfg.service
    if function and service.name == "unknown_service":
        service = dataclasses.replace(service, name=function)
    resource = {
        "cloud.provider": "aws", "cloud.platform": "aws_lambda", "cloud.region": env.get("AWS_REGION", ""),
        "faas.name": function, "faas.version": env.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
        "faas.instance": env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        "faas.max_memory": str(int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0") or 0) * 1024 * 1024),
    }
    resource = {k: v for k, v in resource.items() if v and v != "0"}
    resource.update(cfg.resource_attributes)
    return dataclasses.replace(cfg, service=service, tracing=tracing, metrics=metrics, store=store,
                               health=dataclasses.replace(cfg.health, enabled=False),
                               resource_attributes=resource)


def _start_agent(config_path: str | None) -> Any:
    """The running agent, started with Lambda's defaults if it is not; ``None`` if it cannot start."""
    from pulsetrace import runtime

    agent = runtime.current()
    if agent is not None:
        return agent
    try:
        from pulsetrace.validation import load_config

        return runtime.start(config=lambda_config(load_config(config_path)))
    except Exception as exc:  # a bad configuration must not take the function down: run it untraced
        _log.error("pulsetrace: not tracing this function: %s", exc)
        return None


def _first(event: Any) -> Mapping[str, Any]:
    records = event.get("Records") if isinstance(event, Mapping) else None
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        return records[0]
    return {}


def trigger_attributes(event: Any) -> dict[str, Any]:
    """``faas.trigger``, ``aws.lambda.trigger`` and what the event says about its source."""
    if not isinstance(event, Mapping):
        return {"faas.trigger": "other"}
    ctx = event.get("requestContext")
    if isinstance(ctx, Mapping):
        http = ctx.get("http")
        if isinstance(http, Mapping):  # HTTP API (payload 2.0) or a function URL
            source = "function-url" if str(ctx.get("domainName", "")).find(".lambda-url.") > 0 else "api-gateway"
            route: Any = event.get("routeKey") if source == "api-gateway" else None
            return _http(source, http.get("method"), http.get("path") or event.get("rawPath"),
                         route.split(" ", 1)[-1] if isinstance(route, str) and route != "$default" else None)
        if "elb" in ctx:
            return _http("alb", event.get("httpMethod"), event.get("path"), None)
        if "httpMethod" in event or "resourcePath" in ctx:  # REST API (payload 1.0)
            return _http("api-gateway", event.get("httpMethod"), event.get("path"), event.get("resource"))
    record = _first(event)
    event_source = record.get("eventSource") or record.get("EventSource")
    if event_source == "aws:sqs":
        arn = str(record.get("eventSourceARN", ""))
        return {"faas.trigger": "pubsub", "aws.lambda.trigger": "sqs", "messaging.system": "aws_sqs",
                "messaging.operation.type": "process", "messaging.destination.name": arn.rsplit(":", 1)[-1],
                "messaging.batch.message_count": len(event["Records"])}
    if event_source == "aws:sns":
        arn = str((record.get("Sns") or {}).get("TopicArn", ""))
        return {"faas.trigger": "pubsub", "aws.lambda.trigger": "sns", "messaging.system": "aws_sns",
                "messaging.operation.type": "process", "messaging.destination.name": arn.rsplit(":", 1)[-1]}
    if event_source in ("aws:s3", "aws:dynamodb", "aws:kinesis"):
        return {"faas.trigger": "datasource", "aws.lambda.trigger": str(event_source)[4:]}
    if "detail-type" in event and "source" in event:
        if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
            return {"faas.trigger": "timer", "aws.lambda.trigger": "schedule"}
        return {"faas.trigger": "pubsub", "aws.lambda.trigger": "eventbridge",
                "aws.eventbridge.source": str(event.get("source")), "aws.eventbridge.detail_type":
                    str(event.get("detail-type"))}
    return {"faas.trigger": "other"}


def _http(source: str, method: Any, path: Any, route: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"faas.trigger": "http", "aws.lambda.trigger": source}
    if isinstance(method, str):
        attrs["http.request.method"] = method.upper()
    if isinstance(path, str):
        attrs["url.path"] = path
    if isinstance(route, str) and route:
        attrs["http.route"] = route
    return attrs


def _parent_context(env: Mapping[str, str]) -> Any:
    """Lambda's own segment as the remote parent, from ``_X_AMZN_TRACE_ID`` (active tracing)."""
    header = env.get("_X_AMZN_TRACE_ID")
    if not header:
        return None
    from opentelemetry.propagators.aws import AwsXRayPropagator

    return AwsXRayPropagator().extract({"X-Amzn-Trace-Id": header})


def _deadline_budget(context: Any, flush_timeout: float) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    try:
        left = remaining() / 1000.0 - DEADLINE_MARGIN_S if callable(remaining) else flush_timeout
    except Exception:
        left = flush_timeout
    return max(0.0, min(flush_timeout, left))


class _Invocation:
    """The telemetry of one invocation; every method swallows its own errors."""

    def __init__(self, agent: Any, name: str, operation: str | None, tier: str | None) -> None:
        self.agent = agent
        self.name = name
        self.operation = operation
        self.tier = tier
        self.span: Any = None
        self.token: Any = None
        self.start = time.perf_counter()
        self.status = 0

    def begin(self, event: Any, context: Any) -> None:
        global _invocations
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        with _state_lock:
            cold = _invocations == 0
            _invocations += 1
        attrs: dict[str, Any] = {"faas.coldstart": cold, **trigger_attributes(event)}
        request_id = getattr(context, "aws_request_id", None)
        if request_id:
            attrs["faas.invocation_id"] = str(request_id)
        arn = getattr(context, "invoked_function_arn", None)
        if arn:
            attrs["cloud.resource_id"] = str(arn)
            attrs["cloud.account.id"] = str(arn).split(":")[4] if str(arn).count(":") >= 5 else ""
        if self.operation:
            attrs["business.operation"] = self.operation
        if self.tier:
            attrs["business.tier"] = self.tier
        parent = _parent_context(os.environ)
        tracer = self.agent.tracer("pulsetrace.aws_lambda")
        self.span = tracer.start_span(self.name, context=parent, kind=trace.SpanKind.SERVER,
                                      attributes={k: v for k, v in attrs.items() if v != ""})
        self.token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def succeeded(self, result: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        status = result.get("statusCode") if isinstance(result, Mapping) else None
        if isinstance(status, int) and not isinstance(status, bool):
            self.status = status
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR))

    def failed(self, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.record_exception(exc, escaped=True)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))

    def end(self, context: Any, fault: bool, flush_timeout: float) -> None:
        from opentelemetry import context as otel_context

        from pulsetrace.instrumentation import hooks

        latency_ms = (time.perf_counter() - self.start) * 1000.0
        if self.token is not None:
            otel_context.detach(self.token)
        if self.span is not None:
            self.span.end()
        recorder = hooks.recorder
        if recorder is not None:
            fault = fault or self.status >= 500
            recorder.record(self.operation or self.name, self.tier or "", latency_ms,
                            error=fault or 400 <= self.status < 500, fault=fault, status=self.status)
        deadline = time.monotonic() + _deadline_budget(context, flush_timeout)
        # Spans first (the trace is what an invocation is looked up by), then the metrics.
        self.agent.provider.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000))
        if self.agent.recorder is not None:
            self.agent.recorder.flush(max(0.0, deadline - time.monotonic()))


def _safely(what: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        _log.debug("pulsetrace: %s failed", what, exc_info=True)


@overload
def lambda_handler(fn: F, /) -> F: ...


@overload
def lambda_handler(*, operation: str | None = None, tier: str | None = None, flush_timeout: float = 2.0,
                   config_path: str | None = None) -> Callable[[F], F]: ...


def lambda_handler(fn: Any = None, /, *, operation: str | None = None, tier: str | None = None,
                   flush_timeout: float = 2.0, config_path: str | None = None) -> Any:
    """Trace a Lambda handler ``(event, context)``: ``@lambda_handler`` or ``@lambda_handler(operation=...)``.

    ``operation``/``tier`` make each invocation a business operation (``business.operation``,
    ``business.tier``: the tier's sampling applies when Lambda has not decided). ``flush_timeout``
    bounds the flush at the end of each invocation (never past the invocation's deadline).
    """
    if fn is None:
        return functools.partial(lambda_handler, operation=operation, tier=tier, flush_timeout=flush_timeout,
                                 config_path=config_path)
    if getattr(fn, "_pulsetrace_lambda", False):
        return fn  # already traced (decorated, and named by the exec wrapper too)
    agent = _start_agent(config_path)
    name = str(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or getattr(fn, "__name__", "handler"))

    @functools.wraps(fn)
    def traced(event: Any, context: Any) -> Any:
        if agent is None:
            return fn(event, context)
        inv = _Invocation(agent, name, operation, tier)
        _safely("starting the invocation span", inv.begin, event, context)
        fault = False
        try:
            result = fn(event, context)
        except BaseException as exc:
            fault = True
            if inv.span is not None:
                _safely("recording the exception", inv.failed, exc)
            raise
        else:
            if inv.span is not None:
                _safely("recording the result", inv.succeeded, result)
            return result
        finally:
            _safely("ending the invocation", inv.end, context, fault, flush_timeout)

    traced._pulsetrace_lambda = True  # type: ignore[attr-defined]
    return traced


def _original_handler() -> Callable[..., Any]:
    """The function's own handler named in ``PULSETRACE_ORIGINAL_HANDLER`` (``path/module.function``)."""
    spec = os.environ.get(ORIGINAL_HANDLER_ENV, "")
    module_name, _, function = spec.rpartition(".")
    if not module_name or not function:
        raise RuntimeError(f"{ORIGINAL_HANDLER_ENV}={spec!r} is not a module.function handler")
    module = importlib.import_module(module_name.replace("/", "."))
    handler: Callable[..., Any] = getattr(module, function)
    return handler


_wrapped: Callable[..., Any] | None = None


def __getattr__(name: str) -> Any:
    # ``_HANDLER=pulsetrace.aws_lambda.handler`` (set by the exec wrapper): the runtime looks this
    # attribute up in its init phase; the function's own handler is imported and wrapped then.
    global _wrapped
    if name != "handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _wrapped is None:
        _wrapped = lambda_handler(_original_handler())
    return _wrapped
