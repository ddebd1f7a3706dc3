"""The typed configuration model: frozen dataclasses, one per YAML section.

The field names are the YAML keys of docs/configuration.md. Constraints a value
must meet live in each field's ``metadata`` (``min``, ``max``, ``secret``,
``choices``) so that the one validator in :mod:`pulsetrace.config.build` can report
every problem in one pass. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pulsetrace.config.fields import Duration as Duration
from pulsetrace.config.fields import _c
from pulsetrace.config.schema_alerts import ALERT_MATCH_KEYS as ALERT_MATCH_KEYS
from pulsetrace.config.schema_alerts import ALERT_SEVERITIES as ALERT_SEVERITIES
from pulsetrace.config.schema_alerts import AlertChannelConfig as AlertChannelConfig
from pulsetrace.config.schema_alerts import AlertRouteConfig as AlertRouteConfig
from pulsetrace.config.schema_alerts import AlertsConfig as AlertsConfig
from pulsetrace.config.schema_alerts import SilenceConfig as SilenceConfig
from pulsetrace.config.schema_aws import AlbResource as AlbResource
from pulsetrace.config.schema_aws import ApiGatewayResource as ApiGatewayResource
from pulsetrace.config.schema_aws import AwsResourcesConfig as AwsResourcesConfig
from pulsetrace.config.schema_aws import EcsResource as EcsResource
from pulsetrace.config.schema_aws import ElastiCacheResource as ElastiCacheResource
from pulsetrace.config.schema_aws import LambdaResource as LambdaResource
from pulsetrace.config.schema_aws import RdsResource as RdsResource

TIER_NAMES: tuple[str, ...] = ("critical", "business", "general", "health")
# Exporter names, probe types and instrumentation names are not listed here: they are the keys
# of their registries (pulsetrace.exporters, pulsetrace.healthchecks.registry,
# pulsetrace.instrumentation.auto), which sit above this layer. Fields refer to them by the
# name of the set (``choices="exporter"``); pulsetrace.validation supplies the sets.


@dataclass(frozen=True)
class ServiceConfig:
    name: str = "unknown_service"
    environment: str = "default"
    version: str = "0.0.0"


@dataclass(frozen=True)
class StoreConfig:
    path: str = ".pulsetrace"
    retention: Duration = field(default=7 * 86400.0, metadata=_c(min=60.0, max=3650 * 86400.0))
    max_mb: float = field(default=512.0, metadata=_c(min=1.0, max=1024.0 * 1024.0))


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str = field(default="http://127.0.0.1:4318", metadata=_c(secret=True))
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict, metadata=_c(secret=True))
    timeout: Duration = field(default=2.0, metadata=_c(min=0.05, max=60.0))


@dataclass(frozen=True)
class XRayConfig:
    daemon_address: str = "127.0.0.1:2000"
    region: str = ""
    endpoint_url: str = ""


@dataclass(frozen=True)
class InstrumentationsConfig:
    disabled: list[str] = field(default_factory=list, metadata=_c(choices="instrumentation"))
    #: Instrumentations that must be present: a missing library is then a config error.
    required: list[str] = field(default_factory=list, metadata=_c(choices="instrumentation"))
    #: Record the upstream ASGI per-message ``http send``/``http receive`` spans (noisy, off).
    asgi_message_spans: bool = False


@dataclass(frozen=True)
class TierConfig:
    rate: float = field(default=0.2, metadata=_c(min=0.0, max=1.0))
    reservoir: float = field(default=1.0, metadata=_c(min=0.0))


def _default_tiers() -> dict[str, TierConfig]:
    return {
        "critical": TierConfig(rate=0.5, reservoir=1.0),
        "business": TierConfig(rate=0.3, reservoir=1.0),
        "general": TierConfig(rate=0.2, reservoir=1.0),
        "health": TierConfig(rate=0.01, reservoir=0.0),
    }


@dataclass(frozen=True)
class RuleConfig:
    tier: str = field(default="general", metadata=_c(choices=TIER_NAMES))
    path: str = ""
    method: str = ""
    host: str = ""
    name: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


def _default_rules() -> list[RuleConfig]:
    return [
        RuleConfig(tier="health", path="/health*"),
        RuleConfig(tier="critical", path="/payments*"),
        RuleConfig(tier="critical", path="/login*"),
        RuleConfig(tier="critical", path="/auth*"),
        RuleConfig(tier="business", path="/orders*"),
        RuleConfig(tier="business", path="/rfid*"),
    ]


@dataclass(frozen=True)
class XRayRemoteConfig:
    """X-Ray centralized sampling (``pulsetrace.tracing.xray_remote``); off while ``endpoint`` is empty."""

    #: The X-Ray daemon's or an ADOT collector's sampling proxy (``http://127.0.0.1:2000``), or the
    #: X-Ray API (``https://xray.REGION.amazonaws.com``, signed with the usual AWS credentials).
    endpoint: str = ""
    #: How often the rules are fetched (``GetSamplingRules``).
    poll: Duration = field(default=300.0, metadata=_c(min=1.0, max=86400.0))
    #: How often the statistics are reported and reservoir quotas fetched (``GetSamplingTargets``).
    targets_poll: Duration = field(default=10.0, metadata=_c(min=0.5, max=3600.0))
    #: With no successful exchange for this long, the remote rules stop deciding and the local
    #: tiers, rules and rules file decide again, until the endpoint answers.
    fallback_after: Duration = field(default=60.0, metadata=_c(min=1.0, max=86400.0))
    #: Let X-Ray's own ``Default`` rule (which matches everything) decide what no other remote
    #: rule matches. Off: the local tiers decide it, and only named remote rules override them.
    use_default_rule: bool = False
    #: Sign requests with AWS credentials (SigV4). ``auto``: only for ``*.amazonaws.com``.
    sign: Literal["auto", "always", "never"] = "auto"
    #: Timeout of one request to the endpoint.
    timeout: Duration = field(default=2.0, metadata=_c(min=0.05, max=60.0))


@dataclass(frozen=True)
class SamplingConfig:
    default_tier: str = field(default="general", metadata=_c(choices=TIER_NAMES))
    tiers: dict[str, TierConfig] = field(default_factory=_default_tiers, metadata=_c(keys=TIER_NAMES))
    rules: list[RuleConfig] = field(default_factory=_default_rules)
    #: Path to an AWS X-Ray local sampling-rules JSON document (version 2), used after ``rules``.
    xray_rules_file: str = ""
    keep_errors: bool = True
    slow_ms: float = field(default=2000.0, metadata=_c(min=0.0))
    #: Bounds of the keep-errors buffer.
    max_pending_traces: int = field(default=2048, metadata=_c(min=1, max=1_000_000))
    max_spans_per_trace: int = field(default=256, metadata=_c(min=1, max=100_000))
    #: X-Ray centralized sampling rules and reservoir quotas (off unless ``endpoint`` is set).
    xray_remote: XRayRemoteConfig = field(default_factory=XRayRemoteConfig)


@dataclass(frozen=True)
class BusinessConfig:
    annotations: list[str] = field(default_factory=lambda: ["payment.method", "school.id", "business.operation",
                                                            "business.outcome", "sampling.tier"])


@dataclass(frozen=True)
class PiiConfig:
    hash_keys: list[str] = field(default_factory=list)
    hash_secret: str = field(default="", metadata=_c(secret=True))
    #: Extra attribute-key fragments whose values are always redacted.
    secret_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TracingConfig:
    exporters: list[str] = field(default_factory=lambda: ["local"], metadata=_c(choices="exporter"))
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    xray: XRayConfig = field(default_factory=XRayConfig)
    instrumentations: InstrumentationsConfig = field(default_factory=InstrumentationsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    business: BusinessConfig = field(default_factory=BusinessConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    #: Bounded export queue (spans); a full queue drops and counts.
    queue_size: int = field(default=4096, metadata=_c(min=16, max=1_000_000))
    batch_size: int = field(default=256, metadata=_c(min=1, max=100_000))
    export_interval: Duration = field(default=1.0, metadata=_c(min=0.01, max=60.0))
    #: How long ``shutdown`` may wait for the last export, in total.
    shutdown_timeout: Duration = field(default=1.5, metadata=_c(min=0.0, max=30.0))
    #: Add ``X-Amzn-Trace-Id`` and ``traceresponse`` to every HTTP response of the server middleware.
    response_header: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    #: ``trace_id``, ``span_id``, ``xray_trace_id`` and ``service`` on every ``logging`` record.
    correlation: bool = True
    #: ``json``: the root logger's handlers write one JSON object per record, PII scrubbed.
    format: Literal["plain", "json"] = "plain"


@dataclass(frozen=True)
class ImpactConfig:
    revenue_per_minute: float = field(default=0.0, metadata=_c(min=0.0))
    users: int = field(default=0, metadata=_c(min=0))
    capabilities: list[str] = field(default_factory=list)
    #: Share of the impact that counts while DEGRADED (DOWN counts fully). 0 unless declared: slow is not
    #: lost revenue unless the probe says so (a cold-start DEGRADED at 100 % availability risks nothing).
    degraded_weight: float = field(default=0.0, metadata=_c(min=0.0, max=1.0))


@dataclass(frozen=True)
class ProbeConfig:
    """One probe. Common keys first; the rest are read by the probe type named in ``type``.

    ``thresholds`` keys per type (all optional): postgres ``connect_ms``, ``query_ms``,
    ``replay_lag_s``; redis ``ping_ms``, ``memory_ratio``, ``hit_ratio``, ``evictions``; http
    ``latency_ms``; rfid ``degraded_ratio``, ``down_ratio``, ``min_readers``; passive
    ``success_rate``, ``degraded_rate`` (percent). See docs/health.md.
    """

    name: str
    type: str = field(default="custom", metadata=_c(choices="probe_type"))
    interval: Duration = field(default=15.0, metadata=_c(min=0.05, max=86400.0))
    timeout: Duration = field(default=2.0, metadata=_c(min=0.01, max=3600.0))
    jitter: float = field(default=0.1, metadata=_c(min=0.0, max=0.5))
    critical: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    sla: float = field(default=99.9, metadata=_c(min=0.0, max=100.0))
    impact: ImpactConfig = field(default_factory=ImpactConfig)
    failure_threshold: int | None = field(default=None, metadata=_c(min=1, max=1000))
    success_threshold: int | None = field(default=None, metadata=_c(min=1, max=1000))
    # postgres
    dsn: str = field(default="", metadata=_c(secret=True))
    check_replica: bool = False
    # redis / http
    url: str = field(default="", metadata=_c(secret=True))
    # http
    method: str = field(default="GET", metadata=_c(choices=("GET", "HEAD", "POST", "PUT", "OPTIONS")))
    headers: dict[str, str] = field(default_factory=dict, metadata=_c(secret=True))
    expect_status: list[int] = field(default_factory=lambda: [200], metadata=_c(min=100, max=599))
    json_condition: str = ""
    cert_expiry_days: float = field(default=14.0, metadata=_c(min=0.0))
    preset: str = field(default="", metadata=_c(choices=("", "razorpay")))
    verify_tls: bool = True
    #: A PEM CA bundle to trust for this probe (a private CA), in addition to nothing else.
    ca_file: str = ""
    #: HTTP basic auth (the razorpay preset: key id and key secret; from
    #: ``RAZORPAY_KEY_ID`` / ``RAZORPAY_KEY_SECRET`` when empty).
    username: str = field(default="", metadata=_c(secret=True))
    password: str = field(default="", metadata=_c(secret=True))
    # rfid
    source: dict[str, str] = field(default_factory=dict, metadata=_c(secret=True))
    max_age: Duration = field(default=60.0, metadata=_c(min=0.1))
    # passive
    operation: str = ""
    window: Duration = field(default=300.0, metadata=_c(min=1.0))
    min_samples: int = field(default=20, metadata=_c(min=1))
    # custom
    target: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthConfig:
    listen: str = "127.0.0.1:8081"
    token: str = field(default="", metadata=_c(secret=True))
    failure_threshold: int = field(default=2, metadata=_c(min=1, max=1000))
    success_threshold: int = field(default=2, metadata=_c(min=1, max=1000))
    probes: list[ProbeConfig] = field(default_factory=list)
    enabled: bool = True
    #: SLA: whether DEGRADED time counts as available (it does by default: slow is not down).
    degraded_is_available: bool = True
    #: Burn-rate guard: fewer probe results than this in the long window give no burn rate.
    burn_min_samples: int = field(default=12, metadata=_c(min=1))
    #: Burn-rate guard: an alert needs at least this many failed results in the long window.
    burn_min_failures: int = field(default=3, metadata=_c(min=1))
    #: The snapshot is stale (``/health`` 503) when older than this many longest intervals.
    stale_factor: float = field(default=3.0, metadata=_c(min=1.0, max=100.0))
    #: Health server: open connections at most. A new connection past it takes the place of the one idle
    #: longest (or, when none is idle, is answered 503), so held connections never lock the ALB out.
    max_connections: int = field(default=512, metadata=_c(min=1, max=100_000))
    #: Health server: open connections per client address at most; a client past it loses its own
    #: longest-idle connection first.
    max_connections_per_client: int = field(default=64, metadata=_c(min=1, max=100_000))
    #: Health server: time to send a whole request head (not reset by each byte: no slowloris).
    header_timeout: Duration = field(default=5.0, metadata=_c(min=0.05, max=300.0))
    #: Health server: a keep-alive connection with no request for this long is closed.
    idle_timeout: Duration = field(default=30.0, metadata=_c(min=0.05, max=3600.0))
    #: Health server: largest request body (RFID heartbeats), bytes.
    max_body: int = field(default=65536, metadata=_c(min=1024, max=16 * 1024 * 1024))
    #: After start, DEGRADED results (cold connections, caches warming up) are shown but not counted in the
    #: SLA or revenue at risk, and a probe with nothing to judge yet (a reader fleet before its first
    #: heartbeat) reports UNKNOWN at least this long. DOWN always counts.
    startup_grace: Duration = field(default=30.0, metadata=_c(min=0.0, max=86400.0))
    #: RFID heartbeats pushed to ``/rfid/heartbeat``: readers remembered at most (the longest unheard go first).
    max_readers: int = field(default=10_000, metadata=_c(min=1, max=1_000_000))


@dataclass(frozen=True)
class CloudWatchConfig:
    """CloudWatch metrics (``pulsetrace.metrics.publisher``) and alarms/dashboards (``pulsetrace.metrics.render``)."""

    mode: Literal["emf", "api", "off"] = "off"
    namespace: str = "PulseTrace"
    emf_output: str = "stdout"
    interval: Duration = field(default=60.0, metadata=_c(min=1.0, max=3600.0))
    region: str = ""
    endpoint_url: str = ""
    #: Metric data held for a later attempt while the destination is unreachable; the oldest go first.
    max_buffer: int = field(default=20000, metadata=_c(min=100, max=1_000_000))
    #: I/O timeout of one send (TCP/UDP EMF, one PutMetricData call).
    timeout: Duration = field(default=2.0, metadata=_c(min=0.05, max=60.0))
    #: CloudWatch Logs group named in EMF documents sent to the CloudWatch agent (tcp/udp);
    #: empty: ``<service>-metrics``.
    log_group: str = ""
    #: Distinct ``Operation`` values per process and per budget (routes; business operations); later ones
    #: are folded into ``other`` (and counted). The ``operations`` listed are always kept.
    max_operations: int = field(default=200, metadata=_c(min=1, max=10_000))
    #: Business operations shown on the dashboard (routes are found by a SEARCH expression).
    operations: list[str] = field(default_factory=lambda: ["payment.create", "order.create", "rfid.verify",
                                                           "auth.login"])
    #: Operation → failure rate (percent of requests that are errors or faults) that raises an alarm.
    failure_alarms: dict[str, float] = field(default_factory=lambda: {"payment.create": 5.0},
                                             metadata=_c(min=0.0, max=100.0))
    #: Fewer requests than this in the alarm period never raise a failure-rate alarm.
    failure_min_requests: int = field(default=20, metadata=_c(min=1))
    #: Prefix of alarm, dashboard and SNS topic names.
    alarm_prefix: str = "pulsetrace"
    #: Operation → latency (milliseconds, at ``latency_percentile``) that raises an alarm.
    latency_alarms: dict[str, float] = field(default_factory=dict, metadata=_c(min=0.001))
    #: The percentile the latency alarms watch (``p50`` … ``p99.9``).
    latency_percentile: str = "p99"
    #: Every metric alarm's period, and how many of the last ``evaluation_periods`` must breach.
    alarm_period: Duration = field(default=60.0, metadata=_c(min=10.0, max=86400.0))
    evaluation_periods: int = field(default=5, metadata=_c(min=1, max=100))
    datapoints_to_alarm: int = field(default=3, metadata=_c(min=1, max=100))
    #: Service-wide fault rate (percent of requests that are faults, 5xx) over 5 minutes; 0: no alarm.
    fault_rate_alarm: float = field(default=5.0, metadata=_c(min=0.0, max=100.0))
    #: Service-wide faults (5xx) in 5 minutes above this raise an alarm; 0: no alarm.
    fault_count_alarm: int = field(default=50, metadata=_c(min=0))
    #: Operation → errors + faults in 5 minutes above which an alarm is raised ("> 10 payment errors").
    error_count_alarms: dict[str, int] = field(default_factory=dict, metadata=_c(min=1))
    #: A runbook link put into every alarm's description; ``{alarm}`` is replaced by the alarm's name.
    runbook_url: str = ""
    #: Runbook links for one probe, operation, business area or alarm (by name), ahead of ``runbook_url``.
    runbooks: dict[str, str] = field(default_factory=dict)
    #: ``HealthScore`` (0-100) below this raises a critical alarm; 0: no alarm.
    health_score_alarm: float = field(default=85.0, metadata=_c(min=0.0, max=100.0))
    #: Business area → the probes and operations in it, one composite alarm each ("payment system").
    #: Empty: an area per first word of the alarmed business operations (``payment.create`` → ``payment``),
    #: with the probes whose names start with that word.
    areas: dict[str, list[str]] = field(default_factory=dict)
    #: Business metrics (``pulsetrace.metric``): distinct metric names per process (more are dropped,
    #: counted) and distinct values per metric and dimension (more are folded into ``other``, counted).
    max_metrics: int = field(default=100, metadata=_c(min=1, max=10_000))
    max_dimension_values: int = field(default=50, metadata=_c(min=1, max=10_000))
    #: Business metrics graphed by name (their Sum) on the service and executive dashboards; every other
    #: business metric is found by a SEARCH widget.
    dashboard_metrics: list[str] = field(default_factory=lambda: ["Revenue"])


@dataclass(frozen=True)
class MetricsConfig:
    cloudwatch: CloudWatchConfig = field(default_factory=CloudWatchConfig)
    aws_resources: AwsResourcesConfig = field(default_factory=AwsResourcesConfig)


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: Resource attributes from ``OTEL_RESOURCE_ATTRIBUTES`` (key=value pairs).
    resource_attributes: dict[str, str] = field(default_factory=dict)
    #: Where this configuration came from (a path, or ``""`` for all defaults). Not a YAML key.
    source: str = field(default="", metadata=_c(internal=True))
