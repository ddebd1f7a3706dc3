"""Semantic checks of one probe's configuration, one :class:`Problem` per mistake.

Called by :func:`pulsetrace.config.load._probe_problems` once the types are right. Never shows a
secret value: URLs are shown masked. Imports nothing heavy (no driver, no user module: a
custom ``target`` is checked for its form only, it is imported when the probe is built).
"""

from __future__ import annotations

import difflib
import os
import re
from typing import TYPE_CHECKING

from pulsetrace.config.problems import Problem

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

THRESHOLD_KEYS: dict[str, tuple[str, ...]] = {
    "postgres": ("connect_ms", "query_ms", "replay_lag_s"),
    "redis": ("ping_ms", "memory_ratio", "hit_ratio", "evictions"),
    "http": ("latency_ms",),
    "rfid": ("degraded_ratio", "down_ratio", "min_readers"),
    "passive": ("success_rate", "degraded_rate"),
}
_RATIOS = {"memory_ratio", "hit_ratio", "degraded_ratio", "down_ratio"}
_PERCENTS = {"success_rate", "degraded_rate"}
_SCHEMES: dict[str, tuple[str, ...]] = {"postgres": ("postgres", "postgresql"), "redis": ("redis", "rediss", "unix"),
                                        "http": ("http", "https")}
_TARGET_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")
RFID_SOURCE_KEYS = ("redis_url", "key_pattern", "dsn", "query", "push")


def _masked(url: str) -> str:
    from pulsetrace.config.secrets import mask_url

    return mask_url(url)


def _scheme_problem(key: str, url: str, kind: str) -> Problem | None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    allowed = _SCHEMES[kind]
    if scheme not in allowed:
        return Problem(key, f"not a {kind} URL", _masked(url), " or ".join(f"{s}://..." for s in allowed))
    return None


def probe_problems(key: str, probe: ProbeConfig) -> list[Problem]:
    problems: list[Problem] = []
    need = {"postgres": ("dsn",), "redis": ("url",), "http": () if probe.preset else ("url",),
            "passive": ("operation",), "custom": ("target",)}
    for name in need.get(probe.type, ()):
        if not getattr(probe, name):
            problems.append(Problem(f"{key}.{name}", f"is required for a {probe.type} probe"))
    if probe.timeout > probe.interval:
        problems.append(Problem(f"{key}.timeout", "longer than the interval", f"{probe.timeout:g}s",
                                f"<= interval ({probe.interval:g}s): a probe never overlaps itself"))
    if probe.type == "postgres" and probe.dsn:
        problems += [p for p in [_scheme_problem(f"{key}.dsn", probe.dsn, "postgres")] if p]
    if probe.type in ("redis", "http") and probe.url:
        problems += [p for p in [_scheme_problem(f"{key}.url", probe.url, probe.type)] if p]
    if probe.preset and probe.type != "http":
        problems.append(Problem(f"{key}.preset", f"presets apply to http probes, not {probe.type}", probe.preset))
    if probe.type == "http":
        problems += _http_problems(key, probe)
    if probe.type == "rfid":
        problems += _rfid_problems(key, probe)
    if probe.type == "custom" and probe.target and not _TARGET_RE.match(probe.target):
        problems.append(Problem(f"{key}.target", "not a dotted path", probe.target, "e.g. mypkg.checks:QueueProbe"))
    problems += _threshold_problems(key, probe)
    return problems


def _http_problems(key: str, probe: ProbeConfig) -> list[Problem]:
    problems: list[Problem] = []
    if probe.json_condition:
        from pulsetrace.healthchecks.jsoncond import JsonCondition

        try:
            JsonCondition.parse(probe.json_condition)
        except ValueError as exc:
            problems.append(Problem(f"{key}.json_condition", f"invalid condition: {exc}", probe.json_condition,
                                    'e.g. status == "ok" or /status/indicator == "none"'))
    if probe.ca_file and not os.path.isfile(probe.ca_file):
        problems.append(Problem(f"{key}.ca_file", "file not found", probe.ca_file, "a PEM CA bundle"))
    if not probe.expect_status:
        problems.append(Problem(f"{key}.expect_status", "is empty", expected="a list of HTTP statuses, e.g. [200]"))
    return problems


def _rfid_problems(key: str, probe: ProbeConfig) -> list[Problem]:
    problems: list[Problem] = []
    src = probe.source
    for k in src:
        if k not in RFID_SOURCE_KEYS:
            problems.append(Problem(f"{key}.source.{k}", "unknown key", expected="one of " + ", ".join(RFID_SOURCE_KEYS)))
    kinds = [k for k in ("redis_url", "dsn") if src.get(k)]
    push = str(src.get("push", "")).lower() in ("true", "yes", "1", "on")
    if push:
        kinds.append("push")
    if not kinds:
        problems.append(Problem(f"{key}.source", "is required for an rfid probe",
                                expected="{redis_url, key_pattern}, {dsn, query} or {push: true}"))
    elif len(kinds) > 1:
        problems.append(Problem(f"{key}.source", "names more than one source", ", ".join(kinds),
                                "exactly one of redis_url, dsn, push"))
    if src.get("redis_url"):
        problems += [p for p in [_scheme_problem(f"{key}.source.redis_url", src["redis_url"], "redis")] if p]
    if src.get("dsn"):
        problems += [p for p in [_scheme_problem(f"{key}.source.dsn", src["dsn"], "postgres")] if p]
    return problems


def _threshold_problems(key: str, probe: ProbeConfig) -> list[Problem]:
    problems: list[Problem] = []
    allowed = THRESHOLD_KEYS.get(probe.type)
    for name, value in probe.thresholds.items():
        sub = f"{key}.thresholds.{name}"
        if allowed is not None and name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
            hint = f", did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(sub, f"unknown threshold for a {probe.type} probe{hint}",
                                    expected="one of " + ", ".join(allowed)))
            continue
        if name in _RATIOS and not 0.0 <= value <= 1.0:
            problems.append(Problem(sub, "not a ratio", f"{value:g}", "between 0 and 1"))
        elif name in _PERCENTS and not 0.0 <= value <= 100.0:
            problems.append(Problem(sub, "not a percentage", f"{value:g}", "between 0 and 100"))
        elif name != "evictions" and value < 0:
            problems.append(Problem(sub, "negative", f"{value:g}", ">= 0"))
    t = probe.thresholds
    if "down_ratio" in t and "degraded_ratio" in t and t["down_ratio"] > t["degraded_ratio"]:
        problems.append(Problem(f"{key}.thresholds.down_ratio", "above degraded_ratio", f"{t['down_ratio']:g}",
                                f"<= degraded_ratio ({t['degraded_ratio']:g})"))
    if "degraded_rate" in t and t["degraded_rate"] < t.get("success_rate", 99.0):
        problems.append(Problem(f"{key}.thresholds.degraded_rate", "below success_rate", f"{t['degraded_rate']:g}",
                                f">= success_rate ({t.get('success_rate', 99.0):g})"))
    return problems
