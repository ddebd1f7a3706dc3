"""collector-config/: every file parses, its pipelines use only what it defines, every component is one
the ADOT collector ships, and the sampling policies read the attributes the agent writes.

No collector binary can be installed here, so the component lists are written down below
with where they come from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulsetrace.config.schema import TIER_NAMES, Config
from pulsetrace.tracing.sampling import TIER_ATTR
from pulsetrace.instrumentation.annotations import ANNOTATIONS_ATTR
from pulsetrace.instrumentation.keep_errors import KEPT_BY_ATTR

CONFIG_DIR = Path(__file__).resolve().parents[1] / "collector-config"
FILES = ("sidecar.yaml", "gateway.yaml", "lambda.yaml")

#: Component types of the ADOT collector distribution: the factories registered in
#: aws-observability/aws-otel-collector, pkg/defaultcomponents/defaults.go (``Components()``),
#: each named by its factory's type string.
ADOT_COLLECTOR: dict[str, set[str]] = {
    "extensions": {"awsproxy", "ecs_observer", "health_check", "pprof", "sigv4auth", "zpages", "memory_ballast",
                   "file_storage"},
    "receivers": {"awsecscontainermetrics", "awscontainerinsightreceiver", "awsxray", "statsd", "prometheus",
                  "kafka", "jaeger", "zipkin", "otlp", "filelog"},
    "processors": {"groupbytrace", "tail_sampling", "attributes", "resource", "probabilistic_sampler", "span",
                   "filter", "metricstransform", "resourcedetection", "experimental_metricsgeneration",
                   "cumulativetodelta", "deltatorate", "batch", "memory_limiter", "k8sattributes"},
    "exporters": {"awsemf", "prometheusremotewrite", "prometheus", "file", "kafka", "debug", "logging", "otlp",
                  "otlphttp", "awsxray", "loadbalancing", "awscloudwatchlogs", "datadog", "logzio", "sapm",
                  "signalfx"},
}
#: The ADOT Lambda layer's reduced collector: aws-observability/aws-otel-lambda,
#: adot/collector/lambdacomponents/default.go (``Components()``).
ADOT_LAMBDA: dict[str, set[str]] = {
    "extensions": {"sigv4auth"},
    "receivers": {"otlp"},
    "processors": set(),
    "exporters": {"awsxray", "awsemf", "prometheus", "prometheusremotewrite", "logging", "otlp", "otlphttp"},
}
SHIPPED = {"sidecar.yaml": ADOT_COLLECTOR, "gateway.yaml": ADOT_COLLECTOR, "lambda.yaml": ADOT_LAMBDA}
KINDS = ("receivers", "processors", "exporters", "extensions")
#: What ``sampling.kept_by`` can hold (docs/json.md: ``kept_by`` is null, ``error`` or ``slow``).
KEPT_BY_VALUES = {"error", "slow"}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert isinstance(data, dict), name
    return data


def component_type(component_id: str) -> str:
    """``batch/traces`` → ``batch`` (the collector's ``type[/name]`` ids)."""
    return component_id.split("/", 1)[0]


@pytest.mark.parametrize("name", FILES)
def test_every_pipeline_names_only_components_defined_in_the_file(name: str) -> None:
    data = load(name)
    service = data["service"]
    pipelines = service["pipelines"]
    assert pipelines
    for pipeline_id, pipeline in pipelines.items():
        assert component_type(pipeline_id) in ("traces", "metrics", "logs"), pipeline_id
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_id
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind) or []:
                assert component in (data.get(kind) or {}), f"{name}: {pipeline_id} uses undefined {kind} {component}"
    for extension in service.get("extensions") or []:
        assert extension in (data.get("extensions") or {}), f"{name}: undefined extension {extension}"


@pytest.mark.parametrize("name", FILES)
def test_every_defined_component_is_used(name: str) -> None:
    data = load(name)
    used = {(kind, c) for p in data["service"]["pipelines"].values() for kind in KINDS for c in p.get(kind) or []}
    used |= {("extensions", e) for e in data["service"].get("extensions") or []}
    for kind in KINDS:
        for component in data.get(kind) or {}:
            assert (kind, component) in used, f"{name}: {kind} {component} defined but never used"


@pytest.mark.parametrize("name", FILES)
def test_every_component_type_is_one_the_adot_distribution_ships(name: str) -> None:
    data = load(name)
    shipped = SHIPPED[name]
    for kind in KINDS:
        for component in data.get(kind) or {}:
            assert component_type(component) in shipped[kind], f"{name}: {kind} {component} not in ADOT's list"


