"""Centralized sampling end to end: the agent's poller against an X-Ray sampling endpoint on loopback.

The endpoint (tests/xray_sampling_server.py) checks every request and answer against botocore's
X-Ray service model; the agents are real ones, started from a configuration file, in this
process and in two child processes that share one reservoir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.config.schema import Config, SamplingConfig, TracingConfig, XRayRemoteConfig
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing.sampling import build_sampler
from pulsetrace.tracing.xray_remote import RemoteSampling
from pulsetrace.tracing.xray_remote_poller import BotocoreTransport, SamplingPoller
from tests.integration.service_runner import wait_for
from tests.xray_sampling_server import DEFAULT_RULE, SamplingServer, rule


@pytest.fixture
def endpoint() -> Iterator[SamplingServer]:
    server = SamplingServer().start()
    yield server
    server.stop()
    assert not server.invalid, server.invalid


def _poller(server: SamplingServer, **cfg: Any) -> tuple[RemoteSampling, SamplingPoller, Any]:
    remote_cfg = XRayRemoteConfig(endpoint=server.url, **{"poll": 1.0, "targets_poll": 0.5, **cfg})
    remote = RemoteSampling(remote_cfg, "shop-api")
    poller = SamplingPoller(remote, BotocoreTransport(remote_cfg, "us-east-1"), metrics=SelfMetrics())
    cfg_all = Config(tracing=TracingConfig(sampling=SamplingConfig(keep_errors=False, slow_ms=0.0,
                                                                   xray_remote=remote_cfg)))
    return remote, poller, build_sampler(cfg_all, SelfMetrics(), remote=remote)


def _sample(sampler: Any, path: str, trace_id: int = 1) -> dict[str, Any]:
    result = sampler.should_sample(None, trace_id, f"GET {path}",
                                   attributes={"http.request.method": "GET", "url.path": path})
    return {"sampled": result.decision.is_sampled(), **dict(result.attributes or {})}


def test_the_consoles_rules_decide_and_the_statistics_reach_xray(endpoint: SamplingServer) -> None:
    endpoint.set_rules([rule("checkout", 10, 1.0, 0, URLPath="/checkout*"), DEFAULT_RULE])
    remote, poller, sampler = _poller(endpoint)
    poller.start()
    try:
        assert wait_for(lambda: remote.rules, timeout=30.0)
        assert [r.name for r in remote.rules] == ["checkout"], "the Default rule is left to the tiers"
        decided = [_sample(sampler, "/checkout/1", trace_id=i) for i in range(5)]
        assert all(d["sampled"] and d["sampling.rule"] == "xray-remote:checkout" for d in decided)
        assert _sample(sampler, "/catalog")["sampling.rule"] == "default"  # the local tiers
        stats = wait_for(lambda: [s for s in endpoint.statistics if s["RuleName"] == "checkout"], timeout=30.0)
        assert stats, "no statistics reported"
        assert stats[0]["ClientID"] == remote.client_id
        assert sum(s["RequestCount"] for s in stats) == 5 and sum(s["SampledCount"] for s in stats) == 5
    finally:
        poller.shutdown(2.0)


def test_a_rule_changed_in_the_console_is_fetched_without_waiting_for_the_next_poll(
        endpoint: SamplingServer) -> None:
    endpoint.set_rules([rule("a", 10, 1.0, 0)])
    remote, poller, sampler = _poller(endpoint, poll=3600.0)
    poller.start()
    try:
        assert wait_for(lambda: remote.rules, timeout=30.0)
        _sample(sampler, "/x")  # so there are statistics to report
        endpoint.set_rules([rule("b", 10, 1.0, 0)])
        assert wait_for(lambda: [r.name for r in remote.rules] == ["b"])
    finally:
        poller.shutdown(2.0)


def test_the_endpoint_going_away_falls_back_to_the_local_tiers_and_its_return_restores_the_rules(
        endpoint: SamplingServer) -> None:
    endpoint.set_rules([rule("all", 10, 1.0, 0)])
    remote, poller, sampler = _poller(endpoint, fallback_after=1.5)
    poller.start()
    try:
        assert wait_for(lambda: _sample(sampler, "/catalog")["sampling.rule"] == "xray-remote:all")
        endpoint.stop()
        local = wait_for(lambda: (d := _sample(sampler, "/catalog"))["sampling.rule"] == "default" and d, timeout=30.0)
        assert local, "no fallback to the local tiers"
        assert poller.metrics is not None and poller.metrics.gauges()["xray_remote_active"] == 0.0
        assert poller.metrics.counter("xray_remote_failures") >= 1  # a self-metric (CloudWatch: XrayRemoteFailures)
        assert local["sampling.tier"] == "general"  # never "everything" nor "nothing": the tier's own rate
        endpoint.start()
        assert wait_for(lambda: _sample(sampler, "/catalog")["sampling.rule"] == "xray-remote:all", timeout=30.0)
        assert wait_for(lambda: poller.rules_failures == 0, timeout=30.0), "the rules are fetched again"
    finally:
        poller.shutdown(2.0)


CHILD = textwrap.dedent("""
    import json, math, os, sys, time
    import pulsetrace
    from opentelemetry import trace
    agent = pulsetrace.start(sys.argv[1])
    remote = agent.provider.sampler._remote
    tracer = trace.get_tracer("child")
    attrs = {"http.request.method": "GET", "url.path": "/shared"}
    def request():
        with tracer.start_as_current_span("GET /shared", attributes=attrs) as span:
            return span.get_span_context().trace_flags.sampled
    deadline = time.monotonic() + 60
    while not any(r.quota for r in remote._rules) and time.monotonic() < deadline:
        request()          # traffic, so there are statistics to report and a quota to be given
        time.sleep(0.05)
    while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
        request()          # until both clients are known to the endpoint
        time.sleep(0.05)
    settle = time.monotonic() + 1.5
    while time.monotonic() < settle:
        request()          # a few targets polls: the quotas now split the reservoir between the two
        time.sleep(0.05)
    per_second = {}
    start = math.floor(time.time()) + 1
    while time.time() < start:
        time.sleep(0.001)
    end = start + 3
    while (now := time.time()) < end:
        sampled = request()
        if math.floor(time.time()) != math.floor(now):
            continue  # the reservoir's clock may have read the next second: this one is not counted
        if sampled:
            second = str(math.floor(now))
            per_second[second] = per_second.get(second, 0) + 1
        time.sleep(0.002)
    print(json.dumps({"client": remote.client_id, "per_second": per_second}))
    pulsetrace.shutdown(2)
