"""The ``console`` exporter: one JSON line per span; a closed stream is a failure, not an exception."""

from __future__ import annotations

import io
import json

from pulsetrace.exporters import build_exporter
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.console import ConsoleExporter
from pulsetrace.config.schema import Config
from pulsetrace.selfmetrics import SelfMetrics
from tests.agent.span_factory import make_trace


def test_one_json_line_per_span_with_ids_and_attributes() -> None:
    out = io.StringIO()
    spans = make_trace(children=1, error=True)
    assert ConsoleExporter(stream=out).export(spans) is ExportOutcome.SUCCESS
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["name"] for line in lines] == ["child-0", "POST /orders"]
    root = lines[1]
    assert root["trace_id"] == f"{spans[0].context.trace_id:032x}" and root["parent_span_id"] is None
    assert root["status"] == "error" and root["kind"] == "server" and root["service"] == "shop-api"
    assert lines[0]["parent_span_id"] == root["span_id"]
    assert root["attributes"]["http.request.method"] == "POST"


def test_closed_stream_is_a_failure() -> None:
    out = io.StringIO()
    out.close()
    assert ConsoleExporter(stream=out).export(make_trace(children=0)) is ExportOutcome.FAILURE


def test_registered_by_name_and_writes_to_stderr_by_default(capsys: object) -> None:
    exporter = build_exporter("console", ExporterContext(Config(), SelfMetrics()))
    assert exporter.name == "console"
    assert exporter.export(make_trace(children=0)) is ExportOutcome.SUCCESS
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert captured.out == "" and json.loads(captured.err)["name"] == "POST /orders"
