"""The ``console`` exporter: one JSON line per span on stderr (for development)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan

from agent.exporters.base import ExporterContext, ExportOutcome
from agent.store import span_row


class ConsoleExporter:
    name = "console"

    def __init__(self, ctx: ExporterContext, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        lines = []
        for span in spans:
            row = span_row(span, 0.0)
            lines.append(json.dumps({
                "trace_id": row[0], "span_id": row[1], "parent_span_id": row[2], "name": row[3], "kind": row[4],
                "service": row[5], "start": row[6], "end": row[7], "status": row[8],
                "attributes": json.loads(row[10]), "events": json.loads(row[11]),
            }, ensure_ascii=False))
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS

    def shutdown(self, timeout: float) -> None:
        return None
