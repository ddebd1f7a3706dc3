"""X-Ray centralized sampling: the console's rules, matched like X-Ray, with fleet-wide reservoirs.

The rules come from ``GetSamplingRules`` and the reservoir quotas from ``GetSamplingTargets``
(both fetched by :mod:`pulsetrace.tracing.xray_remote_poller`); this module holds the model and
the decision, and does no I/O. At a root span the tiered sampler
(:mod:`pulsetrace.tracing.sampling`) first works out the span's local tier, then asks
:meth:`RemoteSampling.decide`:

* Rules are tried in X-Ray's order (``Priority``, then ``RuleName``); a rule matches when its
  ``ServiceName``, ``ServiceType``, ``Host``, ``HTTPMethod``, ``URLPath`` and ``ResourceARN``
  globs match (``*`` any run, ``?`` one character, case-insensitive, as the X-Ray SDKs do) and
  every one of its ``Attributes`` matches the span attribute of that name. The local tier is
  offered as the attribute ``sampling.tier``, so a console rule with the attribute
  ``sampling.tier = critical`` steers the critical tier fleet-wide.
* X-Ray's ``Default`` rule matches everything; it decides only with ``use_default_rule``,
  otherwise what no other remote rule matches is left to the local tiers.
* A matched rule keeps its reservoir quota per second while the quota's TTL lasts, else
  *borrows* one trace per second (until the first targets arrive, or after they expire), then
  keeps its fixed rate (the target's, else the rule's) decided on the trace id's random bits.
  Requests, sampled and borrowed counts are kept per rule for the next statistics report.
* While no rules are known, or nothing was heard from the endpoint for ``fallback_after``,
  :meth:`RemoteSampling.decide` answers ``None``: the local tiers, rules and rules file
  decide, so an unreachable endpoint never means "sample everything" or "sample nothing".

Thread-safe (a lock per rule for its reservoir and counters; rules swapped whole). Never raises
into the tracer: a rule that fails to compile is left out.
"""

from __future__ import annotations

import datetime
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulsetrace.config.schema import XRayRemoteConfig
from pulsetrace.forking import on_fork_in_child
from pulsetrace.tracing.sampling import (
    RULE_ATTR,
    TIER_ATTR,
    Bucket,
    Matcher,
    _Rule,
    glob_matcher,
    request_fields,
)

__all__ = ["DEFAULT_RULE", "RemoteRule", "RemoteSampling", "Target", "request_fields", "service_type_from_env"]

_LOW64 = (1 << 64) - 1
#: The name X-Ray gives the rule every account has and nobody can delete.
DEFAULT_RULE = "Default"
#: ``sampling.rule`` of a root span that a remote rule decided: this prefix, then the rule's name.
RULE_PREFIX = "xray-remote:"


@dataclass(frozen=True)
class RemoteRule:
    """One ``SamplingRule`` of a ``GetSamplingRules`` answer (field names as X-Ray's, snake-cased)."""

    name: str
    priority: int
    fixed_rate: float
    reservoir_size: int
    service_name: str = "*"
    service_type: str = "*"
    host: str = "*"
    http_method: str = "*"
    url_path: str = "*"
    resource_arn: str = "*"
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RemoteRule | None:
        """A rule from one ``SamplingRuleRecord``; ``None`` for a version this client does not know."""
        rule = record.get("SamplingRule") or {}
        if rule.get("Version", 1) != 1 or not rule.get("RuleName"):
            return None
        rate = float(rule.get("FixedRate", 0.0))
        return cls(
            name=str(rule["RuleName"]), priority=int(rule.get("Priority", 10000)),
            fixed_rate=min(1.0, max(0.0, rate if math.isfinite(rate) else 0.0)),
            reservoir_size=max(0, int(rule.get("ReservoirSize", 0))),
            service_name=str(rule.get("ServiceName", "*")), service_type=str(rule.get("ServiceType", "*")),
            host=str(rule.get("Host", "*")), http_method=str(rule.get("HTTPMethod", "*")),
            url_path=str(rule.get("URLPath", "*")), resource_arn=str(rule.get("ResourceARN", "*")),
            attributes={str(k): str(v) for k, v in (rule.get("Attributes") or {}).items()},
        )


@dataclass(frozen=True)
class Target:
    """One ``SamplingTargetDocument``: what X-Ray hands this client for one rule."""

    rule_name: str
    fixed_rate: float
    #: Traces per second this client may keep from the fleet's reservoir; ``None``: none granted.
    quota: int | None = None
    #: Epoch seconds after which the quota no longer holds.
    quota_ttl: float | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Target:
        ttl = doc.get("ReservoirQuotaTTL")
        if isinstance(ttl, datetime.datetime):
            ttl = ttl.timestamp()
        quota = doc.get("ReservoirQuota")
        return cls(rule_name=str(doc["RuleName"]), fixed_rate=float(doc.get("FixedRate", 0.0)),
                   quota=int(quota) if quota is not None else None,
                   quota_ttl=float(ttl) if ttl is not None else None)


