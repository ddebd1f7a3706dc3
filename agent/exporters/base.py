"""The one small interface every span exporter implements.

An exporter receives batches of finished, already scrubbed spans on the pipeline's
export thread (never on the request path). It must not raise: it returns an
:class:`ExportOutcome` and the pipeline counts what was lost.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config
    from pulsetrace.selfmetrics import SelfMetrics


class ExportOutcome(enum.Enum):
    SUCCESS = "success"
    #: The destination is unreachable or refused; the batch is lost (counted as ``export_failed``).
    FAILURE = "failure"


@runtime_checkable
class Exporter(Protocol):
    """Sends spans somewhere. Called from one export thread at a time."""

    name: str

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome: ...

    def shutdown(self, timeout: float) -> None: ...

    def after_fork(self) -> None:
        """In a forked child (a pre-fork server's worker): drop what belongs to the parent
        (sockets, clients, store connections) so the child opens its own. No I/O here."""
        ...


@dataclass(frozen=True)
class ExporterContext:
    config: Config
    metrics: SelfMetrics
