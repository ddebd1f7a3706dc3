"""The tiered sampler: reservoirs and rates (statistically), rules, X-Ray rules files, parent-following."""

from __future__ import annotations

import json
import math
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import RuleConfig, TierConfig
from pulsetrace.config.problems import ConfigError
from pulsetrace.tracing.sampling import Bucket, TieredSampler, build_sampler, glob_matcher, load_xray_rules
from pulsetrace.selfmetrics import SelfMetrics

TIERS = {"critical": TierConfig(0.5, 1.0), "business": TierConfig(0.3, 1.0), "general": TierConfig(0.2, 1.0),
         "health": TierConfig(0.01, 0.0)}


class Clock:
    """A controllable clock for the reservoirs."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decide(sampler: TieredSampler, attrs: dict[str, Any] | None = None, name: str = "GET", *,
           trace_id: int | None = None, rng: random.Random | None = None,
           parent: Context | None = None) -> Any:
    tid = trace_id if trace_id is not None else (rng or random).getrandbits(128)
    return sampler.should_sample(parent, tid, name, attributes=attrs)


def sampling_attrs(result: Any) -> dict[str, Any]:
    return {k: v for k, v in result.attributes.items() if k.startswith("sampling.")}


def within_sigmas(kept: int, n: int, rate: float, sigmas: float = 4.0) -> bool:
    expected = n * rate
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(kept - expected) <= sigmas * sd


@pytest.mark.parametrize("tier", ["critical", "business", "general", "health"])
def test_kept_fraction_after_the_reservoir_is_the_tier_rate_within_4_sigma(tier: str) -> None:
    clock = Clock()
    sampler = TieredSampler(TIERS, "general", clock=clock)
    rng = random.Random(7)
    n, per_second = 20_000, 100
    kept = 0
    for i in range(n):
        clock.now = 1000.0 + i / per_second
        kept += decide(sampler, {"business.tier": tier}, rng=rng).decision is Decision.RECORD_AND_SAMPLE
    reservoir = int(TIERS[tier].reservoir) * (n // per_second)
    rest = n - reservoir
    assert within_sigmas(kept - reservoir, rest, TIERS[tier].rate), (tier, kept, reservoir)


def test_burst_of_1000_roots_in_one_second_keeps_reservoir_plus_rate() -> None:
    clock = Clock(5000.25)
    tiers = {**TIERS, "general": TierConfig(rate=0.2, reservoir=5.0)}
    sampler = TieredSampler(tiers, "general", clock=clock)
    rng = random.Random(11)
    kept = 0
    for i in range(1000):
        clock.now = 5000.25 + i * 0.0007  # all inside second 5000
        kept += decide(sampler, {"url.path": "/x"}, rng=rng).decision is Decision.RECORD_AND_SAMPLE
    assert kept >= 5
    assert within_sigmas(kept - 5, 995, 0.2), kept


def test_health_tier_keeps_about_one_percent() -> None:
    clock = Clock()
    sampler = TieredSampler(TIERS, "general", [RuleConfig(tier="health", path="/health*")], clock=clock)
    rng = random.Random(3)
    n = 20_000
    kept = sum(decide(sampler, {"url.path": "/health/ready"}, rng=rng).decision is Decision.RECORD_AND_SAMPLE
               for _ in range(n))
    assert within_sigmas(kept, n, 0.01), kept
    assert 100 <= kept <= 300


def test_reservoir_keeps_exactly_its_quota_per_second_with_rate_zero() -> None:
    clock = Clock(100.0)
    bucket = Bucket("t", rate=0.0, reservoir=3.0)
    kept = 0
    for second in range(10):
        for i in range(50):
            kept += bucket.take(random.getrandbits(128), 100.0 + second + i / 50)
    assert kept == 30


def test_fractional_reservoir_is_spread_over_seconds() -> None:
    half = Bucket("t", rate=0.0, reservoir=0.5)
    assert sum(half.take(1, float(s) + 0.1) for s in range(100) for _ in range(3)) == 50
    two_and_half = Bucket("t", rate=0.0, reservoir=2.5)
    assert sum(two_and_half.take(1, float(s) + 0.1) for s in range(100) for _ in range(10)) == 250


def test_reservoir_is_thread_safe_under_contention() -> None:
    bucket = Bucket("t", rate=0.0, reservoir=100.0)
    counts: list[int] = []

    def worker() -> None:
        counts.append(sum(bucket.take(1, 42.5) for _ in range(5_000)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 100


def test_rules_first_match_wins_and_roots_carry_tier_and_rule() -> None:
    rules = [
        RuleConfig(tier="health", path="/health*"),
        RuleConfig(tier="critical", path="/payments*", method="POST"),
        RuleConfig(tier="business", path="/payments*"),
        RuleConfig(tier="critical", host="auth.*"),
        RuleConfig(tier="business", name="rfid.*"),
        RuleConfig(tier="critical", attributes={"tenant.plan": "gold*"}),
    ]
    tiers = {k: TierConfig(1.0, 0.0) for k in TIERS}
    s = TieredSampler(tiers, "general", rules)

    def attrs_of(a: dict[str, Any], name: str = "GET") -> dict[str, Any]:
        result = decide(s, a, name)
        assert result.decision is Decision.RECORD_AND_SAMPLE
        assert {k: result.attributes[k] for k in a} == a  # the span's own attributes are passed on
        return sampling_attrs(result)

    assert attrs_of({"url.path": "/health"}) == {"sampling.tier": "health", "sampling.rule": "rules[0]"}
    assert attrs_of({"url.path": "/payments/9", "http.request.method": "post"})["sampling.rule"] == "rules[1]"
    assert attrs_of({"url.path": "/payments/9", "http.request.method": "GET"})["sampling.rule"] == "rules[2]"
    assert attrs_of({"http.method": "POST", "http.target": "/payments?x=1"})["sampling.rule"] == "rules[1]"
    assert attrs_of({"url.path": "/x", "server.address": "AUTH.example.com"})["sampling.tier"] == "critical"
    assert attrs_of({"url.path": "/x", "http.host": "auth.example.com:8443"})["sampling.rule"] == "rules[3]"
    assert attrs_of({}, name="rfid.verify")["sampling.tier"] == "business"
    assert attrs_of({"tenant.plan": "gold-2024"})["sampling.rule"] == "rules[5]"
    assert attrs_of({"tenant.plan": "free"}) == {"sampling.tier": "general", "sampling.rule": "default"}
    assert attrs_of({"url.path": "/Health"})["sampling.rule"] == "default"  # paths are case-sensitive


def test_business_tier_of_a_root_operation_wins_over_rules() -> None:
    tiers = {**{k: TierConfig(0.0, 0.0) for k in TIERS}, "critical": TierConfig(1.0, 0.0)}
    s = TieredSampler(tiers, "general", [RuleConfig(tier="health", name="*")])
    result = decide(s, {"business.tier": "critical"}, "payment.settle")
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert sampling_attrs(result) == {"sampling.tier": "critical", "sampling.rule": "business.tier"}
    assert decide(s, {"business.tier": "nonsense"}, "x").decision is Decision.DROP


def test_unsampled_roots_are_recorded_only_when_keep_errors_is_on() -> None:
    off = {k: TierConfig(0.0, 0.0) for k in TIERS}
    recording = TieredSampler(off, "general", record_unsampled=True)
    result = decide(recording, {"url.path": "/x"})
    assert result.decision is Decision.RECORD_ONLY
    assert result.attributes["sampling.tier"] == "general"
    assert decide(TieredSampler(off, "general"), {"url.path": "/x"}).decision is Decision.DROP


def _parent(sampled: bool, remote: bool, state: TraceState | None = None) -> Context:
    ctx = SpanContext(trace_id=0x5F0000000000000000000000000000AA, span_id=0x1234, is_remote=remote,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
                      trace_state=state)
    return trace.set_span_in_context(NonRecordingSpan(ctx))


@pytest.mark.parametrize("remote", [True, False])
def test_children_follow_the_parent_decision_whatever_their_own_tier_says(remote: bool) -> None:
    never = TieredSampler({k: TierConfig(0.0, 0.0) for k in TIERS}, "general")
    always = TieredSampler({k: TierConfig(1.0, 5.0) for k in TIERS}, "general")
    assert decide(never, {"url.path": "/x"}, parent=_parent(True, remote)).decision is Decision.RECORD_AND_SAMPLE
    assert decide(always, {"url.path": "/x"}, parent=_parent(False, remote)).decision is Decision.DROP
    child = decide(never, {"url.path": "/x"}, parent=_parent(True, remote))
    assert "sampling.tier" not in child.attributes  # only roots carry the tier


def test_parent_trace_state_is_kept() -> None:
    s = TieredSampler(TIERS, "general")
    state = TraceState([("vendor", "v1")])
    result = decide(s, {}, parent=_parent(True, True, state))
    assert result.trace_state == state


def test_remote_unsampled_parent_records_the_local_part_when_keep_errors_is_on() -> None:
    s = TieredSampler({k: TierConfig(1.0, 5.0) for k in TIERS}, "general", record_unsampled=True)
    assert decide(s, {}, parent=_parent(False, True)).decision is Decision.RECORD_ONLY
    # A local parent that is neither sampled nor recording stays dropped.
    assert decide(s, {}, parent=_parent(False, False)).decision is Decision.DROP


def test_children_of_a_recorded_unsampled_local_root_are_recorded_too() -> None:
    s = TieredSampler({k: TierConfig(0.0, 0.0) for k in TIERS}, "general", record_unsampled=True)
    provider = TracerProvider(sampler=s, shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /x", attributes={"url.path": "/x"}) as root:
        with tracer.start_as_current_span("child") as child:
            assert child.is_recording()
            assert not child.get_span_context().trace_flags.sampled
        assert root.is_recording() and not root.get_span_context().trace_flags.sampled


@pytest.mark.parametrize(("rate", "record"), [(1.0, False), (0.0, True)])
def test_attributes_given_at_start_stay_on_sampled_and_recorded_roots_and_children(rate: float, record: bool) -> None:
    """The SDK takes a span's first attributes from the sampling result: none may be lost."""
    s = TieredSampler({k: TierConfig(rate, 0.0) for k in TIERS}, "general", record_unsampled=record)
    tracer = TracerProvider(sampler=s, shutdown_on_exit=False).get_tracer("t")
    with tracer.start_as_current_span("GET /x", attributes={"url.path": "/x", "n": 1}) as root:
        with tracer.start_as_current_span("child", attributes={"db.system": "postgresql"}) as child:
            assert dict(child.attributes or {}) == {"db.system": "postgresql"}  # type: ignore[attr-defined]
        root_attrs = dict(root.attributes or {})  # type: ignore[attr-defined]
    assert root_attrs == {"url.path": "/x", "n": 1, "sampling.tier": "general", "sampling.rule": "default"}
    with tracer.start_as_current_span("bare") as bare:
        assert dict(bare.attributes or {}) == {"sampling.tier": "general", "sampling.rule": "default"}  # type: ignore[attr-defined]


