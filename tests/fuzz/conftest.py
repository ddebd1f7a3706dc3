"""The real service the fuzz tests send their input to, and the checks of what it stored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pulsetrace.store import StoredSpan
from tests.integration.service_runner import ROOT, Service, all_spans, write_config
from tests.reliability.support import agent_tracebacks, start_rel_service, stop_tree

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
XRAY_ID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")


@dataclass
class FuzzService:
    svc: Service
    store: Path

    @property
    def url(self) -> str:
        return self.svc.url

    @property
    def port(self) -> int:
        return self.svc.port


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzService]:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = tmp / "store"
    # every trace sampled and stored; the X-Ray translation runs too (to a UDP port nobody reads)
    cfg = write_config(tmp / "c.yaml", store, extra={"tracing": {"exporters": ["local", "xray-udp"]}})
    svc = start_rel_service(tmp, cfg, name="fuzz")
    yield FuzzService(svc, store)
    stop_tree(svc)
    assert not agent_tracebacks(svc.output()), agent_tracebacks(svc.output())


def assert_span_valid(span: StoredSpan) -> None:
    assert HEX32.match(span.trace_id) and span.trace_id != "0" * 32, span
    assert HEX16.match(span.span_id) and span.span_id != "0" * 16, span
    assert span.parent_span_id is None or (HEX16.match(span.parent_span_id) and span.parent_span_id != "0" * 16), span
    assert span.end >= span.start and span.status in ("ok", "error"), span
    json.dumps(span.attributes)  # what the store returns is plain JSON


def assert_store_valid(store: Path) -> list[StoredSpan]:
    """Every stored span has valid ids, becomes schema-valid X-Ray documents, and the CLI reads them."""
    from pulsetrace.xray.segments import XRayTranslator, view_from_stored
    from tests.agent.xray.test_xray_corpus import schema_validator

    spans = all_spans(store)
    for span in spans:
        assert_span_valid(span)
    validator = schema_validator()
    for doc in XRayTranslator().documents(view_from_stored(s) for s in spans):
        errors = list(validator.iter_errors(json.loads(doc)))
        assert not errors, (errors[0].message, doc[:2000])
    traces = cli_json(store, "traces", "--limit", "100000")
    assert isinstance(traces, list) and len(traces) == len({s.trace_id for s in spans})
    for t in traces:
        assert HEX32.match(t["trace_id"]) and XRAY_ID.match(t["xray_trace_id"]), t
    for t in traces[:5]:
        shown = cli_json(store, "traces", "show", t["trace_id"])
        assert isinstance(shown, dict)
        assert shown["trace_id"] == t["trace_id"] and shown["spans"], shown
    return spans


def cli_json(store: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", *args, "--json", "--store", str(store)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr[-2000:])
    return json.loads(done.stdout)