def service_type_from_env(env: Mapping[str, str] | None = None) -> str:
    """X-Ray's ``ServiceType`` (the segment ``origin``) of this process, from where it runs."""
    env = os.environ if env is None else env
    if env.get("AWS_LAMBDA_FUNCTION_NAME"):
        return "AWS::Lambda::Function"
    if env.get("ECS_CONTAINER_METADATA_URI_V4") or env.get("ECS_CONTAINER_METADATA_URI"):
        return "AWS::ECS::Container"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "AWS::EKS::Container"
    return ""


def _matcher(pattern: str) -> Matcher | None:
    return glob_matcher(pattern, case_insensitive=True)


class _LiveRule:
    """A rule compiled for matching, with its reservoir and its counters since the last report."""

    def __init__(self, rule: RemoteRule) -> None:
        self.rule = rule
        self.result_attributes: dict[str, str] = {RULE_ATTR: RULE_PREFIX + rule.name}
        # The local rules' matcher, with this rule's globs; its bucket is unused (the reservoir is below).
        self.matcher = _Rule(Bucket(rule.name, 0.0, 0.0), _matcher(rule.http_method), _matcher(rule.url_path),
                             _matcher(rule.host), None, tuple((k, _matcher(v)) for k, v in rule.attributes.items()),
                             self.result_attributes)
        self.lock = threading.Lock()
        self.fixed_rate = rule.fixed_rate
        self.bound = round(rule.fixed_rate * (_LOW64 + 1))
        self.quota: int | None = None
        self.quota_ttl = 0.0
        self.second = -1
        self.taken = 0
        self.borrowed_this_second = 0
        self.requests = 0
        self.sampled = 0
        self.borrows = 0

    def take(self, trace_id: int, now: float) -> bool:
        """Keep this trace? Reservoir quota while fresh, else borrow one a second, then the fixed rate."""
        second = math.floor(now)
        with self.lock:
            self.requests += 1
            if second != self.second:
                self.second = second
                self.taken = 0
                self.borrowed_this_second = 0
            if self.quota is not None and self.quota_ttl >= now:
                if self.taken < self.quota:
                    self.taken += 1
                    self.sampled += 1
                    return True
            elif self.rule.reservoir_size > 0 and self.borrowed_this_second < 1:
                self.borrowed_this_second += 1
                self.borrows += 1
                self.sampled += 1
                return True
            if (trace_id & _LOW64) < self.bound:
                self.sampled += 1
                return True
            return False

    def carry_over(self, old: _LiveRule) -> None:
        """Keep the quota and counters of the same rule from the previous fetch."""
        with old.lock:
            self.quota, self.quota_ttl = old.quota, old.quota_ttl
            self.second, self.taken, self.borrowed_this_second = old.second, old.taken, old.borrowed_this_second
            self.requests, self.sampled, self.borrows = old.requests, old.sampled, old.borrows
            if old.rule.fixed_rate == self.rule.fixed_rate:
                self.fixed_rate, self.bound = old.fixed_rate, old.bound

    def apply(self, target: Target) -> None:
        with self.lock:
            rate = min(1.0, max(0.0, target.fixed_rate)) if math.isfinite(target.fixed_rate) else self.fixed_rate
            self.fixed_rate = rate
            self.bound = round(rate * (_LOW64 + 1))
            if target.quota is not None:
                self.quota = max(0, target.quota)
                self.quota_ttl = target.quota_ttl if target.quota_ttl is not None else math.inf

    def statistics(self, client_id: str, now: float) -> dict[str, Any] | None:
        """This rule's ``SamplingStatisticsDocument`` since the last one, counters reset; ``None`` for a
        rule that neither saw a request nor holds a quota (X-Ray has nothing to hand it)."""
        with self.lock:
            requests, sampled, borrows = self.requests, self.sampled, self.borrows
            if requests == 0 and self.quota is None:
                return None
            self.requests = self.sampled = self.borrows = 0
        return {"RuleName": self.rule.name, "ClientID": client_id,
                "Timestamp": datetime.datetime.fromtimestamp(now, datetime.timezone.utc),
                "RequestCount": requests, "SampledCount": sampled, "BorrowCount": borrows}

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.quota, self.quota_ttl = None, 0.0
        self.second = -1
        self.taken = self.borrowed_this_second = self.requests = self.sampled = self.borrows = 0


def _new_client_id() -> str:
    return secrets.token_hex(12)  # X-Ray's ClientID: 24 hexadecimal digits


