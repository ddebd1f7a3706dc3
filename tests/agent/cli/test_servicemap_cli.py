"""``pulsetrace servicemap``: text, --json, --html, --since, --source xray (moto), one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.trace import SpanKind

from pulsetrace.cli.main import main
from pulsetrace.validation import config_from_mapping
from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.exporters.xray_api import XRayApiExporter
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore
from tests.agent.xray.test_xray_corpus import BASE_RESOURCE, make_tracer, server_attrs, shop_request
from tests.servers import MotoServer, free_port


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PULSETRACE_STORE", raising=False)
    monkeypatch.delenv("PULSETRACE_CONFIG", raising=False)
    path = tmp_path / "pulsetrace.yaml"
    path.write_text(yaml.safe_dump({"service": {"name": "shop-api"}, "store": {"path": str(tmp_path / "store")}}))
    return path


def _fill_store(tmp_path: Path, n: int = 4, failing: int = 1) -> None:
    tracer, collect = make_tracer()
    for i in range(n):
        fail = i < failing
        shop_request(tracer, status=502 if fail else 200, gateway_status=500 if fail else 200)
    store = LocalStore(tmp_path / "store")
    store.write_spans(collect.spans)
    store.close()


def test_text_output_lists_nodes_and_edges(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill_store(tmp_path)
    assert main(["servicemap", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 traces" in out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("shop@127.0.0.1"))
    assert row.split()[1:3] == ["database", "4"]
    edge = next(line for line in lines if line.startswith("shop-api → 127.0.0.1"))
    assert edge.split()[3:6] == ["4", "0", "1"]  # requests, errors, faults


def test_json_output_is_the_interface_shape(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill_store(tmp_path, n=3, failing=2)
    assert main(["servicemap", "--config", str(config), "--json", "--since", "1h"]) == 0
    data = json.loads(capsys.readouterr().out)
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["client"]["requests"] == 3 and nodes["client"]["faults"] == 2
    assert {n["type"] for n in data["nodes"]} == {"client", "service", "database", "cache", "http", "aws"}
    edge = next(e for e in data["edges"] if e["target"] == "http:127.0.0.1:9000")
    assert (edge["source"], edge["requests"], edge["faults"]) == ("service:shop-api", 3, 2)
    assert set(edge["latency_ms"]) >= {"p50", "p99"}


def test_html_output_is_written_to_the_file(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill_store(tmp_path)
    page = tmp_path / "map.html"
    assert main(["servicemap", "--config", str(config), "--html", str(page)]) == 0
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and 'data-id="database:shop@127.0.0.1"' in text


def test_since_leaves_out_older_traces(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tracer, collect = make_tracer()
    start_ns = int((time.time() - 3 * 3600) * 1e9)
    span = tracer.start_span("GET /old", kind=SpanKind.SERVER, start_time=start_ns,
                             attributes=server_attrs("GET", "/old", 200))
    span.end(end_time=start_ns + 2_000_000)
    store = LocalStore(tmp_path / "store")
    store.write_spans(collect.spans)
    store.close()
    assert main(["servicemap", "--config", str(config), "--json", "--since", "15m"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == []
    assert main(["servicemap", "--config", str(config), "--json", "--since", "4h"]) == 0
    assert len(json.loads(capsys.readouterr().out)["nodes"]) == 2


def test_no_store_yet_is_an_empty_map_not_an_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["servicemap", "--config", str(config)]) == 0
    assert "No traces in this window." in capsys.readouterr().out


@pytest.mark.parametrize("since", ["soon", "-5m", "0"])
def test_a_bad_since_is_one_line_and_exit_2(config: Path, since: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["servicemap", "--config", str(config), f"--since={since}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since" in err and "Traceback" not in err


def test_html_to_an_unwritable_path_is_one_line(config: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["servicemap", "--config", str(config), "--html", str(tmp_path / "no" / "such" / "x.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err


def test_source_xray_reads_what_x_ray_holds(config: Path, aws_env: dict[str, str], moto_server: MotoServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # A service name of its own: moto's store is shared by every test of the session.
    tracer, collect = make_tracer({**BASE_RESOURCE, "service.name": "cli-xray-shop"})
    for i in range(3):
        shop_request(tracer, status=502 if i == 0 else 200, gateway_status=500 if i == 0 else 200)
    cfg = config_from_mapping({"tracing": {"exporters": ["xray-api"]}}, dict(aws_env))
    exporter = XRayApiExporter(ExporterContext(cfg, SelfMetrics()))
    assert exporter.export(collect.spans) is ExportOutcome.SUCCESS
    exporter.shutdown(1)
    assert main(["servicemap", "--config", str(config), "--source", "xray", "--json", "--since", "10m"]) == 0
    data = json.loads(capsys.readouterr().out)
    edges = {(e["source"], e["target"]): (e["requests"], e["faults"]) for e in data["edges"]}
    assert edges[("service:cli-xray-shop", "http:127.0.0.1:9000")] == (3, 1)
    assert edges[("service:cli-xray-shop", "aws:DynamoDB")] == (3, 0)


def test_source_xray_unreachable_is_one_line_exit_1(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert main(["servicemap", "--config", str(config), "--source", "xray"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "X-Ray" in err and "Traceback" not in err
