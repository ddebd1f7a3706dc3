"""The one process-wide object: the configured agent.

:func:`start` loads the configuration, builds the tracer provider (X-Ray-compatible
ids, tiered sampler, the span pipeline and its exporters), installs the propagators
(W3C ``traceparent`` + baggage + ``X-Amzn-Trace-Id``) and activates the
instrumentations for the libraries that are installed. :func:`shutdown` undoes all
of it within its timeout. Importing this module does nothing.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulsetrace.config.load import Config
from pulsetrace.instrumentation import hooks
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import load_config

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from pulsetrace.healthchecks.snapshot import HealthSnapshot

    from pulsetrace.metrics.business import BusinessMetrics
    from pulsetrace.metrics.live import LiveTotalsWriter
    from pulsetrace.metrics.request_metrics import Recorder
    from pulsetrace.tracing.pipeline import SpanPipeline
    from pulsetrace.tracing.xray_remote_poller import SamplingPoller

_log = logging.getLogger("pulsetrace")
_lock = threading.Lock()
_AGENT: Agent | None = None
_STOPPED_PROVIDER: object = None
_ATEXIT_REGISTERED = False


@dataclass
class Agent:
    config: Config
    metrics: SelfMetrics
    provider: TracerProvider
    pipeline: SpanPipeline
    #: Per-request operation metrics (CloudWatch); ``None`` when metrics are off.
    recorder: Recorder | None = None
    #: Business metrics (``pulsetrace.metric``/``count``), flushed with the request metrics; ``None`` when off.
    business_metrics: BusinessMetrics | None = None
    instrumented: list[str] = field(default_factory=list)
    role: str = "app"
    #: Under ``pulsetrace run``: this process's totals for the supervisor's ``/metrics``; ``None`` otherwise.
    live_writer: LiveTotalsWriter | None = None
    #: Keeps the X-Ray centralized sampling rules fresh; ``None`` when ``xray_remote`` is off.
    sampling_poller: SamplingPoller | None = None
    #: Undoes the ``logging`` changes (record fields, JSON formatter), last made first.
    logging_undo: list[Callable[[], None]] = field(default_factory=list)

    def tracer(self, name: str = "pulsetrace") -> Any:
        return self.provider.get_tracer(name)


def current() -> Agent | None:
    """The running agent, or ``None``."""
    return _AGENT


#: Bounds on what one span may hold, so a huge attribute (a request body logged by mistake, a
#: fuzzer) costs bounded memory in the queue and the keep-errors buffer and bounded time in the
#: scrubber. 8 KiB for span attributes (long SQL); 16 KiB for event attributes, where the end of
#: ``exception.stacktrace`` holds the innermost frames (the scrubber cuts at 16 KiB too).
SPAN_LIMITS = {"max_span_attribute_length": 8192, "max_attribute_length": 16384, "max_attributes": 128,
               "max_events": 64, "max_event_attributes": 32, "max_links": 32, "max_link_attributes": 32}


def build_agent(cfg: Config, role: str = "app") -> Agent:
    """Build (but do not install globally) an agent for ``cfg``."""
    from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
    from opentelemetry.sdk.trace import SpanLimits

    from pulsetrace.exporters import build_exporter
    from pulsetrace.exporters.base import ExporterContext
    from pulsetrace.instrumentation.keep_errors import build_keep_errors
    from pulsetrace.instrumentation.pii import build_scrubber
    from pulsetrace.store import CounterWriter
    from pulsetrace.tracing.pipeline import SpanPipeline
    from pulsetrace.tracing.provider import ForkSafeTracerProvider
    from pulsetrace.tracing.resource import build_resource
    from pulsetrace.tracing.sampling import build_sampler
    from pulsetrace.tracing.xray_remote_poller import build_remote_sampling

    metrics = SelfMetrics()
    ctx = ExporterContext(cfg, metrics)
    exporters = []
    for name in dict.fromkeys(cfg.tracing.exporters):
        exporters.append(build_exporter(name, ctx))
    recorder = None
    if cfg.metrics.cloudwatch.mode != "off":
        # Request metrics come from the middleware and business spans for every request, sampled or
        # not; the pipeline's span hooks would only see the recorded ones, so none is added here.
        from pulsetrace.metrics.request_metrics import build_recorder

        recorder = build_recorder(cfg, metrics)
    elif role == "worker" and cfg.health.enabled:
        # No CloudWatch, but under ``pulsetrace run`` the supervisor's /metrics shows the requests:
        # count them in memory, for the live totals only (bounded by the operation budgets).
        from pulsetrace.metrics.request_metrics import Recorder

        recorder = Recorder(cfg, metrics)
    business_metrics = None
    if recorder is not None:
        from pulsetrace.metrics.business import BusinessMetrics

        # Same publisher: each process (every worker under ``pulsetrace run``) flushes its own.
        business_metrics = BusinessMetrics(cfg, metrics, recorder.publisher)
    pipeline = SpanPipeline(
        exporters,
        metrics,
        queue_size=cfg.tracing.queue_size,
        batch_size=cfg.tracing.batch_size,
        interval=cfg.tracing.export_interval,
        scrubber=build_scrubber(cfg, metrics),  # enriches database spans, then scrubs, in one copy
        unsampled_hook=build_keep_errors(cfg, metrics),
        # exported/dropped counters reach the store (pulsetrace status) whichever exporters run
        counter_sink=CounterWriter(cfg.store.path, metrics, retention_s=cfg.store.retention),
    )
    remote = build_remote_sampling(cfg, metrics)
    provider = ForkSafeTracerProvider(
        sampler=build_sampler(cfg, metrics, remote=remote[0] if remote is not None else None),
        resource=build_resource(cfg),
        id_generator=AwsXRayIdGenerator(),
        span_limits=SpanLimits(**SPAN_LIMITS),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(pipeline)
    return Agent(config=cfg, metrics=metrics, provider=provider, pipeline=pipeline, recorder=recorder,
                 business_metrics=business_metrics, role=role,
                 sampling_poller=remote[1] if remote is not None else None)


def install_logging(cfg: Config, provider: TracerProvider) -> list[Callable[[], None]]:
    """``logging.correlation`` and ``logging.format: json``; returns the undo calls, in the order made."""
    undo: list[Callable[[], None]] = []
    name = provider.resource.attributes.get("service.name")
    service = name if isinstance(name, str) else cfg.service.name
    try:
        if not cfg.logging.correlation and cfg.logging.format != "json":
            return undo
        from pulsetrace.instrumentation.pii import PiiScrubber

        pii = cfg.tracing.pii
        scrubber = PiiScrubber(hash_keys=pii.hash_keys, hash_secret=pii.hash_secret, secret_keys=pii.secret_keys)
        if cfg.logging.correlation:
            from pulsetrace.instrumentation.logs import install_correlation

            undo.append(install_correlation(service, scrubber))
        if cfg.logging.format == "json":
            from pulsetrace.instrumentation.logs_json import JsonFormatter, install_json

            undo.append(install_json(JsonFormatter(scrubber, service)))
    except Exception:  # the application's logging stays as it was
        _log.warning("pulsetrace: log correlation not installed", exc_info=True)
    return undo


def install_propagators() -> None:
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.aws import AwsXRayPropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagate.set_global_textmap(CompositePropagator([
        TraceContextTextMapPropagator(), W3CBaggagePropagator(), AwsXRayPropagator(),
    ]))


def start(config_path: str | None = None, *, config: Config | None = None, role: str = "app",
          instrument: bool = True) -> Agent:
    """Start the agent once per process (idempotent); raises ``ConfigError`` on a bad config."""
    global _AGENT, _ATEXIT_REGISTERED
    with _lock:
        if _AGENT is not None:
            return _AGENT
        from opentelemetry import trace

        if _STOPPED_PROVIDER is not None and trace.get_tracer_provider() is _STOPPED_PROVIDER:
            # OpenTelemetry's global provider can be set once per process; the stopped one would
            # swallow every span. Say so instead of running with a dead pipeline.
            raise RuntimeError("pulsetrace was shut down in this process and cannot start again in it")
        cfg = config if config is not None else load_config(config_path)
        agent = build_agent(cfg, role=role)
        trace.set_tracer_provider(agent.provider)
        install_propagators()
        if instrument:
            from pulsetrace.instrumentation.auto import activate

            agent.instrumented = activate(cfg, agent.provider)
        # After activation: contrib's logging instrumentor (when enabled) sets its record factory
        # first, and correlation reuses the ids it put on the record.
        agent.logging_undo = install_logging(cfg, agent.provider)
        if agent.recorder is not None:
            agent.recorder.start()
        if agent.sampling_poller is not None:
            agent.sampling_poller.start()
        if agent.recorder is not None and role == "worker":
            # under ``pulsetrace run``: the supervisor's /metrics adds up every process's totals
            from pulsetrace.metrics.live import LiveTotalsWriter, live_dir

            agent.live_writer = LiveTotalsWriter(live_dir(cfg.store.path), agent.recorder, agent.business_metrics)
            agent.live_writer.start()
        hooks.install(agent.recorder, agent.business_metrics, add_response_header=cfg.tracing.response_header)
        _AGENT = agent
        if instrument:
            from pulsetrace.announce import announce_app

            announce_app(cfg)
        if not _ATEXIT_REGISTERED:
            atexit.register(_atexit_shutdown)
            _ATEXIT_REGISTERED = True
        return agent


def _atexit_shutdown() -> None:
    agent = current()
    shutdown(timeout=agent.config.tracing.shutdown_timeout if agent is not None else 1.5)


def shutdown(timeout: float = 5.0) -> None:
    """Flush and stop within ``timeout`` seconds; undo every patch. Safe to call twice."""
    global _AGENT
    with _lock:
        agent = _AGENT
        _AGENT = None
    if agent is None:
        return
    hooks.clear()
    for undo in reversed(agent.logging_undo):
        try:
            undo()
        except Exception:
            _log.debug("logging undo failed", exc_info=True)
    deadline = time.monotonic() + timeout
    if agent.sampling_poller is not None:
        agent.sampling_poller.shutdown(min(0.2, timeout))
    if agent.live_writer is not None:
        agent.live_writer.shutdown()
    if agent.recorder is not None:
        try:
            # the final metrics flush gets up to half the budget (an API call), the spans the rest
            agent.recorder.shutdown(max(0.0, (deadline - time.monotonic()) / 2))
        except Exception:
            _log.debug("metrics shutdown failed", exc_info=True)
    agent.pipeline.shutdown(max(0.0, deadline - time.monotonic()))
    # Patches are undone after the last flush: the X-Ray SDK bridge keeps the SDK's patched libraries
    # (sqlite3, under patch_all) quiet about the local store's own writes until they are done.
    try:
        from pulsetrace.instrumentation.auto import deactivate

        deactivate()
    except Exception:
        _log.debug("deactivate failed", exc_info=True)
    global _STOPPED_PROVIDER
    _STOPPED_PROVIDER = agent.provider


async def probe_round(cfg: Config) -> HealthSnapshot:
    """One round of every probe, concurrently: the snapshot (``pulsetrace check``).

    Writes nothing to the store (passive probes only read it); starts no server.
    """
    from pulsetrace.healthchecks.service import HealthService
    from pulsetrace.store import LocalStore

    store = LocalStore(cfg.store.path, create=False)
    service = HealthService(cfg, store=store, persist=False)
    try:
        return await service.run_round()
    finally:
        await service.stop(1.0)


def check(config_path: str | None = None, *, config: Config | None = None) -> dict[str, Any]:
    """Run every configured probe once and return the details (for a scheduled health-check function,
    where no probe runs in the background). Raises ``ConfigError`` on a bad configuration."""
    import asyncio

    cfg = config if config is not None else load_config(config_path)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        details: dict[str, Any] = asyncio.run(probe_round(cfg)).to_dict()
        return details
    # Called from a coroutine: the round gets a loop of its own on another thread.
    result: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(probe_round(cfg)).to_dict()),
                              name="pulsetrace-check", daemon=True)
    worker.start()
    worker.join()
    if not result:
        raise RuntimeError("the probe round failed")
    return result[0]