class RemoteSampling:
    """The console's rules and this process's share of their reservoirs.

    ``service_name``/``service_type``/``resource_arn`` are this process's, matched against each
    rule once when the rules arrive (they do not change per span). ``clock`` gives epoch seconds
    (X-Ray's quota TTLs are wall-clock times). :meth:`decide` is called on the application's
    threads; :meth:`set_rules`, :meth:`apply_targets` and :meth:`statistics` by the poller.
    """

    def __init__(self, cfg: XRayRemoteConfig, service_name: str, service_type: str = "", resource_arn: str = "",
                 *, clock: Callable[[], float] = time.time) -> None:
        self.config = cfg
        self.service_name = service_name
        self.service_type = service_type
        self.resource_arn = resource_arn
        self.client_id = _new_client_id()
        self._clock = clock
        self._rules: tuple[_LiveRule, ...] = ()
        #: Epoch seconds of the last successful exchange with the endpoint (0: never).
        self.last_ok = 0.0
        self.rules_fetched_at = 0.0
        #: Set in a forked child: the poller thread of the parent does not exist there.
        self.forked = False
        #: Starts the poller again (installed by it); called on the first decision in a forked child.
        self.restart: Callable[[], None] | None = None
        on_fork_in_child(self._after_fork)

    @property
    def rules(self) -> tuple[RemoteRule, ...]:
        return tuple(r.rule for r in self._rules)

    def active(self, now: float | None = None) -> bool:
        """Do the remote rules decide now? (Known, and heard from within ``fallback_after``.)"""
        now = self._clock() if now is None else now
        return bool(self._rules) and now - self.last_ok <= self.config.fallback_after

    def _applies_here(self, rule: RemoteRule) -> bool:
        if rule.name == DEFAULT_RULE and not self.config.use_default_rule:
            return False
        for pattern, value in ((rule.service_name, self.service_name), (rule.service_type, self.service_type),
                               (rule.resource_arn, self.resource_arn)):
            matcher = _matcher(pattern)
            if matcher is not None and not matcher(value):
                return False
        return True

    def set_rules(self, rules: Sequence[RemoteRule], now: float | None = None) -> None:
        """Install a ``GetSamplingRules`` answer; a rule fetched before keeps its quota and counters."""
        now = self._clock() if now is None else now
        old = {r.rule.name: r for r in self._rules}
        live: list[_LiveRule] = []
        for rule in sorted(rules, key=lambda r: (r.priority, r.name)):
            if not self._applies_here(rule):
                continue
            try:
                compiled = _LiveRule(rule)
            except Exception:  # a glob the matcher cannot compile: leave the rule out, keep the rest
                continue
            previous = old.get(rule.name)
            if previous is not None:
                compiled.carry_over(previous)
            live.append(compiled)
        self._rules = tuple(live)
        self.rules_fetched_at = now
        self.last_ok = now

    def apply_targets(self, targets: Sequence[Target], now: float | None = None) -> None:
        """Install a ``GetSamplingTargets`` answer: quotas, their TTLs and fixed rates."""
        by_name = {t.rule_name: t for t in targets}
        for rule in self._rules:
            target = by_name.get(rule.rule.name)
            if target is not None:
                rule.apply(target)
        self.last_ok = self._clock() if now is None else now

    def statistics(self, now: float | None = None) -> list[dict[str, Any]]:
        """One ``SamplingStatisticsDocument`` per rule (counters reset), for ``GetSamplingTargets``."""
        now = self._clock() if now is None else now
        return [doc for rule in self._rules if (doc := rule.statistics(self.client_id, now)) is not None]

    def decide(self, trace_id: int, name: str, attributes: Mapping[str, Any] | None,
               tier: str) -> tuple[bool, Mapping[str, str]] | None:
        """``(sampled, attributes for the root span)`` from the first matching remote rule, or
        ``None`` when no remote rule decides (the local tiers do)."""
        if self.forked:
            self.forked = False
            if self.restart is not None:
                self.restart()
        rules = self._rules
        if not rules:
            return None
        now = self._clock()
        if now - self.last_ok > self.config.fallback_after:
            return None
        attrs: dict[str, Any] = dict(attributes) if attributes else {}
        attrs.setdefault(TIER_ATTR, tier)
        method, path, host = request_fields(attrs)
        for rule in rules:
            if rule.matcher.matches(method, path, host, name, attrs):
                sampled = rule.take(trace_id, now)
                return sampled, {TIER_ATTR: tier, **rule.result_attributes}
        return None

    def _after_fork(self) -> None:
        # A child is a client of its own: its own id, no quota (the parent's was the parent's),
        # no counters; it borrows until its first targets arrive.
        self.client_id = _new_client_id()
        for rule in self._rules:
            rule.reset()
        self.forked = True
