"""PLACEHOLDER until issue 3: keep the local part of unsampled traces that fail or are slow."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from agent.config_schema import Config
from agent.selfmetrics import SelfMetrics


def build_keep_errors(cfg: Config, metrics: SelfMetrics) -> Callable[[ReadableSpan], Sequence[ReadableSpan] | None] | None:
    return None