""")


def test_two_processes_share_one_reservoir_as_the_console_sets_it(endpoint: SamplingServer, tmp_path: Path) -> None:
    # 6 traces/s for the whole fleet, nothing beyond: two processes must keep 3 each, not 6 each.
    endpoint.set_rules([rule("shared", 10, 0.0, 6, URLPath="/shared")])
    config = tmp_path / "pulsetrace.yaml"
    config.write_text(textwrap.dedent(f"""
        service: {{name: shop-api}}
        store: {{path: {tmp_path / 'store'}}}
        tracing:
          exporters: [local]
          sampling:
            keep_errors: false
            slow_ms: 0
            xray_remote: {{endpoint: "{endpoint.url}", poll: 5s, targets_poll: 0.5s}}
    """))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    go = tmp_path / "go"
    env = {**os.environ, "AWS_REGION": "us-east-1"}
    children = [subprocess.Popen([sys.executable, str(script), str(config), str(go)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        assert wait_for(lambda: len(endpoint.clients("shared")) == 2, timeout=60)
    finally:
        go.write_text("go")
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs[0]["client"] != outputs[1]["client"]
    assert set(endpoint.clients("shared")) == {o["client"] for o in outputs}
    seconds = set(outputs[0]["per_second"]) & set(outputs[1]["per_second"])
    assert seconds, outputs
    for second in seconds:
        kept = [o["per_second"][second] for o in outputs]
        assert kept == [3, 3] or (sum(kept) <= 6 and max(kept) <= 3), (second, outputs)
    assert sum(max(o["per_second"].values()) for o in outputs) == 6


FORKING = textwrap.dedent("""
    import json, os, sys, time
    import pulsetrace
    from opentelemetry import trace
    agent = pulsetrace.start(sys.argv[1])
    remote = agent.provider.sampler._remote
    tracer = trace.get_tracer("fork")
    def request():
        with tracer.start_as_current_span("GET /shared", attributes={"http.request.method": "GET",
                                                                    "url.path": "/shared"}):
            pass
    deadline = time.monotonic() + 60
    while not remote.rules and time.monotonic() < deadline:
        time.sleep(0.05)
    parent_id = remote.client_id
    pid = os.fork()   # a pre-forking server's worker
    until = time.monotonic() + 4
    while time.monotonic() < until:
        request()     # in the child, the first decision starts the poller again
        time.sleep(0.05)
    if pid == 0:
        print(json.dumps({"child": remote.client_id, "parent": parent_id}), flush=True)
        pulsetrace.shutdown(2)
        os._exit(0)
    os.waitpid(pid, 0)
    pulsetrace.shutdown(2)
""")


def test_a_forked_worker_reports_as_a_client_of_its_own(endpoint: SamplingServer, tmp_path: Path) -> None:
    endpoint.set_rules([rule("shared", 10, 0.0, 4, URLPath="/shared")])
    config = tmp_path / "pulsetrace.yaml"
    config.write_text(textwrap.dedent(f"""
        store: {{path: {tmp_path / 'store'}}}
        tracing:
          exporters: [local]
          sampling: {{keep_errors: false, slow_ms: 0,
                      xray_remote: {{endpoint: "{endpoint.url}", poll: 5s, targets_poll: 0.5s}}}}
    """))
    script = tmp_path / "fork.py"
    script.write_text(FORKING)
    out = subprocess.run([sys.executable, str(script), str(config)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AWS_REGION": "us-east-1"})
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert ids["child"] != ids["parent"]
    assert set(endpoint.clients("shared")) == {ids["child"], ids["parent"]}, "both processes report statistics"
