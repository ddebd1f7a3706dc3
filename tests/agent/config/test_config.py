"""The configuration loader and validator: discovery, interpolation, env overrides, durations, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulsetrace.config.load import find_config_path
from pulsetrace.config.problems import ConfigError, format_duration, parse_duration
from pulsetrace.config.schema import Config
from pulsetrace.config.secrets import mask_url, masked_dict
from pulsetrace.validation import config_from_mapping, load_config


def problems_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, env or {})
    return [str(p) for p in info.value.problems]


# -- discovery ------------------------------------------------------------------------------


def test_no_file_anywhere_gives_all_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={})
    assert cfg == Config()
    assert cfg.tracing.exporters == ["local"]
    assert cfg.store.path == ".pulsetrace"
    assert cfg.health.probes == []


def test_discovery_order_explicit_then_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pulsetrace.yaml").write_text("service: {name: from-cwd}\n")
    (tmp_path / "env.yaml").write_text("service: {name: from-env}\n")
    (tmp_path / "explicit.yaml").write_text("service: {name: from-flag}\n")
    env = {"PULSETRACE_CONFIG": str(tmp_path / "env.yaml")}
    assert load_config(None, env={}).service.name == "from-cwd"
    assert load_config(None, env=env).service.name == "from-env"
    assert load_config(tmp_path / "explicit.yaml", env=env).service.name == "from-flag"
    assert find_config_path(None, {}) == Path("pulsetrace.yaml")
    assert load_config(None, env={}).source == "pulsetrace.yaml"


def test_explicit_missing_file_is_a_problem_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{tmp_path / 'nope.yaml'}: config file not found")


def test_interface_example_document_is_valid(tmp_path: Path) -> None:
    """The documented example configuration (docs/configuration.md) validates with its env variables set."""
    doc = tmp_path / "pulsetrace.yaml"
    doc.write_text("""
service: {name: shop-api, environment: uat, version: "1.4.2"}
store: {path: .pulsetrace, retention: 7d}
tracing:
  exporters: [local]
  otlp: {endpoint: "http://127.0.0.1:4318", protocol: http/protobuf}
  xray: {daemon_address: "127.0.0.1:2000", region: ap-south-1}
  instrumentations: {disabled: []}
  sampling:
    default_tier: general
    tiers:
      critical: {rate: 0.5, reservoir: 1}
      business: {rate: 0.3, reservoir: 1}
      general:  {rate: 0.2, reservoir: 1}
      health:   {rate: 0.01, reservoir: 0}
    rules:
      - {tier: critical, path: "/payments*"}
      - {tier: health, path: "/health*"}
    keep_errors: true
    slow_ms: 2000
  business: {annotations: [payment.method, school.id]}
  pii: {hash_keys: [user.id], hash_secret: "${PII_HASH_SECRET:-}"}
health:
  listen: "127.0.0.1:8081"
  token: ${HEALTH_TOKEN:-}
  failure_threshold: 2
  success_threshold: 2
  probes:
    - name: db
      type: postgres
      dsn: "postgresql://app:${DB_PASSWORD}@127.0.0.1:5432/shop"
      interval: 15s
      timeout: 2s
      critical: true
      thresholds: {connect_ms: 100, query_ms: 50}
      sla: 99.9
      impact: {revenue_per_minute: 120, users: 5000}
    - {name: cache, type: redis, url: "redis://127.0.0.1:6379/0", thresholds: {ping_ms: 50}, sla: 99.5}
    - {name: payments, type: http, url: "https://pay.example.test/status", expect_status: [200],
       thresholds: {latency_ms: 1000}, sla: 99.8}
    - {name: rfid, type: rfid, source: {redis_url: "redis://127.0.0.1:6379/0", key_pattern: "rfid:reader:*"},
       max_age: 60s, sla: 99.0}
metrics:
  cloudwatch: {mode: emf, namespace: PulseTrace, emf_output: stdout, interval: 60s}
alerts:
  channels:
    - {name: team, type: discord, url: "${DISCORD_WEBHOOK_URL}"}
    - {name: ops, type: slack, url: "${SLACK_WEBHOOK_URL}"}
    - {name: oncall, type: pagerduty, routing_key: "${PD_ROUTING_KEY}"}
    - {name: tiers, type: sns, topic_arn: "arn:aws:sns:ap-south-1:123456789012:shop-critical"}
    - {name: hook, type: webhook, url: "https://hooks.example.test/x", headers: {X-Token: "${HOOK_TOKEN}"}}
  routes:                             # every matching route delivers
    - {severity: [critical], channels: [oncall, team]}
    - {severity: [warning, business], channels: [ops, team]}
  group_wait: 30s
  repeat_interval: 4h
  send_resolved: true
  silences:
    - {match: {probe: rfid}, starts: "2026-12-24T22:00:00Z", ends: "2026-12-25T02:00:00Z", comment: "reader firmware"}