@pytest.mark.parametrize("name", ("sidecar.yaml", "gateway.yaml"))
def test_memory_limiter_comes_first_in_every_pipeline(name: str) -> None:
    for pipeline_id, pipeline in load(name)["service"]["pipelines"].items():
        processors = pipeline.get("processors") or []
        assert processors and processors[0] == "memory_limiter", f"{name}: {pipeline_id}"


def test_sidecar_sends_traces_to_xray_and_metrics_as_emf_with_a_health_check() -> None:
    data = load("sidecar.yaml")
    pipes = data["service"]["pipelines"]
    assert pipes["traces"]["receivers"] == ["otlp", "awsxray"] and pipes["traces"]["exporters"] == ["awsxray"]
    assert pipes["traces"]["processors"] == ["memory_limiter", "batch/traces"]
    assert pipes["metrics"]["exporters"] == ["awsemf"]
    assert data["service"]["extensions"] == ["health_check"]
    # the awsxray receiver listens where the agent's xray-udp exporter sends by default
    default = Config().tracing.xray.daemon_address
    assert data["receivers"]["awsxray"]["endpoint"].rsplit(":", 1)[1] == default.rsplit(":", 1)[1]
    assert data["receivers"]["awsxray"]["transport"] == "udp"
    assert data["processors"]["batch/traces"]["send_batch_max_size"] <= 50


def test_gateway_routes_by_trace_id_to_its_own_sampling_tier() -> None:
    data = load("gateway.yaml")
    pipes = data["service"]["pipelines"]
    lb = data["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    route, sample = pipes["traces/route"], pipes["traces/sample"]
    assert route["exporters"] == ["loadbalancing"] and "tail_sampling" not in route.get("processors", [])
    assert "tail_sampling" in sample["processors"] and sample["exporters"] == ["awsxray"]
    # tier 1 sends to the port tier 2 listens on, and tier 2 hears nothing else
    port = str(lb["resolver"]["dns"]["port"])
    (receiver,) = sample["receivers"]
    assert data["receivers"][receiver]["protocols"]["grpc"]["endpoint"].endswith(f":{port}")
    assert receiver not in route["receivers"]


def _policies(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in data["processors"]["tail_sampling"]["policies"]}


def test_gateway_keeps_errors_slow_critical_and_agent_kept_traces_and_samples_the_rest() -> None:
    policies = _policies(load("gateway.yaml"))
    assert policies["keep-errors"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["keep-slow"]["latency"]["threshold_ms"] == Config().tracing.sampling.slow_ms
    assert policies["keep-critical"]["string_attribute"] == {"key": TIER_ATTR, "values": ["critical"]}
    assert 0 < policies["sample-the-rest"]["probabilistic"]["sampling_percentage"] < 100
    assert policies["keep-agent-kept"]["string_attribute"]["key"] == KEPT_BY_ATTR


def test_policies_read_only_attributes_the_agent_writes_with_values_it_writes() -> None:
    written = {TIER_ATTR: set(TIER_NAMES), KEPT_BY_ATTR: KEPT_BY_VALUES}
    for policy in _policies(load("gateway.yaml")).values():
        if policy["type"] == "string_attribute":
            rule = policy["string_attribute"]
            assert rule["key"] in written, f"{policy['name']} reads {rule['key']}, which the agent never writes"
            assert set(rule["values"]) <= written[rule["key"]], policy["name"]


@pytest.mark.parametrize("name", FILES)
def test_xray_exporters_index_what_the_agent_marks_not_everything(name: str) -> None:
    exporter = load(name)["exporters"]["awsxray"]
    assert exporter.get("index_all_attributes") is False
    assert "indexed_attributes" not in exporter  # the agent's aws.xray.annotations list decides
    text = (CONFIG_DIR / "README.md").read_text()
    assert ANNOTATIONS_ATTR in text


def test_lambda_has_no_processors_and_sends_traces_to_xray() -> None:
    data = load("lambda.yaml")
    assert "processors" not in data
    traces = data["service"]["pipelines"]["traces"]
    assert traces == {"receivers": ["otlp"], "exporters": ["awsxray"]}
    for protocol in data["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("localhost:")


@pytest.mark.parametrize("name", FILES)
def test_environment_references_use_the_collector_syntax(name: str) -> None:
    text = (CONFIG_DIR / name).read_text()
    for ref in re.findall(r"\$\{[^}]*\}", text):
        assert re.fullmatch(r"\$\{env:[A-Z_][A-Z0-9_]*\}", ref), f"{name}: {ref}"


def test_readme_says_when_to_use_each_file() -> None:
    text = (CONFIG_DIR / "README.md").read_text()
    for name in FILES:
        assert f"`{name}`" in text
