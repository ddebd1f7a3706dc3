"""The tiered head sampler: which new traces are kept, decided once at the root span.

A root span is put in a *bucket*: the tier a business operation declared
(``business.tier``), else the first matching ``tracing.sampling.rules`` entry,
else the first matching rule of the AWS X-Ray local sampling-rules file
(``xray_rules_file``), else ``default_tier``. Each bucket works the way X-Ray's
rules do: a *reservoir* of traces per second that are always kept, then a fixed
*rate* of the rest. Tiers keep one reservoir each, shared by every rule that maps
to the tier; each X-Ray file rule has its own. The rate is decided on the low 64
bits of the trace id (the random part of an X-Ray id), like ``TraceIdRatioBased``.

Children follow their parent: a sampled parent (local, or remote through W3C
``traceparent`` or ``X-Amzn-Trace-Id`` ``Sampled=1``) gives a sampled child. When
keep-errors or slow-request keeping is on, traces that were not sampled are still
*recorded* (``RECORD_ONLY``) so that their local part can be kept later if it fails
(see :mod:`pulsetrace.instrumentation.keep_errors`); otherwise they are dropped.

Root spans carry ``sampling.tier`` and ``sampling.rule``. The sampler is
thread-safe (one small lock per reservoir) and never raises into the tracer: a
failure in classification falls back to the default tier.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from pulsetrace.config.schema import Config, RuleConfig, SamplingConfig, TierConfig
from pulsetrace.forking import on_fork_in_child
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing.xray_rules import XRayRule, load_xray_rules

__all__ = ["Bucket", "TieredSampler", "XRayRule", "build_sampler", "glob_matcher", "load_xray_rules", "request_fields"]

_log = logging.getLogger("pulsetrace.sampling")

_LOW64 = (1 << 64) - 1
TIER_ATTR = "sampling.tier"
RULE_ATTR = "sampling.rule"
BUSINESS_TIER_ATTR = "business.tier"

Matcher = Callable[[str], bool]


#: The longest method, path, host, span name or attribute value a rule looks at: longer text is
#: cut to this before matching, so a hostile 1 MB ``url.path`` costs the same as a 1 KB one.
MAX_MATCH_CHARS = 1024


def _glob_regex(pattern: str, any_char: str) -> str:
    r"""Regex source for an X-Ray glob that matches in time linear in the text.

    ``*`` splits the glob into fixed-width pieces. The first piece is anchored at
    the start and the last at the end; each middle piece takes its *leftmost*
    occurrence inside an atomic group (``(?>any*?piece)``), which is always a right
    choice for fixed-width pieces, so the engine never comes back to try another
    and a glob with k stars costs O(n) instead of O(n^k). ``any_char`` is what
    ``?``/``*`` may match (``.`` alone, ``[^\x00]`` inside the joined key).
    """
    def piece(text: str) -> str:
        return "".join(any_char if c == "?" else re.escape(c) for c in text)

    pieces = pattern.split("*")
    if len(pieces) == 1:
        return piece(pattern)
    middle = "".join(f"(?>{any_char}*?{piece(p)})" for p in pieces[1:-1] if p)
    last = pieces[-1]
    tail = f"{any_char}*{piece(last)}" if last else f"{any_char}*+"
    return piece(pieces[0]) + middle + tail


def glob_matcher(pattern: str, *, case_insensitive: bool) -> Matcher | None:
    """A compiled X-Ray-style glob (``*`` any run, ``?`` one character); ``None`` matches anything.

    Patterns without wildcards compile to an equality test and ``prefix*`` to
    ``startswith``, the two shapes nearly every rule has; any other shape matches in
    linear time (:func:`_glob_regex`).
    """
    if pattern in ("", "*"):
        return None
    pat = pattern.lower() if case_insensitive else pattern
    body = pat[:-1]
    if "*" not in pat and "?" not in pat:
        if case_insensitive:
            return lambda v: v.lower() == pat
        return pat.__eq__
    if pat.endswith("*") and "*" not in body and "?" not in body:
        if case_insensitive:
            return lambda v: v.lower().startswith(body)
        return lambda v: v.startswith(body)
    flags = re.IGNORECASE | re.DOTALL if case_insensitive else re.DOTALL
    compiled = re.compile(_glob_regex(pattern, "."), flags)
    return lambda v: compiled.fullmatch(v) is not None


class Bucket:
    """One reservoir (traces per second always kept) followed by a fixed rate.

    The reservoir is counted per clock second, X-Ray style. A fractional reservoir
    is spread over seconds (0.5 keeps one trace every other second; 2.5 keeps 2
    then 3), so the long-run rate is exact.
    """

    __slots__ = ("name", "rate", "reservoir", "_bound", "_lock", "_second", "_used", "_quota")

    def __init__(self, name: str, rate: float, reservoir: float) -> None:
        if not 0.0 <= rate <= 1.0 or reservoir < 0.0 or not math.isfinite(reservoir):
            raise ValueError(f"bucket {name}: rate must be in [0, 1] and reservoir >= 0")
        self.name = name
        self.rate = rate
        self.reservoir = reservoir
        self._bound = round(rate * (_LOW64 + 1))
        self._lock = threading.Lock()
        self._second = -1
        self._used = 0
        self._quota = 0

    def take(self, trace_id: int, now: float) -> bool:
        """Keep this trace? Consumes a reservoir slot when one is left in this second."""
        if self.reservoir > 0.0:
            second = math.floor(now)
            with self._lock:
                if second != self._second:
                    self._second = second
                    self._used = 0
                    r = self.reservoir
                    self._quota = math.floor((second + 1) * r) - math.floor(second * r)
                if self._used < self._quota:
                    self._used += 1
                    return True
        return (trace_id & _LOW64) < self._bound

    def after_fork(self) -> None:
        """Called in a forked child: a new lock and a fresh second.

        The parent's lock may have been held by a thread that does not exist in the
        child; and each worker keeps its own reservoir.
        """
        self._lock = threading.Lock()
        self._second = -1
        self._used = 0
        self._quota = 0


class _Rule:
    """A compiled rule: every present matcher must match; maps to ``bucket``.

    Holds its two possible root decisions for a span started without attributes
    ready-made (they carry only ``sampling.tier`` and ``sampling.rule``).
    """

    __slots__ = ("bucket", "method", "path", "host", "name", "attributes", "result_attributes", "sampled",
                 "recorded")

    def __init__(self, bucket: Bucket, method: Matcher | None, path: Matcher | None, host: Matcher | None,
                 name: Matcher | None, attributes: tuple[tuple[str, Matcher | None], ...],
                 result_attributes: Mapping[str, str]) -> None:
        self.bucket = bucket
        self.method = method
        self.path = path
        self.host = host
        self.name = name
        self.attributes = attributes
        self.result_attributes = dict(result_attributes)
        self.sampled = SamplingResult(Decision.RECORD_AND_SAMPLE, self.result_attributes)
        self.recorded = SamplingResult(Decision.RECORD_ONLY, self.result_attributes)

    def matches(self, method: str, path: str, host: str, name: str, attributes: Mapping[str, Any]) -> bool:
        if self.path is not None and not self.path(path):
            return False
        if self.method is not None and not self.method(method):
            return False
        if self.host is not None and not self.host(host):
            return False
        if self.name is not None and not self.name(name):
            return False
        for key, matcher in self.attributes:
            value = attributes.get(key)
            if value is None:
                return False
            if matcher is not None:
                text = value if isinstance(value, str) else str(value)
                if not matcher(text[:MAX_MATCH_CHARS]):
                    return False
        return True


_Segment = tuple[re.Pattern[str], dict[str, _Rule]] | _Rule


def _field_regex(pattern: str, case_insensitive: bool) -> str:
    """One field of the joined key: its glob then the NUL after it, in an atomic group.

    The group stops the engine from re-matching an earlier field when a later one
    fails, so the fields of one rule cost the sum, not the product, of their times.
    """
    if pattern in ("", "*"):
        return "[^\x00]*+\x00"
    body = _glob_regex(pattern, "[^\x00]")
    return f"(?>(?i:{body})\x00)" if case_insensitive else f"(?>{body}\x00)"


def _compile_segments(rules: Sequence[_Rule], globs: Sequence[tuple[str, str, str, str, bool] | None]) \
        -> list[_Segment]:
    """Runs of attribute-free rules become one alternation over ``method NUL host NUL path NUL name NUL``.

    The regex engine tries alternatives in order at the one position, so the first
    rule that matches wins, exactly as the rule-by-rule loop would, in one C call.
    """
    segments: list[_Segment] = []
    run: list[tuple[str, _Rule]] = []

    def close() -> None:
        if run:
            segments.append((re.compile("|".join(f"(?P<r{i}>{rx})" for i, (rx, _) in enumerate(run)), re.DOTALL),
                             {f"r{i}": rule for i, (_, rule) in enumerate(run)}))
            run.clear()

    for rule, glob in zip(rules, globs):
        if glob is None:
            close()
            segments.append(rule)
            continue
        method, host, path, name, ci_path = glob
        rx = "".join((_field_regex(method, True), _field_regex(host, True), _field_regex(path, ci_path),
                       _field_regex(name, False))) + r"\Z"
        run.append((rx, rule))
    close()
    return segments


class RemoteRules(Protocol):
    """Centralized rules consulted at a root span after its local tier is known
    (:class:`pulsetrace.tracing.xray_remote.RemoteSampling`)."""

    def decide(self, trace_id: int, name: str, attributes: Mapping[str, Any] | None,
               tier: str) -> tuple[bool, Mapping[str, str]] | None:
        """``(sampled, root span attributes)``, or ``None`` to let the local tier decide."""
        ...


def _tier_configs(sampling: SamplingConfig) -> dict[str, TierConfig]:
    tiers = dict(SamplingConfig().tiers)  # tiers the YAML leaves out keep their defaults
    tiers.update(sampling.tiers)
    return tiers


def request_fields(attrs: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(method, path, host)`` of a server span's start attributes (new or old semantic conventions)."""
    method = attrs.get("http.request.method") or attrs.get("http.method") or ""
    path = attrs.get("url.path")
    if path is None:
        target = attrs.get("http.target") or ""
        path = target.split("?", 1)[0] if isinstance(target, str) else ""
    host = attrs.get("server.address")
    if host is None:
        raw = attrs.get("http.host") or ""
        host = raw.rsplit(":", 1)[0] if isinstance(raw, str) and ":" in raw else raw
    return str(method)[:MAX_MATCH_CHARS], str(path)[:MAX_MATCH_CHARS], str(host)[:MAX_MATCH_CHARS]