""")
    cfg = load_config(doc, env={"DB_PASSWORD": "pw-42", "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/t",
                                "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
                                "PD_ROUTING_KEY": "k" * 32, "HOOK_TOKEN": "h"})
    assert cfg.health.probes[0].dsn == "postgresql://app:pw-42@127.0.0.1:5432/shop"
    assert cfg.health.probes[0].timeout == 2.0
    assert cfg.health.probes[3].max_age == 60.0
    assert cfg.tracing.sampling.rules[0].tier == "critical"
    assert cfg.tracing.pii.hash_secret == ""
    assert cfg.store.retention == 7 * 86400
    assert [c.type for c in cfg.alerts.channels] == ["discord", "slack", "pagerduty", "sns", "webhook"]
    assert cfg.alerts.group_wait == 30.0 and cfg.alerts.repeat_interval == 4 * 3600.0
    assert cfg.metrics.cloudwatch.mode == "emf"


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("15s", 15.0), ("2m", 120.0), ("1h", 3600.0), ("7d", 604800.0), (15, 15.0), (2.5, 2.5),
    ("30", 30.0), ("1.5h", 5400.0), (" 2m ", 120.0),
])
def test_durations_parse_every_unit(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["forever", "-5s", "5 weeks", "", "1e9999", True, None, [1], float("inf"), -1])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_duration_fields_accept_units_and_report_bad_ones() -> None:
    cfg = config_from_mapping({"store": {"retention": "2d"}, "tracing": {"otlp": {"timeout": "500ms"}}}, {})
    assert cfg.store.retention == 172800.0
    assert cfg.tracing.otlp.timeout == 0.5
    (line,) = problems_of({"store": {"retention": "forever"}})
    assert line == ("store.retention: not a duration (got 'forever', expected e.g. 500ms, 15s, 2m, 1h, 7d or a "
                    "number of seconds)")


@pytest.mark.parametrize("seconds", [0.5, 15.0, 120.0, 3600.0, 604800.0, 1.25, 90.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


# -- problems --------------------------------------------------------------------------------


def test_unknown_keys_get_a_did_you_mean() -> None:
    lines = problems_of({"servce": {"name": "x"}, "tracing": {"exporter": ["local"],
                                                             "sampling": {"tiers": {"critcal": {"rate": 0.5}}}}})
    assert "servce: unknown key, did you mean 'service'? (expected one of alerts, health, logging, metrics, resource_attributes, " \
           "service, store, tracing)" in lines
    assert any(line.startswith("tracing.exporter: unknown key, did you mean 'exporters'?") for line in lines)
    assert any(line.startswith("tracing.sampling.tiers.critcal: unknown key, did you mean 'critical'?")
               for line in lines)


def test_unknown_key_far_from_any_lists_the_allowed_keys() -> None:
    (line,) = problems_of({"zzzzzz": 1})
    assert line.startswith("zzzzzz: unknown key (expected one of alerts, health, logging, metrics")


def test_bad_choice_names_value_and_suggestion() -> None:
    (line,) = problems_of({"tracing": {"exporters": ["lcoal"]}})
    assert line == ("tracing.exporters[0]: unknown value, did you mean 'local'? (got 'lcoal', expected one of "
                    "local, otlp, console, xray-udp, xray-api)")


def test_every_problem_is_reported_in_one_pass() -> None:
    lines = problems_of({
        "tracing": {"sampling": {"slow_ms": "abc", "tiers": {"general": {"rate": 2}}}, "queue_size": 1},
        "health": {"failure_threshold": 0, "probes": [{"type": "postgres"}]},
        "store": {"retention": []},
    })
    keys = [line.split(":", 1)[0] for line in lines]
    assert sorted(keys) == sorted(["tracing.sampling.tiers.general.rate", "tracing.sampling.slow_ms",
                                   "tracing.queue_size", "health.failure_threshold", "health.probes[0].name",
                                   "store.retention"])
    assert "tracing.sampling.tiers.general.rate: too large (got 2.0, expected <= 1.0)" in lines


def test_non_mapping_document_names_its_type_not_its_content() -> None:
    (line,) = problems_of("DB_PASSWORD=hunter2")
    assert line == "<root>: the document must be a mapping of sections (got a string, expected keys such as " \
                   "service, tracing, health)"
    assert "hunter2" not in line


def test_problem_lines_stay_one_line_whatever_the_key() -> None:
    lines = problems_of({"bad\nkey\u2028x": 1})
    assert len(lines) == 1 and "\n" not in lines[0] and "\u2028" not in lines[0]
    assert lines[0].startswith("bad\\nkey\\u2028x: unknown key")


def test_secret_values_are_never_echoed_in_problems() -> None:
    lines = problems_of({"health": {"token": ["s3cr3t-token"], "probes": [
        {"name": "db", "type": "postgres", "dsn": {"password": "pw-xyz"}}]},
        "tracing": {"otlp": {"endpoint": "ftp://u:otlp-pw@h"}}})
    text = "\n".join(lines)
    assert "s3cr3t-token" not in text and "pw-xyz" not in text
    assert "health.token: must be a string" in text
    assert "health.probes[0].dsn: must be a string" in text


def test_otlp_endpoint_problem_masks_its_credentials() -> None:
    (line,) = problems_of({"tracing": {"otlp": {"endpoint": "ftp://u:otlp-pw@h"}}})
    assert line.startswith("tracing.otlp.endpoint: not an http(s) URL (got 'ftp://u:****@h'")


def test_strings_that_are_numbers_are_accepted_for_numeric_fields() -> None:
    cfg = config_from_mapping({"tracing": {"queue_size": "1024", "sampling": {"slow_ms": "1500.5",
                                                                              "keep_errors": "false"}}}, {})
    assert cfg.tracing.queue_size == 1024
    assert cfg.tracing.sampling.slow_ms == 1500.5
    assert cfg.tracing.sampling.keep_errors is False


def test_non_text_values_are_not_strings() -> None:
    lines = problems_of({"service": {"name": b"bytes", "environment": {"a": 1}}})
    assert lines[0].startswith("service.name: must be a string")
    assert lines[1].startswith("service.environment: must be a string")


def test_naming_some_tiers_keeps_the_default_others() -> None:
    cfg = config_from_mapping({"tracing": {"sampling": {"tiers": {"critical": {"rate": 0.9}}}}}, {})
    tiers = cfg.tracing.sampling.tiers
    assert tiers["critical"].rate == 0.9
    assert tiers["health"].rate == 0.01 and tiers["general"].rate == 0.2


# -- interpolation ---------------------------------------------------------------------------


def test_interpolation_with_and_without_defaults() -> None:
    cfg = config_from_mapping({
        "service": {"name": "${SVC}", "environment": "${ENVIRONMENT:-dev}", "version": "v${VER:-0}-${SVC}"},
        "tracing": {"sampling": {"slow_ms": "${SLOW_MS:-1500}"}},
    }, {"SVC": "shop", "VER": ""})
    assert cfg.service.name == "shop"
    assert cfg.service.environment == "dev"
    assert cfg.service.version == "v0-shop"  # ${VER:-0} with VER empty takes the default, as in the shell
    assert cfg.tracing.sampling.slow_ms == 1500.0


def test_unset_variable_without_default_is_a_problem_at_its_key() -> None:
    (line,) = problems_of({"health": {"probes": [{"name": "db", "type": "postgres",
                                                  "dsn": "postgresql://app:${DB_PASSWORD}@h/db"}]}})
    assert line == ("health.probes[0].dsn: environment variable DB_PASSWORD is not set (expected DB_PASSWORD set, "
                    "or ${DB_PASSWORD:-default} in the file)")


def test_set_but_empty_variable_without_default_is_empty() -> None:
    cfg = config_from_mapping({"health": {"token": "${TOKEN}"}}, {"TOKEN": ""})
    assert cfg.health.token == ""


# -- environment overrides -------------------------------------------------------------------


def test_environment_variables_win_over_the_file() -> None:
    data = {"service": {"name": "file-name", "environment": "file-env"},
            "store": {"path": "/file/store"},
            "tracing": {"otlp": {"endpoint": "http://file:4318"}, "xray": {"daemon_address": "10.0.0.1:2000"},
                        "instrumentations": {"disabled": ["redis"]}}}
    env = {
        "OTEL_SERVICE_NAME": "env-name",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=pay%20ments,service.version=2.0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx, asyncpg,urllib3,no-such-instrumentation",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.1.1:2000",
        "AWS_REGION": "ap-south-1",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "PULSETRACE_STORE": "/env/store",
    }
    cfg = config_from_mapping(data, env)
    assert cfg.service.name == "env-name"
    assert cfg.service.environment == "prod"
    assert cfg.service.version == "2.0"
    assert cfg.resource_attributes == {"deployment.environment": "prod", "team": "pay ments", "service.version": "2.0"}
    assert cfg.tracing.otlp.endpoint == "http://collector:4318"
    # any known instrumentation (urllib3 is contrib's) is honoured; a name no instrumentation has is ignored
    assert cfg.tracing.instrumentations.disabled == ["httpx", "asyncpg", "urllib3"]
    assert cfg.tracing.xray.daemon_address == "169.254.1.1:2000"
    assert cfg.tracing.xray.region == "ap-south-1"
    assert cfg.metrics.cloudwatch.region == "ap-south-1"
    assert cfg.tracing.xray.endpoint_url == "http://127.0.0.1:5000"
    assert cfg.metrics.cloudwatch.endpoint_url == "http://127.0.0.1:5000"
    assert cfg.store.path == "/env/store"


def test_service_name_in_resource_attributes_applies_without_otel_service_name() -> None:
    cfg = config_from_mapping({}, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"})
    assert cfg.service.name == "from-attrs"


def test_signal_specific_otlp_endpoint_wins_over_the_generic_one() -> None:
    cfg = config_from_mapping({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/v1/traces",
                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert cfg.tracing.otlp.endpoint == "http://b:4318/v1/traces"
    assert cfg.tracing.otlp.protocol == "grpc"


def test_a_bad_value_from_the_environment_says_which_variable() -> None:
    (line,) = problems_of({}, {"AWS_XRAY_DAEMON_ADDRESS": "nowhere"})
    assert line == ("tracing.xray.daemon_address: not a host:port address, from $AWS_XRAY_DAEMON_ADDRESS "
                    "(got nowhere, expected e.g. 127.0.0.1:8081)")
    (line,) = problems_of({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert line.startswith("tracing.otlp.protocol: unknown value, from $OTEL_EXPORTER_OTLP_PROTOCOL")


def test_env_override_does_not_hide_a_malformed_section() -> None:
    (line,) = problems_of({"service": "shop"}, {"OTEL_SERVICE_NAME": "x"})
    assert line.startswith("service: must be a mapping")


# -- masking ---------------------------------------------------------------------------------


def test_masked_dict_hides_every_secret_and_keeps_the_rest() -> None:
    cfg = config_from_mapping({
        "tracing": {"otlp": {"endpoint": "https://user:otlp-pw@collector:4318",
                             "headers": {"Authorization": "Bearer hdr-token", "x-api-key": "k-123"}},
                    "pii": {"hash_secret": "pii-secret"}},
        "health": {"token": "health-token", "probes": [
            {"name": "db", "type": "postgres", "dsn": "postgresql://app:db-pw@127.0.0.1:5432/shop?sslpassword=ssl-pw"},
            {"name": "cache", "type": "redis", "url": "redis://:redis-pw@127.0.0.1:6379/0"},
            {"name": "pay", "type": "http", "url": "https://ghp_0123456789abcdefghijklmnop@pay.test/status",
             "headers": {"X-Token": "pay-token"}},
            {"name": "rfid", "type": "rfid", "source": {"redis_url": "redis://u:rfid-pw@h:1/0",
                                                         "key_pattern": "rfid:reader:*"}},
            {"name": "custom", "type": "custom", "target": "pkg:probe",
             "options": {"password": "opt-pw", "api_key": "opt-key", "region": "eu-west-1"}},
        ]},
    }, {})
    masked = masked_dict(cfg)
    text = repr(masked)
    for secret in ("otlp-pw", "hdr-token", "k-123", "pii-secret", "health-token", "db-pw", "ssl-pw", "redis-pw",
                   "ghp_0123456789abcdefghijklmnop", "pay-token", "rfid-pw", "opt-pw", "opt-key"):
        assert secret not in text, secret
    probes = masked["health"]["probes"]
    assert probes[0]["dsn"] == "postgresql://app:****@127.0.0.1:5432/shop?sslpassword=****"
    assert probes[1]["url"] == "redis://:****@127.0.0.1:6379/0"
    assert probes[3]["source"]["key_pattern"] == "rfid:reader:*"
    assert probes[4]["options"]["region"] == "eu-west-1"
    assert masked["tracing"]["otlp"]["endpoint"] == "https://user:****@collector:4318"
    assert masked["tracing"]["otlp"]["headers"] == {"Authorization": "****", "x-api-key": "****"}
    assert masked["service"]["name"] == "unknown_service"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app@db/shop", "postgresql://app@db/shop"),
    ("https://example.test/x?token=abc&page=2", "https://example.test/x?token=****&page=2"),
    ("http://[::1", "****"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_unquoted_off_is_the_off_mode_not_a_boolean() -> None:
    import yaml

    from pulsetrace.validation import config_from_mapping

    cfg = config_from_mapping(yaml.safe_load("metrics:\n  cloudwatch:\n    mode: off\n"), env={})
    assert cfg.metrics.cloudwatch.mode == "off"
    assert problems_of(yaml.safe_load("metrics:\n  cloudwatch:\n    mode: yes\n")) == [
        "metrics.cloudwatch.mode: unknown value (got 'True', expected one of emf, api, off)"]
