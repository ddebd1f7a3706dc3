"""AWS X-Ray local sampling-rules files (``tracing.sampling.xray_rules_file``): parsed into typed rules.

The document format is the X-Ray SDKs' (version 2, or 1 with ``service_name``); an optional
``tier`` per rule is pulsetrace's extension. Parsing only: the sampler
(:mod:`pulsetrace.tracing.sampling`) compiles and applies the rules. Raises
:class:`~pulsetrace.config.problems.ConfigError` with one problem per defect, never anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulsetrace.config.problems import ConfigError, Problem
from pulsetrace.config.schema import TIER_NAMES

__all__ = ["XRayRule", "load_xray_rules"]


@dataclass(frozen=True)
class XRayRule:
    """One rule of an AWS X-Ray local sampling-rules document."""

    description: str
    host: str
    http_method: str
    url_path: str
    fixed_target: float
    rate: float
    #: Optional pulsetrace extension: the tier label for ``sampling.tier`` (else ``xray``).
    tier: str = "xray"
    priority: int | None = None


def _number(rule: Mapping[str, Any], key: str, where: str, problems: list[Problem], *, high: float | None) -> float:
    value = rule.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (high is not None and value > high):
        expected = f"a number from 0 to {high:g}" if high is not None else "a number >= 0"
        problems.append(Problem(f"{where}.{key}", "invalid value" if key in rule else "is required",
                                repr(value) if key in rule else "", expected))
        return 0.0
    return float(value)


def load_xray_rules(path: str) -> tuple[list[XRayRule], XRayRule]:
    """Parse an X-Ray local sampling-rules file (version 2, or 1 with ``service_name``).

    Returns ``(rules in match order, default)``. Rules are ordered by ``priority``
    when they carry one (lower first), else by their place in the file. Raises
    :class:`ConfigError` with one problem per defect.
    """
    key = "tracing.sampling.xray_rules_file"
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ConfigError([Problem(key, "cannot read the file", path, f"a readable file ({exc.strerror})")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(key, "not valid JSON", path, f"an X-Ray sampling-rules document ({exc})")]) \
            from None
    if not isinstance(doc, dict):
        raise ConfigError([Problem(key, "not a sampling-rules document", path, "a JSON object")])
    problems: list[Problem] = []
    version = doc.get("version", 2)
    if version not in (1, 2):
        problems.append(Problem(f"{key}: version", "unsupported version", repr(version), "1 or 2"))
    host_key = "service_name" if version == 1 else "host"
    default_doc = doc.get("default")
    if not isinstance(default_doc, dict):
        problems.append(Problem(f"{key}: default", "is required", "", "an object with fixed_target and rate"))
        default_doc = {}
    default = XRayRule("default", "*", "*", "*", _number(default_doc, "fixed_target", f"{key}: default", problems,
                                                         high=None),
                       _number(default_doc, "rate", f"{key}: default", problems, high=1.0))
    rules_doc = doc.get("rules", [])
    if not isinstance(rules_doc, list):
        problems.append(Problem(f"{key}: rules", "must be a list", type(rules_doc).__name__, "a list of rules"))
        rules_doc = []
    rules: list[XRayRule] = []
    for i, raw in enumerate(rules_doc):
        where = f"{key}: rules[{i}]"
        if not isinstance(raw, dict):
            problems.append(Problem(where, "must be an object", type(raw).__name__, "an object"))
            continue
        texts: dict[str, str] = {}
        for field in (host_key, "http_method", "url_path"):
            value = raw.get(field)
            if not isinstance(value, str) or not value:
                problems.append(Problem(f"{where}.{field}", "is required", "", "a pattern such as \"*\""))
            texts[field] = value if isinstance(value, str) else ""
        tier = raw.get("tier", "xray")
        if tier != "xray" and tier not in TIER_NAMES:
            problems.append(Problem(f"{where}.tier", "unknown tier", repr(tier), "one of " + ", ".join(TIER_NAMES)))
            tier = "xray"
        priority = raw.get("priority")
        rules.append(XRayRule(
            description=str(raw.get("description") or f"rules[{i}]"),
            host=texts[host_key], http_method=texts["http_method"], url_path=texts["url_path"],
            fixed_target=_number(raw, "fixed_target", where, problems, high=None),
            rate=_number(raw, "rate", where, problems, high=1.0),
            tier=str(tier),
            priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
        ))
    if problems:
        raise ConfigError(problems)
    order = sorted(range(len(rules)), key=lambda i: (rules[i].priority if rules[i].priority is not None else 1 << 62, i))
    return [rules[i] for i in order], default
