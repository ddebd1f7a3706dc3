"""X-Ray centralized sampling rules: matched like X-Ray, reservoirs from targets, fallback to the tiers."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import Decision

from pulsetrace.config.schema import Config, SamplingConfig, TracingConfig, XRayRemoteConfig
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing.sampling import build_sampler
from pulsetrace.tracing.xray_remote import RemoteRule, RemoteSampling, Target, service_type_from_env
from tests.xray_sampling_server import rule as rule_doc


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rule(name: str, priority: int = 100, rate: float = 0.0, reservoir: int = 0, **fields: Any) -> RemoteRule:
    found = RemoteRule.from_record({"SamplingRule": rule_doc(name, priority, rate, reservoir, **fields)})
    assert found is not None
    return found


def remote(*rules: RemoteRule, clock: Clock | None = None, service: str = "shop-api",
           service_type: str = "AWS::ECS::Container", **cfg: Any) -> RemoteSampling:
    r = RemoteSampling(XRayRemoteConfig(endpoint="http://127.0.0.1:2000", **cfg), service, service_type,
                       clock=clock or Clock())
    r.set_rules(list(rules))
    return r


HTTP = {"http.request.method": "POST", "url.path": "/payments/42", "server.address": "shop.example.test"}


@pytest.mark.parametrize(("fields", "attrs", "tier", "matches"), [
    ({}, HTTP, "general", True),
    ({"URLPath": "/payments/*"}, HTTP, "general", True),
    ({"URLPath": "/orders/*"}, HTTP, "general", False),
    ({"URLPath": "/PAYMENTS/*"}, HTTP, "general", True),                      # case-insensitive, as X-Ray
    ({"URLPath": "/payments/??"}, HTTP, "general", True),
    ({"URLPath": "/payments/?"}, HTTP, "general", False),
    ({"HTTPMethod": "GET"}, HTTP, "general", False),
    ({"HTTPMethod": "post"}, HTTP, "general", True),
    ({"Host": "*.example.test"}, HTTP, "general", True),
    ({"Host": "admin.*"}, HTTP, "general", False),
    ({"ServiceName": "shop-*"}, HTTP, "general", True),
    ({"ServiceName": "billing"}, HTTP, "general", False),
    ({"ServiceType": "AWS::ECS::Container"}, HTTP, "general", True),
    ({"ServiceType": "AWS::Lambda::Function"}, HTTP, "general", False),
    ({"ResourceARN": "arn:aws:ecs:*"}, HTTP, "general", False),              # no resource ARN known here
    ({"Attributes": {"payment.method": "upi"}}, {**HTTP, "payment.method": "upi"}, "general", True),
    ({"Attributes": {"payment.method": "upi"}}, {**HTTP, "payment.method": "card"}, "general", False),
    ({"Attributes": {"payment.method": "*"}}, HTTP, "general", False),        # absent attribute: no match
    ({"Attributes": {"sampling.tier": "critical"}}, HTTP, "critical", True),  # the console steers a tier
    ({"Attributes": {"sampling.tier": "critical"}}, HTTP, "general", False),
    ({"URLPath": "/payments*"}, {"http.method": "POST", "http.target": "/payments/1?x=2"}, "general", True),
])
def test_a_remote_rule_matches_a_root_span_the_way_xray_matches_a_request(
        fields: dict[str, Any], attrs: dict[str, Any], tier: str, matches: bool) -> None:
    r = remote(rule("r", rate=1.0, **fields))
    decided = r.decide(1, "POST /payments", attrs, tier)
    assert (decided is not None) is matches
    if matches:
        assert decided is not None and decided[1]["sampling.rule"] == "xray-remote:r"
        assert decided[1]["sampling.tier"] == tier


def test_rules_are_tried_by_priority_then_name_whatever_order_they_arrive_in() -> None:
    r = remote(rule("zeta", priority=5, rate=1.0), rule("late", priority=50, rate=1.0),
               rule("alpha", priority=5, rate=1.0))
    assert [x.name for x in r.rules] == ["alpha", "zeta", "late"]
    decided = r.decide(1, "GET /", HTTP, "general")
    assert decided is not None and decided[1]["sampling.rule"] == "xray-remote:alpha"


def test_the_default_rule_decides_only_when_asked_to_otherwise_the_tiers_do() -> None:
    default = rule("Default", priority=10000, rate=1.0)
    assert remote(default).decide(1, "GET /", HTTP, "general") is None
    decided = remote(default, use_default_rule=True).decide(1, "GET /", HTTP, "general")
    assert decided is not None and decided[1]["sampling.rule"] == "xray-remote:Default"


def test_a_rule_of_an_unknown_version_is_ignored() -> None:
    assert RemoteRule.from_record({"SamplingRule": rule_doc("v2", 1, 1.0, 0, Version=2)}) is None


def test_before_any_target_a_rule_borrows_one_trace_a_second_then_keeps_its_fixed_rate() -> None:
    clock = Clock()
    r = remote(rule("r", rate=0.0, reservoir=50), clock=clock)
    kept = [r.decide(i, "GET /", HTTP, "general") for i in range(10)]
    assert [k[0] for k in kept if k] == [True] + [False] * 9
    clock.now += 1.0
    assert r.decide(99, "GET /", HTTP, "general") == (True, {"sampling.tier": "general",
                                                              "sampling.rule": "xray-remote:r"})
    stats = r.statistics()
    assert stats[0]["RequestCount"] == 11 and stats[0]["SampledCount"] == 2 and stats[0]["BorrowCount"] == 2
    assert stats[0]["ClientID"] == r.client_id and len(r.client_id) == 24
    assert r.statistics() == [], "counters are reset by a report; an idle rule without a quota is not reported"


def test_a_rule_with_no_reservoir_never_borrows() -> None:
    r = remote(rule("r", rate=0.0, reservoir=0))
    assert all(d is not None and d[0] is False for d in (r.decide(i, "x", HTTP, "general") for i in range(5)))


def test_the_quota_from_targets_is_kept_per_second_until_its_ttl_then_the_rule_borrows_again() -> None:
    clock = Clock(1_700_000_000.0)
    r = remote(rule("r", rate=0.0, reservoir=100), clock=clock)
    r.apply_targets([Target("r", fixed_rate=0.0, quota=3, quota_ttl=clock.now + 2.5)])
    assert sum(bool(d and d[0]) for d in (r.decide(i, "x", HTTP, "g") for i in range(20))) == 3
    clock.now += 1.0
    assert sum(bool(d and d[0]) for d in (r.decide(i, "x", HTTP, "g") for i in range(20))) == 3
    clock.now += 2.0  # past the TTL: borrowing, one a second
    assert sum(bool(d and d[0]) for d in (r.decide(i, "x", HTTP, "g") for i in range(20))) == 1


def test_the_fixed_rate_of_a_target_replaces_the_rules_and_is_decided_on_the_trace_id() -> None:
    r = remote(rule("r", rate=0.0, reservoir=0))
    r.apply_targets([Target("r", fixed_rate=0.5)])
    low, high = 1, (1 << 64) - 1  # the random low 64 bits of an X-Ray trace id
    assert r.decide(low, "x", HTTP, "g") is not None and r.decide(low, "x", HTTP, "g")[0] is True  # type: ignore[index]
    assert r.decide(high, "x", HTTP, "g")[0] is False  # type: ignore[index]


def test_a_refetch_keeps_the_quota_and_counters_of_a_rule_that_is_still_there() -> None:
    clock = Clock()
    r = remote(rule("keep", reservoir=10), rule("gone", priority=200, reservoir=10), clock=clock)
    r.apply_targets([Target("keep", 0.0, quota=4, quota_ttl=clock.now + 60)])
    r.decide(1, "x", HTTP, "g")
    r.set_rules([rule("keep", reservoir=10)])
    assert sum(bool(d and d[0]) for d in (r.decide(i, "x", HTTP, "g") for i in range(10))) == 3  # 4 - 1 taken
    stats = r.statistics()
    assert [s["RuleName"] for s in stats] == ["keep"] and stats[0]["RequestCount"] == 11


def test_with_nothing_heard_for_fallback_after_the_local_tiers_decide_again_and_take_over_on_recovery() -> None:
    clock = Clock()
    r = remote(rule("r", rate=1.0), clock=clock, fallback_after=30.0)
    assert r.decide(1, "x", HTTP, "g") is not None
    clock.now += 31.0
    assert r.decide(1, "x", HTTP, "g") is None and not r.active()
    r.apply_targets([])  # the endpoint answers again
    assert r.decide(1, "x", HTTP, "g") is not None and r.active()


def test_service_type_comes_from_where_the_process_runs() -> None:
    assert service_type_from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}) == "AWS::Lambda::Function"
    assert service_type_from_env({"ECS_CONTAINER_METADATA_URI_V4": "http://x"}) == "AWS::ECS::Container"
    assert service_type_from_env({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "AWS::EKS::Container"
    assert service_type_from_env({}) == ""


def _sampler(r: RemoteSampling, keep_errors: bool = False) -> Any:
    cfg = Config(tracing=TracingConfig(sampling=SamplingConfig(keep_errors=keep_errors, slow_ms=0.0)))
    return build_sampler(cfg, SelfMetrics(), remote=r)


def test_the_tiered_sampler_asks_the_remote_rules_with_the_local_tier_and_records_which_rule_decided() -> None:
    r = remote(rule("critical-tier", rate=0.0, reservoir=0, Attributes={"sampling.tier": "critical"}))
    sampler = _sampler(r)
    attrs = {"http.request.method": "POST", "url.path": "/payments/1"}   # a default rule puts it in critical
    assert sampler.should_sample(None, 7, "POST /payments", attributes=attrs).decision is Decision.DROP
    kept = _sampler(remote(rule("critical-tier", rate=1.0, Attributes={"sampling.tier": "critical"})))
    result = kept.should_sample(None, 7, "POST /payments", attributes=attrs)
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert result.attributes["sampling.rule"] == "xray-remote:critical-tier"
    assert result.attributes["sampling.tier"] == "critical" and result.attributes["url.path"] == "/payments/1"
    # what no remote rule matches is the tiers' (a general path here)
    other = kept.should_sample(None, 7, "GET /catalog", attributes={"http.request.method": "GET", "url.path": "/catalog"})
    assert other.attributes["sampling.rule"] == "default"


def test_a_remote_not_sampled_decision_is_still_recorded_for_keep_errors() -> None:
    sampler = _sampler(remote(rule("none", rate=0.0)), keep_errors=True)
    assert sampler.should_sample(None, 7, "GET /", attributes=dict(HTTP)).decision is Decision.RECORD_ONLY


def test_a_broken_remote_decider_never_breaks_span_creation() -> None:
    class Broken:
        def decide(self, *a: Any) -> Any:
            raise RuntimeError("boom")

    sampler = build_sampler(Config(), SelfMetrics(), remote=Broken())
    assert sampler.should_sample(None, 7, "GET /", attributes=dict(HTTP)).attributes["sampling.rule"]


def test_a_forked_child_is_a_new_client_without_the_parents_quota() -> None:
    clock = Clock()
    r = remote(rule("r", reservoir=10), clock=clock)
    r.apply_targets([Target("r", 0.0, quota=5, quota_ttl=clock.now + 60)])
    parent_id = r.client_id
    r._after_fork()
    restarted: list[bool] = []
    r.restart = lambda: restarted.append(True)
    kept = [r.decide(i, "x", HTTP, "g") for i in range(5)]
    assert r.client_id != parent_id and restarted == [True]
    assert sum(bool(k and k[0]) for k in kept) == 1, "borrows until its own targets arrive"


def test_an_endpoint_that_is_not_http_is_a_config_problem_naming_the_key() -> None:
    from pulsetrace.config.problems import ConfigError
    from pulsetrace.validation import config_from_mapping

    with pytest.raises(ConfigError) as raised:
        config_from_mapping({"tracing": {"sampling": {"xray_remote": {"endpoint": "ftp://daemon:2000"}}}}, env={})
    assert [p.key for p in raised.value.problems] == ["tracing.sampling.xray_remote.endpoint"]
    cfg = config_from_mapping({"tracing": {"sampling": {"xray_remote": {
        "endpoint": "http://127.0.0.1:2000", "poll": "5m", "targets_poll": "10s"}}}}, env={})
    assert (cfg.tracing.sampling.xray_remote.poll, cfg.tracing.sampling.xray_remote.targets_poll) == (300.0, 10.0)
