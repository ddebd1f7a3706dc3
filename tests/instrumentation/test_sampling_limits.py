"""The sampler against hostile input: linear-time globs, the 1 KB cut, fork safety, a clean module.

Rule globs used to compile to backtracking regexes: ``/api/*/orders/*/items/*/pay``
against an 8 KB ``url.path`` took seconds on the request path. Every decision here
gets 64 KB of the worst text for its rule and must finish in well under 50 ms.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pulsetrace.tracing.sampling
from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import RuleConfig, TierConfig
from pulsetrace.tracing.sampling import MAX_MATCH_CHARS, Bucket, TieredSampler, build_sampler, glob_matcher
from pulsetrace.selfmetrics import SelfMetrics

TIERS = {name: TierConfig(1.0, 0.0) for name in ("critical", "business", "general", "health")}
BUDGET_S = 0.05
BIG = 64 * 1024

#: Rule shapes that cost O(n^stars) with a backtracking translation, each with texts that nearly match.
WORST: list[tuple[str, list[str]]] = [
    ("/api/*/orders/*/items/*/pay", ["/api/" + "/orders/x/items/" * (BIG // 16), "/api/" + "/orders/" * (BIG // 8)]),
    ("*a*a*a*a*a*b", ["a" * BIG, "a" * BIG + "c"]),
    ("a*a*a*a*a*", ["b" + "a" * BIG]),
    ("*?*?*?*?*?*x", ["y" * BIG]),
    ("*aaaaaaaaab*c", ["a" * BIG, "aaaaaaaaab" * (BIG // 10)]),
    ("/a?*/?b*?*/c", ["/ab/" * (BIG // 4)]),
]


def _slowest(fn: Callable[[], object], repeat: int = 3) -> float:
    worst = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        worst = max(worst, time.perf_counter() - start)
    return worst


def reference_glob(pattern: str, text: str) -> bool:
    """X-Ray glob semantics by dynamic programming (obviously right, quadratic, test-only)."""
    n = len(text)
    row = [True] + [False] * n  # row[j]: pattern prefix matches text[:j]
    for c in pattern:
        new = [False] * (n + 1)
        if c == "*":
            seen = False
            for j in range(n + 1):
                seen = seen or row[j]
                new[j] = seen
        else:
            for j in range(1, n + 1):
                new[j] = row[j - 1] and (c == "?" or c == text[j - 1])
        row = new
    return row[n]


# -- linear time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "texts"), WORST, ids=[p for p, _ in WORST])
@pytest.mark.parametrize("case_insensitive", [False, True])
def test_glob_matcher_is_linear_on_64kb_of_the_worst_text_for_its_shape(pattern: str, texts: list[str],
                                                                       case_insensitive: bool) -> None:
    matcher = glob_matcher(pattern, case_insensitive=case_insensitive)
    assert matcher is not None
    for text in texts:
        took = _slowest(functools.partial(matcher, text))
        assert took < BUDGET_S, f"{pattern!r} on {len(text)} chars took {took * 1000:.1f} ms"


@pytest.mark.parametrize(("pattern", "texts"), WORST, ids=[p for p, _ in WORST])
@pytest.mark.parametrize("where", ["path", "host", "name", "method", "attribute"])
def test_a_decision_stays_fast_with_64kb_fields_whatever_the_rule_shape(pattern: str, texts: list[str],
                                                                        where: str) -> None:
    if where == "attribute":  # a rule with attributes is matched rule by rule, not in the combined regex
        rule = RuleConfig(tier="critical", attributes={"tenant": pattern})
    else:
        fields: dict[str, Any] = {where: pattern}
        rule = RuleConfig(tier="critical", **fields)
    # The same worst rule 20 times over, as if every rule of a config were hostile.
    sampler = TieredSampler(TIERS, "general", [rule] * 20)
    for text in texts:
        attrs: dict[str, Any] = {"url.path": "/", "server.address": "h", "http.request.method": "GET"}
        name = "GET"
        if where == "path":
            attrs["url.path"] = text
        elif where == "host":
            attrs["server.address"] = text
        elif where == "method":
            attrs["http.request.method"] = text
        elif where == "attribute":
            attrs["tenant"] = text
        else:
            name = text
        took = _slowest(functools.partial(sampler.should_sample, None, 1, name, attributes=attrs))
        assert took < BUDGET_S, f"{where} {pattern!r} on {len(text)} chars took {took * 1000:.1f} ms"


def test_xray_rules_file_globs_are_linear_too(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": 2, "default": {"fixed_target": 0, "rate": 0.0}, "rules": [
        {"description": f"r{i}", "host": "*a*a*a*a*b", "http_method": "*", "url_path": pattern,
         "fixed_target": 0, "rate": 1.0} for i, (pattern, _) in enumerate(WORST)]}))
    cfg = config_from_mapping({"tracing": {"sampling": {"xray_rules_file": str(path), "keep_errors": False,
                                                        "slow_ms": 0}}}, env={})
    sampler = build_sampler(cfg, SelfMetrics())
    for _, texts in WORST:
        for text in texts:
            attrs = {"url.path": text, "server.address": "a" * BIG, "http.request.method": "GET"}
            took = _slowest(functools.partial(sampler.should_sample, None, 1, "GET", attributes=attrs))
            assert took < BUDGET_S, f"{len(text)} chars took {took * 1000:.1f} ms"


def test_rules_see_only_the_first_1024_characters_of_a_field() -> None:
    sampler = TieredSampler(TIERS, "general", [RuleConfig(tier="critical", path="/api/*/pay"),
                                               RuleConfig(tier="business", path="/api/" + "x" * 1019)])
    assert MAX_MATCH_CHARS == 1024
    near = "/api/" + "x" * (MAX_MATCH_CHARS - 9) + "/pay"
    assert len(near) == MAX_MATCH_CHARS
    assert sampler.classify("GET", {"url.path": near}).result_attributes["sampling.rule"] == "rules[0]"
    # Past the cut the ending is not seen; the text up to the cut is.
    assert sampler.classify("GET", {"url.path": "/api/" + "x" * 2000 + "/pay"}).result_attributes[
        "sampling.rule"] == "rules[1]"


# -- same answers as before -----------------------------------------------------------------------


def test_glob_matching_agrees_with_the_reference_semantics_on_random_globs() -> None:
    rng = random.Random(20240607)
    for _ in range(3000):
        pattern = "".join(rng.choice("ab/*?") for _ in range(rng.randint(1, 8)))
        matcher = glob_matcher(pattern, case_insensitive=False)
        for _ in range(6):
            text = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 10)))
            got = matcher is None or matcher(text)
            assert got == reference_glob(pattern, text), (pattern, text)


def test_combined_rule_regex_agrees_with_rule_by_rule_matching_on_random_rules() -> None:
    rng = random.Random(7)

    def glob() -> str:
        return "".join(rng.choice("ab/*?") for _ in range(rng.randint(1, 6)))

    for _ in range(400):
        rules = [RuleConfig(tier="critical", path=glob(), host=rng.choice(["*", "h*", "*h?", "?"]),
                            method=rng.choice(["*", "GET", "G*T", "?ET"]), name=rng.choice(["*", "n", "*x*"]))
                 for _ in range(rng.randint(1, 4))]
        combined = TieredSampler(TIERS, "general", rules)
        # The same rules with a (matching) attribute condition go through the rule-by-rule path.
        single = TieredSampler(TIERS, "general", [RuleConfig(tier=r.tier, path=r.path, host=r.host, method=r.method,
                                                             name=r.name, attributes={"k": "*"}) for r in rules])
        for _ in range(10):
            attrs = {"url.path": "".join(rng.choice("abAB/") for _ in range(rng.randint(0, 10))),
                     "http.request.method": rng.choice(["GET", "get", "POST", "GETX"]),
                     "server.address": rng.choice(["h", "hh", "xhy", "HX"]), "k": "v"}
            name = rng.choice(["n", "x", "axb", "N"])
            assert combined.classify(name, attrs).result_attributes == \
                single.classify(name, attrs).result_attributes, (rules, attrs, name)


# -- the module itself ----------------------------------------------------------------------------


def test_module_source_compiles_with_warnings_as_errors() -> None:
    source = Path(pulsetrace.tracing.sampling.__file__).read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(source, pulsetrace.tracing.sampling.__file__, "exec")


# -- fork -----------------------------------------------------------------------------------------


def run_in_forked_child(fn: Callable[[], None], timeout: float = 10.0) -> int:
    """Exit code of a forked child running ``fn`` (-9 when it hung and was killed)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports any failure through its exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)


def hold_lock_in_a_thread(lock: Any) -> Callable[[], None]:
    """Take ``lock`` in another thread (as a request thread would at fork time); returns the release."""
    held = threading.Event()
    release = threading.Event()

    def run() -> None:
        with lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=run, name="lock-holder", daemon=True)
    thread.start()
    assert held.wait(5)

    def done() -> None:
        release.set()
        thread.join(5)

    return done


def test_a_forked_child_can_sample_while_a_parent_thread_held_a_reservoir_lock() -> None:
    sampler = TieredSampler({k: TierConfig(0.0, 5.0) for k in TIERS}, "general",
                            [RuleConfig(tier="critical", path="/pay*")])
    bucket: Bucket = sampler.buckets["general"]
    release = hold_lock_in_a_thread(bucket._lock)

    def child() -> None:
        for _ in range(3):
            sampler.should_sample(None, 1, "GET", attributes={"url.path": "/x"})

    try:
        assert run_in_forked_child(child) == 0
    finally:
        release()
    assert sampler.should_sample(None, 1, "GET", attributes={"url.path": "/x"}) is not None