class TieredSampler(Sampler):
    """Tiers with reservoirs, rules first-match-wins, parent-based for children.

    ``record_unsampled`` turns the not-sampled decision into ``RECORD_ONLY`` (for
    keep-errors / slow). ``clock`` gives seconds for the reservoirs (injectable for
    tests). Thread-safe.
    """

    def __init__(self, tiers: Mapping[str, TierConfig], default_tier: str, rules: Sequence[RuleConfig] = (),
                 xray_rules: Sequence[XRayRule] = (), *, record_unsampled: bool = False,
                 clock: Callable[[], float] = time.monotonic, remote: RemoteRules | None = None) -> None:
        if default_tier not in tiers:
            raise ValueError(f"default tier {default_tier!r} is not one of {sorted(tiers)}")
        self._buckets = {name: Bucket(name, t.rate, t.reservoir) for name, t in tiers.items()}
        self._tier_rules = {name: _Rule(bucket, None, None, None, None, (),
                                        {TIER_ATTR: name, RULE_ATTR: BUSINESS_TIER_ATTR})
                            for name, bucket in self._buckets.items()}
        self._record_unsampled = record_unsampled
        self._clock = clock
        self._rules: list[_Rule] = []
        #: The glob source of each rule (method, host, path, name, case-insensitive path) for the combined regex.
        self._rule_globs: list[tuple[str, str, str, str, bool] | None] = []
        for i, rule in enumerate(rules):
            if rule.tier not in self._buckets:
                raise ValueError(f"rules[{i}]: unknown tier {rule.tier!r}")
            self._rules.append(_Rule(
                bucket=self._buckets[rule.tier],
                method=glob_matcher(rule.method, case_insensitive=True),
                path=glob_matcher(rule.path, case_insensitive=False),
                host=glob_matcher(rule.host, case_insensitive=True),
                name=glob_matcher(rule.name, case_insensitive=False),
                attributes=tuple((k, glob_matcher(str(v), case_insensitive=False))
                                 for k, v in rule.attributes.items()),
                result_attributes={TIER_ATTR: rule.tier, RULE_ATTR: f"rules[{i}]"},
            ))
            self._rule_globs.append(None if rule.attributes else (rule.method, rule.host, rule.path, rule.name, False))
        for xr in xray_rules:
            self._rules.append(_Rule(
                bucket=Bucket(f"xray:{xr.description}", xr.rate, xr.fixed_target),
                method=glob_matcher(xr.http_method, case_insensitive=True),
                path=glob_matcher(xr.url_path, case_insensitive=True),
                host=glob_matcher(xr.host, case_insensitive=True),
                name=None, attributes=(),
                result_attributes={TIER_ATTR: xr.tier, RULE_ATTR: f"xray:{xr.description}"},
            ))
            self._rule_globs.append((xr.http_method, xr.host, xr.url_path, "", True))
        self._default = _Rule(self._buckets[default_tier], None, None, None, None, (),
                              {TIER_ATTR: default_tier, RULE_ATTR: "default"})
        self._segments = _compile_segments(self._rules, self._rule_globs)
        self._default_tier = default_tier
        self._dropped = SamplingResult(Decision.DROP)
        self._remote = remote
        on_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        for bucket in {id(b): b for b in (*self._buckets.values(), *(r.bucket for r in self._rules))}.values():
            bucket.after_fork()

    @property
    def buckets(self) -> Mapping[str, Bucket]:
        return self._buckets

    def classify(self, name: str, attributes: Attributes) -> _Rule:
        """The rule (and so the bucket) a root span with these attributes falls in."""
        attrs: Mapping[str, Any] = attributes if attributes is not None else {}
        tier = attrs.get(BUSINESS_TIER_ATTR)
        if tier is not None:
            declared = self._tier_rules.get(tier) if isinstance(tier, str) else None
            if declared is not None:
                return declared
        if not self._rules:
            return self._default
        # Cut before matching: the cost of a decision must not grow with what a client sends.
        method, path, host = request_fields(attrs)
        name = name[:MAX_MATCH_CHARS]
        key = ""
        for segment in self._segments:
            if isinstance(segment, _Rule):
                if segment.matches(method, path, host, name, attrs):
                    return segment
                continue
            if not key:
                key = f"{method}\x00{host}\x00{path}\x00{name}\x00"
            match = segment[0].match(key)
            if match is not None:
                return segment[1][match.lastgroup or ""]
        return self._default

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context)
        pctx = parent.get_span_context()
        if pctx.is_valid:
            if pctx.trace_flags.sampled:
                decision = Decision.RECORD_AND_SAMPLE
            elif self._record_unsampled and (pctx.is_remote or parent.is_recording()):
                decision = Decision.RECORD_ONLY
            else:
                return self._dropped if not pctx.trace_state else SamplingResult(Decision.DROP, None,
                                                                                pctx.trace_state)
            # The SDK takes a recorded span's initial attributes from the result: pass them on.
            return SamplingResult(decision, attributes, pctx.trace_state or None)
        try:
            rule = self.classify(name, attributes)
        except Exception:  # a bad attribute value must not break span creation
            rule = self._default
        if self._remote is not None:
            remote = self._remote_result(trace_id, name, attributes, rule)
            if remote is not None:
                return remote
        if rule.bucket.take(trace_id, self._clock()):
            decision = Decision.RECORD_AND_SAMPLE
        elif self._record_unsampled:
            decision = Decision.RECORD_ONLY
        else:
            return self._dropped
        if attributes:
            merged = dict(attributes)
            merged.update(rule.result_attributes)
            return SamplingResult(decision, merged)
        return rule.sampled if decision is Decision.RECORD_AND_SAMPLE else rule.recorded

    def _remote_result(self, trace_id: int, name: str, attributes: Attributes, rule: _Rule) -> SamplingResult | None:
        try:
            remote = self._remote.decide(trace_id, name, attributes, rule.result_attributes[TIER_ATTR]) \
                if self._remote is not None else None
        except Exception:  # the centralized rules must never break span creation: the tier decides
            return None
        if remote is None:
            return None
        sampled, result_attributes = remote
        if not sampled and not self._record_unsampled:
            return self._dropped
        merged = dict(attributes) if attributes else {}
        merged.update(result_attributes)
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.RECORD_ONLY, merged)

    def get_description(self) -> str:
        tiers = ",".join(f"{b.name}={b.rate:g}+{b.reservoir:g}/s" for b in self._buckets.values())
        return f"PulseTraceTiered{{{tiers};rules={len(self._rules)};default={self._default_tier}}}"


def build_sampler(cfg: Config, metrics: SelfMetrics, *, clock: Callable[[], float] = time.monotonic,
                  remote: RemoteRules | None = None) -> Sampler:
    """The sampler for ``cfg``; raises :class:`ConfigError` for an unreadable X-Ray rules file."""
    sampling = cfg.tracing.sampling
    xray_rules: list[XRayRule] = []
    if sampling.xray_rules_file:
        xray_rules, _default = load_xray_rules(sampling.xray_rules_file)
    return TieredSampler(
        _tier_configs(sampling), sampling.default_tier, sampling.rules, xray_rules,
        record_unsampled=sampling.keep_errors or sampling.slow_ms > 0, clock=clock, remote=remote,
    )
