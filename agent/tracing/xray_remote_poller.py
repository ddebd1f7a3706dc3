"""The I/O of X-Ray centralized sampling: ``GetSamplingRules`` / ``GetSamplingTargets`` on a thread.

One daemon thread per process (``pulsetrace-xray-sampling``, a :mod:`pulsetrace.background`
worker: instrumentation suppressed, so the agent never traces its own calls) fetches the rules
every ``poll`` and reports the statistics / fetches the targets every ``targets_poll``, both with
a little jitter so a fleet does not call in step. A failure backs off (1 s, 2 s, 4 s ... for the
rules, ``targets_poll`` doubling for the targets, both at most a minute, or ``poll`` if shorter);
a ``LastRuleModification`` newer than the rules held fetches the rules at once. The thread waits
on an event, so :meth:`SamplingPoller.shutdown` stops it at once, and is started again lazily in a
forked child.

The wire format is botocore's X-Ray client: it speaks the daemon's and the ADOT collector's
sampling proxy (``http://127.0.0.1:2000``, unsigned: the proxy signs) and the X-Ray API itself
(signed with the usual credential chain), from the one service model AWS publishes, so this
module writes no JSON by hand. boto3 comes with the ``aws`` extra. Never raises into the caller.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from pulsetrace.background import start_worker
from pulsetrace.background import start_worker
from pulsetrace.config.problems import Problem
from pulsetrace.config.schema import Config, XRayRemoteConfig
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.tracing.xray_remote import RemoteRule, RemoteSampling, Target, service_type_from_env

__all__ = ["BotocoreTransport", "SamplingPoller", "SamplingTransport", "build_remote_sampling"]

_log = logging.getLogger("pulsetrace.sampling.remote")

#: Pages of ``GetSamplingRules`` read at most (X-Ray allows 25 rules per account and region).
MAX_RULE_PAGES = 20
#: The first retry of a failed rules fetch; doubled on each failure up to :func:`_max_backoff`.
FIRST_RETRY_S = 1.0


def _max_backoff(cfg: XRayRemoteConfig) -> float:
    # Bounded well under ``poll`` (300 s): after an outage the fleet should be back on the console's
    # rules within a minute, and 40 tasks calling once a minute is nothing to the proxy.
    return min(cfg.poll, max(60.0, cfg.targets_poll))


class SamplingTransport(Protocol):
    """The two X-Ray sampling operations. May raise; the poller counts the failure and backs off."""

    def get_rules(self) -> list[RemoteRule]: ...

    def get_targets(self, statistics: Sequence[dict[str, Any]]) -> tuple[list[Target], float | None]:
        """Report ``statistics``; returns the targets and ``LastRuleModification`` (epoch seconds)."""
        ...


class BotocoreTransport:
    """The operations through botocore's X-Ray client, built on first use (on the poller thread)."""

    def __init__(self, cfg: XRayRemoteConfig, region: str = "") -> None:
        self._cfg = cfg
        self._region = region
        self._client: Any = None

    def _signed(self) -> bool:
        if self._cfg.sign != "auto":
            return self._cfg.sign == "always"
        host = urlsplit(self._cfg.endpoint).hostname or ""
        return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config as BotoConfig

            signed = self._signed()
            self._client = boto3.session.Session().client(
                "xray",
                # botocore wants a region even for the unsigned proxy, which ignores it
                region_name=self._region or ("us-east-1" if not signed else None),
                endpoint_url=self._cfg.endpoint,
                config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                                  connect_timeout=self._cfg.timeout, read_timeout=self._cfg.timeout,
                                  user_agent_extra="pulsetrace", **({} if signed else {"signature_version": UNSIGNED})),
            )
        return self._client

    def get_rules(self) -> list[RemoteRule]:
        rules: list[RemoteRule] = []
        token: str | None = None
        for _ in range(MAX_RULE_PAGES):
            answer = self.client().get_sampling_rules(**({"NextToken": token} if token else {}))
            for record in answer.get("SamplingRuleRecords") or []:
                rule = RemoteRule.from_record(record)
                if rule is not None:
                    rules.append(rule)
            token = answer.get("NextToken")
            if not token:
                break
        return rules

    def get_targets(self, statistics: Sequence[dict[str, Any]]) -> tuple[list[Target], float | None]:
        answer = self.client().get_sampling_targets(SamplingStatisticsDocuments=list(statistics))
        targets = [Target.from_document(doc) for doc in answer.get("SamplingTargetDocuments") or []]
        modified = answer.get("LastRuleModification")
        if isinstance(modified, datetime.datetime):
            return targets, modified.timestamp()
        return targets, float(modified) if isinstance(modified, (int, float)) else None

    def reset(self) -> None:
        """Forget the client (after fork: its connection pool belongs to the parent)."""
        self._client = None


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.95, 1.05)


