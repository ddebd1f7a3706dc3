"""PLACEHOLDER until issue 3: PII and secret scrubbing of spans before export."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan

from agent.config_schema import Config
from agent.selfmetrics import SelfMetrics


def build_scrubber(cfg: Config, metrics: SelfMetrics) -> Callable[[ReadableSpan], ReadableSpan] | None:
    return None