def test_glob_matcher_shapes() -> None:
    assert glob_matcher("*", case_insensitive=False) is None
    exact = glob_matcher("/a", case_insensitive=False)
    prefix = glob_matcher("/a*", case_insensitive=True)
    general = glob_matcher("/a/*/b?", case_insensitive=False)
    assert exact is not None and prefix is not None and general is not None
    assert exact("/a") and not exact("/ab")
    assert prefix("/A/x") and not prefix("/b")
    assert general("/a/x/y/bz") and not general("/a/x/b") and not general("/A/x/bz")


def _rules_file(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_rule_from_an_xray_rules_file_maps_to_its_tier_with_its_own_reservoir_and_rate(tmp_path: Path) -> None:
    path = _rules_file(tmp_path, {
        "version": 2,
        "default": {"fixed_target": 1, "rate": 0.05},
        "rules": [
            {"description": "checkout", "host": "*", "http_method": "POST", "url_path": "/api/checkout/*",
             "fixed_target": 0, "rate": 1.0, "tier": "critical"},
            {"description": "static", "host": "*", "http_method": "*", "url_path": "/static/*",
             "fixed_target": 0, "rate": 0.0},
        ],
    })
    cfg = config_from_mapping({"tracing": {"sampling": {
        "rules": [{"tier": "health", "path": "/health*"}], "xray_rules_file": path, "keep_errors": False,
        "slow_ms": 0, "tiers": {k: {"rate": 0.0, "reservoir": 0} for k in TIERS}}}}, env={})
    sampler = build_sampler(cfg, SelfMetrics())
    assert isinstance(sampler, TieredSampler)
    checkout = decide(sampler, {"url.path": "/api/checkout/42", "http.request.method": "POST"})
    assert checkout.decision is Decision.RECORD_AND_SAMPLE  # the file rule's rate 1.0, not the tier's 0.0
    assert sampling_attrs(checkout) == {"sampling.tier": "critical", "sampling.rule": "xray:checkout"}
    assert decide(sampler, {"url.path": "/static/app.js"}).decision is Decision.DROP
    # Config rules come first; unmatched traffic goes to default_tier.
    assert decide(sampler, {"url.path": "/api/checkout/1", "http.request.method": "GET"}).decision is Decision.DROP


def test_xray_rules_version_1_and_priority_order(tmp_path: Path) -> None:
    path = _rules_file(tmp_path, {
        "version": 1, "default": {"fixed_target": 1, "rate": 0.1},
        "rules": [
            {"description": "later", "service_name": "*", "http_method": "*", "url_path": "*", "fixed_target": 0,
             "rate": 0.0, "priority": 20},
            {"description": "first", "service_name": "shop.*", "http_method": "GET", "url_path": "/a*",
             "fixed_target": 2, "rate": 0.5, "priority": 10},
        ]})
    rules, default = load_xray_rules(path)
    assert [r.description for r in rules] == ["first", "later"]
    assert rules[0].host == "shop.*" and rules[0].fixed_target == 2 and rules[0].tier == "xray"
    assert default.rate == 0.1


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"version": 3, "default": {"fixed_target": 1, "rate": 0.1}}, "version"),
    ({"version": 2}, "default"),
    ({"version": 2, "default": {"fixed_target": 1, "rate": 2.0}}, "default.rate"),
    ({"version": 2, "default": {"fixed_target": 1, "rate": 0.1},
      "rules": [{"host": "*", "http_method": "*", "fixed_target": 1, "rate": 0.1}]}, "rules[0].url_path"),
    ({"version": 2, "default": {"fixed_target": 1, "rate": 0.1},
      "rules": [{"host": "*", "http_method": "*", "url_path": "*", "fixed_target": -1, "rate": 0.1}]},
     "rules[0].fixed_target"),
])
def test_bad_xray_rules_file_is_a_config_error_naming_the_problem(tmp_path: Path, doc: dict[str, Any],
                                                                   fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_xray_rules(_rules_file(tmp_path, doc))
    assert any(fragment in p.key for p in err.value.problems), [str(p) for p in err.value.problems]


def test_missing_or_malformed_xray_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_xray_rules(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_xray_rules(str(bad))


def test_build_sampler_fills_tiers_missing_from_the_config() -> None:
    cfg = config_from_mapping({"tracing": {"sampling": {"tiers": {"critical": {"rate": 1.0, "reservoir": 0}}}}},
                              env={})
    sampler = build_sampler(cfg, SelfMetrics())
    assert isinstance(sampler, TieredSampler)
    assert set(sampler.buckets) == {"critical", "business", "general", "health"}
    assert sampler.buckets["health"].rate == 0.01
    assert "PulseTraceTiered" in sampler.get_description()


def test_a_bad_attribute_value_falls_back_to_the_default_tier_instead_of_raising() -> None:
    s = TieredSampler({k: TierConfig(1.0, 0.0) for k in TIERS}, "general",
                      [RuleConfig(tier="critical", attributes={"k": "v"})])

    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("no")

    result = decide(s, {"k": Weird()})
    assert result.attributes["sampling.rule"] == "default"
