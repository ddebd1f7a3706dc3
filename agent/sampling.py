"""PLACEHOLDER until issue 3: the tiered sampler. Currently parent-based always-on."""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler

from agent.config_schema import Config
from agent.selfmetrics import SelfMetrics


def build_sampler(cfg: Config, metrics: SelfMetrics) -> Sampler:
    return ParentBased(ALWAYS_ON)
