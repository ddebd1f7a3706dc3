"""The service graph read from X-Ray documents: nodes, edges, counts, percentiles, reassembly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pulsetrace.views.servicemap import NODE_TYPES, build_graph, graph_from_store, percentile
from pulsetrace.store import LocalStore
from pulsetrace.xray.segments import XRayTranslator
from tests.agent.xray.test_xray_corpus import (
    BASE_RESOURCE,
    documents,
    dynamodb_attrs,
    httpx_attrs,
    make_tracer,
    postgres_attrs,
    redis_attrs,
    server_attrs,
    shop_request,
)


def _shop_spans(n: int = 5, failing: int = 2) -> list[ReadableSpan]:
    tracer, collect = make_tracer()
    for i in range(n):
        fail = i < failing
        shop_request(tracer, status=502 if fail else 200, gateway_status=500 if fail else 200)
    return collect.spans


def _summary(graph_json: dict[str, Any]) -> tuple[dict[str, tuple[Any, ...]], dict[tuple[str, str], tuple[Any, ...]]]:
    nodes = {n["id"]: (n["type"], n["requests"], n["errors"], n["faults"], n["throttles"])
             for n in graph_json["nodes"]}
    edges = {(e["source"], e["target"]): (e["requests"], e["errors"], e["faults"]) for e in graph_json["edges"]}
    return nodes, edges


def test_demo_traffic_gives_client_service_and_one_node_per_dependency_with_counts() -> None:
    graph = build_graph(documents(_shop_spans(5, failing=2)))
    nodes, edges = _summary(graph.to_json())
    assert nodes == {
        "client": ("client", 5, 0, 2, 0),
        "service:shop-api": ("service", 5, 0, 2, 0),
        "database:shop@127.0.0.1": ("database", 5, 0, 0, 0),
        "cache:redis@127.0.0.1:6379": ("cache", 5, 0, 0, 0),
        "http:127.0.0.1:9000": ("http", 5, 0, 2, 0),
        "aws:DynamoDB": ("aws", 5, 0, 0, 0),
    }
    assert edges == {
        ("client", "service:shop-api"): (5, 0, 2),
        ("service:shop-api", "database:shop@127.0.0.1"): (5, 0, 0),
        ("service:shop-api", "cache:redis@127.0.0.1:6379"): (5, 0, 0),
        ("service:shop-api", "http:127.0.0.1:9000"): (5, 0, 2),
        ("service:shop-api", "aws:DynamoDB"): (5, 0, 0),
    }
    assert graph.traces == 5


def test_graph_json_has_the_interface_shape() -> None:
    data = json.loads(json.dumps(build_graph(documents(_shop_spans(2))).to_json()))
    for node in data["nodes"]:
        assert {"id", "name", "type", "requests", "errors", "faults", "throttles", "latency_ms"} <= set(node)
        assert node["type"] in NODE_TYPES
        assert set(node["latency_ms"]) >= {"p50", "p90", "p99"}
    ids = {n["id"] for n in data["nodes"]}
    for edge in data["edges"]:
        assert {"source", "target", "requests", "errors", "faults", "latency_ms"} <= set(edge)
        assert set(edge["latency_ms"]) >= {"p50", "p99"}
        assert edge["source"] in ids and edge["target"] in ids


def test_a_call_answered_by_another_traced_service_is_an_edge_between_the_services() -> None:
    front, front_spans = make_tracer({**BASE_RESOURCE, "service.name": "shop-api"})
    back, back_spans = make_tracer({**BASE_RESOURCE, "service.name": "inventory"})
    with front.start_as_current_span("GET /work", kind=SpanKind.SERVER, attributes=server_attrs("GET", "/work", 200)):
        with front.start_as_current_span("GET", kind=SpanKind.CLIENT,
                                         attributes=httpx_attrs("http://127.0.0.1:9001/inner", 200, "GET")) as call:
            # what the propagator hands the downstream service: the call's span as a remote parent
            ctx = call.get_span_context()
            remote = SpanContext(ctx.trace_id, ctx.span_id, is_remote=True, trace_flags=TraceFlags(1))
            with back.start_as_current_span("GET /inner", kind=SpanKind.SERVER,
                                            context=trace_api.set_span_in_context(NonRecordingSpan(remote)),
                                            attributes=server_attrs("GET", "/inner", 200)):
                with back.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=postgres_attrs()):
                    pass
    docs = documents(front_spans.spans) + documents(back_spans.spans)
    nodes, edges = _summary(build_graph(docs).to_json())
    assert set(nodes) == {"client", "service:shop-api", "service:inventory", "database:shop@127.0.0.1"}
    assert set(edges) == {("client", "service:shop-api"), ("service:shop-api", "service:inventory"),
                          ("service:inventory", "database:shop@127.0.0.1")}


def test_documents_split_across_batches_read_as_one_trace() -> None:
    spans = _shop_spans(3, failing=1)
    whole = build_graph(documents(spans)).to_json()
    pieces = [d for i in range(0, len(spans), 2) for d in documents(spans[i:i + 2])]
    assert any(d.get("type") == "subsegment" for d in pieces)
    assert _summary(build_graph(pieces).to_json()) == _summary(whole)


def test_calls_made_inside_a_remote_call_are_not_counted_twice() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("DynamoDB.PutItem", kind=SpanKind.CLIENT, attributes=dynamodb_attrs()):
            with tracer.start_as_current_span("PUT", kind=SpanKind.CLIENT, attributes=httpx_attrs(
                    "https://dynamodb.us-east-1.amazonaws.com/", 200, "PUT")):
                pass
    nodes, _ = _summary(build_graph(documents(collect.spans)).to_json())
    assert set(nodes) == {"client", "service:shop-api", "aws:DynamoDB"}


def test_errors_throttles_and_faults_are_counted_where_they_happened() -> None:
    tracer, collect = make_tracer()
    for status in (200, 404, 429, 500):
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes=server_attrs("GET", "/x", 200)):
            with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT,
                                              attributes=httpx_attrs("http://127.0.0.1:9000/charge", status)) as c:
                if status >= 500:
                    c.set_status(Status(StatusCode.ERROR))
    nodes, edges = _summary(build_graph(documents(collect.spans)).to_json())
    assert nodes["http:127.0.0.1:9000"] == ("http", 4, 2, 1, 1)
    assert nodes["service:shop-api"] == ("service", 4, 0, 0, 0)
    assert edges[("service:shop-api", "http:127.0.0.1:9000")] == (4, 2, 1)


def test_latency_percentiles_are_nearest_rank_in_milliseconds() -> None:
    docs = [{"trace_id": f"1-5f000000-{i:024x}", "id": f"{i:016x}", "name": "svc", "start_time": 1000.0,
             "end_time": 1000.0 + i / 1000.0} for i in range(1, 101)]
    node = build_graph(docs).to_json()["nodes"][1]
    assert node["id"] == "service:svc"
    assert node["latency_ms"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentile([], 99) == 0.0 and percentile([3.0], 50) == 3.0


def test_json_strings_are_read_and_junk_is_skipped() -> None:
    texts = XRayTranslator().encode_spans(_shop_spans(1, failing=0))
    graph = build_graph([*texts, "not json", "[]", json.dumps({"no": "id"})])
    assert graph.documents == len(texts) and "service:shop-api" in graph.nodes


def test_the_local_store_graph_is_the_one_the_exported_documents_draw(tmp_path: Path) -> None:
    spans = _shop_spans(4, failing=1)
    store = LocalStore(tmp_path)
    store.write_spans(spans)
    try:
        local = graph_from_store(store, since=0.0)
    finally:
        store.close()
    assert _summary(local.to_json()) == _summary(build_graph(documents(spans)).to_json())
    assert local.traces == 4


def test_store_window_leaves_out_older_traces(tmp_path: Path) -> None:
    old_tracer, old = make_tracer()
    start_ns = int((time.time() - 7200) * 1e9)
    span = old_tracer.start_span("GET /old", kind=SpanKind.SERVER, start_time=start_ns,
                                 attributes=server_attrs("GET", "/old", 200))
    span.end(end_time=start_ns + 1_000_000)
    store = LocalStore(tmp_path)
    store.write_spans([*old.spans, *_shop_spans(1, failing=0)])
    try:
        graph = graph_from_store(store, since=time.time() - 900)
    finally:
        store.close()
    assert graph.traces == 1


def test_redis_node_is_a_cache_and_sql_node_a_database_even_without_peer_service() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
                k: v for k, v in redis_attrs().items() if k != "peer.service"}):
            pass
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
                k: v for k, v in postgres_attrs().items() if k != "peer.service"}):
            pass
    nodes, _ = _summary(build_graph(documents(collect.spans)).to_json())
    assert nodes["cache:redis@127.0.0.1:6379"][0] == "cache"
    assert nodes["database:shop@127.0.0.1"][0] == "database"
