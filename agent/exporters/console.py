"""The ``console`` exporter: one JSON line per span on stderr (for development).

The line has the fields of ``pulsetrace traces show --json`` plus ``trace_id`` and
``events``. stderr, not stdout: the service's own output stays clean. A closed or
broken stream is a counted failure, never an exception.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.store import span_row


def span_json(span: ReadableSpan) -> dict[str, object]:
    row = span_row(span, 0.0)
    return {
        "trace_id": row[0], "span_id": row[1], "parent_span_id": row[2], "name": row[3], "kind": row[4],
        "service": row[5], "start": row[6], "end": row[7], "status": row[8],
        "attributes": json.loads(row[10]), "events": json.loads(row[11]),
    }


class ConsoleExporter:
    name = "console"

    def __init__(self, ctx: ExporterContext | None = None, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        # Looked up at write time: a test or a host that swaps sys.stderr is followed.
        return self._stream if self._stream is not None else sys.stderr

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            text = "".join(json.dumps(span_json(s), ensure_ascii=False) + "\n" for s in spans)
            with self._lock:
                self.stream.write(text)
                self.stream.flush()
        except (OSError, ValueError, TypeError):
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS

    def after_fork(self) -> None:
        """Nothing to reopen: the stream is the process's own stdout (or the one given)."""

    def shutdown(self, timeout: float) -> None:
        return None