class SamplingPoller:
    """Keeps a :class:`RemoteSampling` fed from a :class:`SamplingTransport`."""

    def __init__(self, remote: RemoteSampling, transport: SamplingTransport,
                 *, clock: Callable[[], float] = time.monotonic, metrics: SelfMetrics | None = None) -> None:
        self.remote = remote
        self.metrics = metrics
        if metrics is not None:
            # Whether the console's rules decide now (0: the local tiers, endpoint away or no rules yet).
            metrics.gauge_fn("xray_remote_active", lambda: 1.0 if remote.active() else 0.0)
            metrics.gauge_fn("xray_remote_rules", lambda: float(len(remote.rules)))
        self.transport = transport
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.rules_failures = 0
        self.targets_failures = 0
        remote.restart = self._restart_in_child

    def _restart_in_child(self) -> None:
        # The parent's thread does not exist in a forked child, its lock may have been held, and
        # its HTTP connections belong to the parent.
        self._lock = threading.Lock()
        stopped = self._stop.is_set()
        self._thread = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        reset = getattr(self.transport, "reset", None)
        if reset is not None:
            reset()
        if not stopped:
            self.start()

    def start(self) -> None:
        """Start the thread; idempotent."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = start_worker("pulsetrace-xray-sampling", self._run)

    def shutdown(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))

    def _fetch_rules(self) -> bool:
        try:
            rules = self.transport.get_rules()
        except Exception as exc:
            self.rules_failures += 1
            if self.metrics is not None:
                self.metrics.inc("xray_remote_failures", reason="rules")
            _log.debug("GetSamplingRules failed (%s): the local tiers decide meanwhile", type(exc).__name__)
            return False
        self.remote.set_rules(rules)
        self.rules_failures = 0
        return True

    def _report(self) -> tuple[bool, bool]:
        """Statistics out, targets in. Returns ``(succeeded, rules changed since fetched)``."""
        statistics = self.remote.statistics()
        try:
            targets, modified = self.transport.get_targets(statistics)
        except Exception as exc:
            self.targets_failures += 1
            if self.metrics is not None:
                self.metrics.inc("xray_remote_failures", reason="targets")
            _log.debug("GetSamplingTargets failed (%s)", type(exc).__name__)
            return False, False
        self.remote.apply_targets(targets)
        self.targets_failures = 0
        return True, modified is not None and modified > self.remote.rules_fetched_at

    def _run(self) -> None:
        cfg = self.remote.config
        next_rules = self._clock()
        next_targets = next_rules + _jitter(cfg.targets_poll)
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_rules:
                if self._fetch_rules():
                    next_rules = now + _jitter(cfg.poll)
                    next_targets = min(next_targets, now + _jitter(cfg.targets_poll))
                else:
                    next_rules = now + _jitter(min(_max_backoff(cfg), FIRST_RETRY_S * 2 ** min(self.rules_failures - 1, 16)))
            if now >= next_targets:
                ok, changed = self._report() if self.remote.rules else (True, False)
                if changed:
                    next_rules = now
                backoff = cfg.targets_poll * 2 ** min(self.targets_failures, 16)
                next_targets = now + _jitter(min(_max_backoff(cfg), backoff) if not ok else cfg.targets_poll)
            self._wake.wait(max(0.0, min(next_rules, next_targets) - self._clock()))
            self._wake.clear()


def build_remote_sampling(cfg: Config, metrics: SelfMetrics | None = None) -> tuple[RemoteSampling, SamplingPoller] | None:
    """The remote rules and their poller for ``cfg`` (not started), or ``None`` when off."""
    remote_cfg = cfg.tracing.sampling.xray_remote
    if not remote_cfg.endpoint:
        return None
    remote = RemoteSampling(remote_cfg, cfg.service.name, service_type_from_env())
    region = cfg.tracing.xray.region or os.environ.get("AWS_REGION", "") or os.environ.get("AWS_DEFAULT_REGION", "")
    return remote, SamplingPoller(remote, BotocoreTransport(remote_cfg, region), metrics=metrics)


def config_problems(cfg: Config) -> list[Problem]:
    """``tracing.sampling.xray_remote``: an http(s) endpoint, and botocore to speak to it."""
    remote = cfg.tracing.sampling.xray_remote
    if not remote.endpoint:
        return []
    key = "tracing.sampling.xray_remote.endpoint"
    parts = urlsplit(remote.endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [Problem(key, "invalid value", repr(remote.endpoint), "an http:// or https:// URL")]
    if importlib.util.find_spec("botocore") is None:
        return [Problem(key, "needs boto3 (pip install 'pulsetrace[aws]')", repr(remote.endpoint), "")]
    return []
