"""What each span becomes in X-Ray: names, namespaces, blocks, flags, causes, annotations, limits, size."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.store import LocalStore
from pulsetrace.xray.limits import MAX_DOCUMENT_BYTES
from pulsetrace.xray.segments import XRayTranslator, view_from_readable, view_from_stored, xray_trace_id
from tests.agent.xray.test_xray_corpus import (
    BASE_RESOURCE,
    ECS_RESOURCE,
    documents,
    dynamodb_attrs,
    httpx_attrs,
    make_tracer,
    postgres_attrs,
    raise_deep,
    redis_attrs,
    server_attrs,
    shop_request,
    sqs_attrs,
)


def _one_segment(**server: Any) -> dict[str, Any]:
    tracer, collect = make_tracer(server.pop("resource", None))
    status = server.pop("status", 200)
    error = server.pop("error", False)
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes=server.pop("attrs", server_attrs("GET", "/orders", status))) as s:
        if error:
            s.set_status(Status(StatusCode.ERROR, "it broke"))
    (doc,) = documents(collect.spans)
    return doc


def _subsegments(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for sub in doc.get("subsegments", ()):
        out.append(sub)
        out.extend(_subsegments(sub))
    return out


def test_server_span_is_a_segment_named_after_the_service_with_xray_ids_and_epoch_seconds() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes=server_attrs("GET", "/orders", 200)):
        pass
    (span,) = collect.spans
    (doc,) = documents(collect.spans)
    assert doc["name"] == "shop-api"
    assert "type" not in doc and "namespace" not in doc
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", doc["trace_id"])
    assert doc["trace_id"] == xray_trace_id(f"{span.context.trace_id:032x}")
    # AwsXRayIdGenerator puts the epoch in the first 8 hex digits: X-Ray rejects other trace ids.
    assert abs(int(doc["trace_id"][2:10], 16) - doc["start_time"]) < 5
    assert doc["id"] == f"{span.context.span_id:016x}"
    assert math.isclose(doc["start_time"], span.start_time / 1e9) and math.isclose(doc["end_time"], span.end_time / 1e9)
    assert doc["service"] == {"version": "1.4.2"}
    assert doc["aws"]["xray"]["sdk"] == "pulsetrace"


def test_segment_http_block_reads_current_semantic_conventions() -> None:
    doc = _one_segment(attrs={"http.request.method": "POST", "url.scheme": "https", "server.address": "shop.test",
                              "server.port": 443, "url.path": "/orders", "user_agent.original": "curl/8",
                              "client.address": "10.1.2.3", "http.response.status_code": 201,
                              "http.response.body.size": 17, "http.route": "/orders"})
    assert doc["http"] == {"request": {"method": "POST", "url": "https://shop.test/orders", "user_agent": "curl/8",
                                       "client_ip": "10.1.2.3"},
                           "response": {"status": 201, "content_length": 17}}
    assert doc["metadata"]["default"] == {"http.route": "/orders"}


def test_segment_http_block_reads_old_semantic_conventions() -> None:
    doc = _one_segment(attrs={"http.method": "GET", "http.url": "http://shop.test:8080/orders?page=2",
                              "http.user_agent": "curl/7", "http.client_ip": "10.9.9.9", "http.status_code": "404",
                              "http.response_content_length": 9})
    assert doc["http"] == {"request": {"method": "GET", "url": "http://shop.test:8080/orders",
                                       "user_agent": "curl/7", "client_ip": "10.9.9.9"},
                           "response": {"status": 404, "content_length": 9}}


@pytest.mark.parametrize(("status", "error", "flags"), [
    (200, False, {}),
    (404, False, {"error": True}),
    (429, False, {"error": True, "throttle": True}),
    (500, False, {"fault": True}),
    (503, True, {"fault": True}),
    (200, True, {"fault": True}),
])
def test_error_throttle_and_fault_follow_the_status_code_then_the_span_status(
        status: int, error: bool, flags: dict[str, bool]) -> None:
    doc = _one_segment(status=status, error=error)
    assert {k: doc[k] for k in ("error", "throttle", "fault") if k in doc} == flags


def test_error_status_without_exception_event_gives_a_cause_with_the_status_message() -> None:
    doc = _one_segment(error=True)
    (exc,) = doc["cause"]["exceptions"]
    assert exc["message"] == "it broke" and re.fullmatch(r"[0-9a-f]{16}", exc["id"])


@pytest.mark.parametrize(("platform", "origin", "block"), [
    ("aws_ecs", "AWS::ECS::Container", "ecs"),
    ("aws_ec2", "AWS::EC2::Instance", "ec2"),
    ("aws_eks", "AWS::EKS::Container", "eks"),
    ("aws_lambda", "AWS::Lambda::Function", None),
    ("aws_elastic_beanstalk", "AWS::ElasticBeanstalk::Environment", "elastic_beanstalk"),
])
def test_origin_and_aws_block_come_from_the_resource(platform: str, origin: str, block: str | None) -> None:
    resource = {**BASE_RESOURCE, "cloud.provider": "aws", "cloud.platform": platform, "cloud.account.id": "1234",
                "host.id": "i-0abc", "cloud.availability_zone": "ap-south-1a", "host.name": "ctr-1",
                "k8s.cluster.name": "prod", "k8s.pod.name": "shop-7d9", "container.id": "c0ffee",
                "service.namespace": "shop-env"}
    doc = _one_segment(resource=resource)
    assert doc["origin"] == origin
    assert doc["aws"]["account_id"] == "1234"
    expected = {"ecs": {"container": "ctr-1", "container_id": "c0ffee", "availability_zone": "ap-south-1a"},
                "ec2": {"instance_id": "i-0abc", "availability_zone": "ap-south-1a"},
                "eks": {"cluster_name": "prod", "pod": "shop-7d9", "container_id": "c0ffee"},
                "elastic_beanstalk": {"environment_name": "shop-env", "version_label": "1.4.2"}}
    if block:
        assert doc["aws"][block] == expected[block]
    # Represented in the aws block or the segment itself: not repeated as resource metadata.
    assert "cloud.platform" not in doc["metadata"]["otel.resource"]
    assert doc["metadata"]["otel.resource"]["deployment.environment"] == "uat"


def test_no_origin_off_aws() -> None:
    assert "origin" not in _one_segment(resource={**BASE_RESOURCE, "cloud.provider": "gcp",
                                                  "cloud.platform": "gcp_compute_engine"})


def test_asyncpg_call_is_a_remote_sql_subsegment_named_dbname_at_host_without_the_password() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
                **postgres_attrs(), "db.connection_string": "postgresql://app:s3cret@127.0.0.1:5432/shop"}):
            pass
    (doc,) = documents(collect.spans)
    (sub,) = doc["subsegments"]
    assert sub["name"] == "shop@127.0.0.1" and sub["namespace"] == "remote"
    assert sub["sql"] == {"url": "postgresql://127.0.0.1:5432/shop", "database_type": "PostgreSQL",
                          "sanitized_query": "SELECT id, total FROM orders WHERE id = $1", "user": "app"}
    assert "s3cret" not in json.dumps(sub["sql"])


def test_asyncpg_call_without_enrichment_still_names_dbname_at_host() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
            "db.system": "postgresql", "db.name": "shop", "net.peer.name": "db.internal", "net.peer.port": 5432}):
        pass
    (doc,) = documents(collect.spans)
    (sub,) = doc["subsegments"]
    assert sub["name"] == "shop@db.internal"


def test_redis_call_is_a_remote_subsegment_named_for_the_cache() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes=redis_attrs()):
            pass
        plain = {k: v for k, v in redis_attrs().items() if k != "peer.service"}
        with tracer.start_as_current_span("SET", kind=SpanKind.CLIENT, attributes=plain):
            pass
    (doc,) = documents(collect.spans)
    names = [(s["name"], s["namespace"]) for s in doc["subsegments"]]
    assert names == [("redis@127.0.0.1:6379", "remote")] * 2
    assert doc["subsegments"][0]["metadata"]["default"]["db.system"] == "redis"


def test_cache_and_database_names_come_from_the_address_not_a_rewritten_peer_service() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT,
                                          attributes={**redis_attrs(), "peer.service": "[EMAIL]:6379"}):
            pass
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                          attributes={**postgres_attrs(), "peer.service": "[EMAIL]"}):
            pass
    (doc,) = documents(collect.spans)
    assert [s["name"] for s in doc["subsegments"]] == ["redis@127.0.0.1:6379", "shop@127.0.0.1"]


def test_httpx_call_is_remote_named_after_peer_service_or_host_and_port_with_a_sanitized_url() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                **httpx_attrs("https://key:s3cret@pay.example.test/v1/charge?card=4111", 200),
                "server.address": "pay.example.test"}):
            pass
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                **httpx_attrs("https://pay.example.test/v1/refund", 200), "peer.service": "payment-gateway"}):
            pass
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT,
                                          attributes={"http.method": "GET", "http.url": "http://rfid.local:81/x"}):
            pass
    (doc,) = documents(collect.spans)
    charge, refund, rfid = doc["subsegments"]
    assert charge["name"] == "pay.example.test:9000" and charge["namespace"] == "remote"
    assert charge["http"]["request"] == {"method": "POST", "url": "https://pay.example.test/v1/charge"}
    assert "s3cret" not in json.dumps(charge) and "4111" not in json.dumps(charge)
    assert refund["name"] == "payment-gateway"
    assert rfid["name"] == "rfid.local:81"


def test_botocore_call_is_an_aws_subsegment_named_after_the_service() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("DynamoDB.PutItem", kind=SpanKind.CLIENT, attributes=dynamodb_attrs()):
            pass
        with tracer.start_as_current_span("SQS.SendMessage", kind=SpanKind.PRODUCER, attributes=sqs_attrs()):
            pass
    (doc,) = documents(collect.spans)
    dynamo, sqs = doc["subsegments"]
    assert (dynamo["name"], dynamo["namespace"]) == ("DynamoDB", "aws")
    assert dynamo["aws"] == {"operation": "PutItem", "region": "us-east-1", "request_id": "7Q1V2KIEXAMPLE",
                             "table_name": "orders", "retries": 0}
    assert dynamo["http"] == {"response": {"status": 200}}
    assert (sqs["name"], sqs["namespace"]) == ("SQS", "aws")
    assert sqs["aws"]["queue_url"].endswith("/orders") and sqs["aws"]["operation"] == "SendMessage"


def test_a_producer_to_a_non_aws_broker_is_remote() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("orders publish", kind=SpanKind.PRODUCER,
                                          attributes={"messaging.system": "kafka", "server.address": "kafka-1"}):
            pass
    (doc,) = documents(collect.spans)
    assert (doc["subsegments"][0]["name"], doc["subsegments"][0]["namespace"]) == ("kafka-1", "remote")


def test_internal_spans_nest_and_calls_nest_under_them() -> None:
    tracer, collect = make_tracer()
    shop_request(tracer)
    (doc,) = documents(collect.spans)
    (business,) = doc["subsegments"]
    assert business["name"] == "payment.create" and "namespace" not in business
    assert [s["name"] for s in business["subsegments"]] == ["shop@127.0.0.1", "redis@127.0.0.1:6379", "127.0.0.1:9000",
                                                            "DynamoDB"]


def test_span_whose_parent_is_in_another_batch_becomes_an_independent_subsegment_document() -> None:
    tracer, collect = make_tracer()
    shop_request(tracer)
    spans = collect.spans
    first, second = documents(spans[:2]), documents(spans[2:])
    parent_ids = {f"{s.context.span_id:016x}": f"{s.parent.span_id:016x}" for s in spans if s.parent}
    for doc in first:
        assert doc["type"] == "subsegment"
        assert doc["parent_id"] == parent_ids[doc["id"]]
        assert doc["trace_id"] == xray_trace_id(f"{spans[0].context.trace_id:032x}")
        assert "namespace" in doc
    (segment,) = second  # the rest nests: calls under the business span, that under the server span
    assert "type" not in segment
    assert [s["name"] for s in segment["subsegments"][0]["subsegments"]] == ["127.0.0.1:9000", "DynamoDB"]


def test_local_root_call_becomes_the_service_segment_holding_the_call() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("settle", kind=SpanKind.CLIENT, attributes={
            **httpx_attrs("https://pay.example.test/settle", 200), "server.address": "pay.example.test"}):
        pass
    (doc,) = documents(collect.spans)
    assert doc["name"] == "shop-api" and "type" not in doc
    (call,) = doc["subsegments"]
    assert call["id"] == f"{collect.spans[0].context.span_id:016x}"
    assert doc["id"] != call["id"] and call["name"] == "pay.example.test:9000"


def test_exception_events_become_a_cause_with_parsed_frames_innermost_first_and_bounded() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /payments", kind=SpanKind.SERVER) as root:
        try:
            raise_deep(120)
        except RuntimeError as exc:
            root.record_exception(exc)
            root.set_status(Status(StatusCode.ERROR))
    (doc,) = documents(collect.spans)
    assert doc["fault"] is True
    outer, inner = doc["cause"]["exceptions"]
    assert outer["type"] == "RuntimeError" and outer["message"] == "payment could not be recorded"
    assert inner["type"] == "KeyError" and inner["message"] == "'order-42'"
    assert outer["cause"] == inner["id"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", e["id"]) for e in (outer, inner))
    assert len(inner["stack"]) == 50 and inner["truncated"] > 70
    frame = inner["stack"][0]
    assert frame["label"] == "_ping" and frame["path"].endswith("test_xray_corpus.py")
    assert inner["stack"][1]["label"] == "_pong"
    assert isinstance(frame["line"], int) and frame["line"] > 0
    assert outer["stack"][0]["label"] == "raise_deep"


def test_repeated_frames_python_collapsed_are_counted_as_truncated() -> None:
    def again(n: int) -> None:
        if n == 0:
            raise ValueError("deep")
        again(n - 1)

    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as root:
        try:
            again(60)
        except ValueError as exc:
            root.record_exception(exc)
    (doc,) = documents(collect.spans)
    (exc,) = doc["cause"]["exceptions"]
    assert [f["label"] for f in exc["stack"][:4]] == ["again"] * 4
    assert exc["truncated"] >= 50  # "[Previous line repeated 57 more times]"


def test_exception_on_a_client_span_is_marked_remote() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=httpx_attrs("http://g/x", 502)) \
                as call:
            call.record_exception(ConnectionError("reset by peer"))
    (doc,) = documents(collect.spans)
    (exc,) = doc["subsegments"][0]["cause"]["exceptions"]
    assert exc["remote"] is True and exc["type"] == "ConnectionError"


def test_listed_attributes_become_annotations_and_the_rest_metadata() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /payments", kind=SpanKind.SERVER, attributes={
            "payment.method": "upi", "school.id": 42, "sampling.tier": "critical", "tags": ("a", "b"),
            "aws.xray.annotations": ("payment.method", "school.id", "tags")}):
        pass
    (doc,) = documents(collect.spans)
    assert doc["annotations"] == {"payment_method": "upi", "school_id": 42}
    # sampling.tier is not listed: metadata. A list cannot be indexed: metadata too.
    assert doc["metadata"]["default"] == {"sampling.tier": "critical", "tags": ["a", "b"]}


def test_a_51st_annotation_is_not_sent_and_is_counted() -> None:
    tracer, collect = make_tracer()
    attrs: dict[str, Any] = {f"biz.k{i}": i for i in range(51)}
    attrs["aws.xray.annotations"] = tuple(attrs)
    with tracer.start_as_current_span("POST /x", kind=SpanKind.SERVER, attributes=attrs):
        pass
    metrics = SelfMetrics()
    (doc,) = documents(collect.spans, XRayTranslator(metrics=metrics))
    assert len(doc["annotations"]) == 50 and "biz_k50" not in doc["annotations"]
    assert doc["metadata"]["default"]["biz.k50"] == 50
    assert metrics.counter("annotations_dropped", "document_limit") == 1


def test_indexed_keys_given_to_the_translator_are_annotations_on_any_span() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("POST /x", kind=SpanKind.SERVER, attributes={"payment.method": "card"}):
        pass
    (doc,) = documents(collect.spans, XRayTranslator(indexed=["payment.method"]))
    assert doc["annotations"] == {"payment_method": "card"}


def test_strings_over_xray_limits_are_truncated_never_rejected() -> None:
    tracer, collect = make_tracer({**BASE_RESOURCE, "service.name": "s" * 300})
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={
            "note": "n" * 5000, "aws.xray.annotations": ("note",), "url.full": "http://h/" + "p" * 400,
            "user_agent.original": "u" * 400}):
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT,
                                          attributes={"peer.service": "p" * 300, "http.request.method": "POST"}):
            pass
    (doc,) = documents(collect.spans)
    assert len(doc["name"]) == 200 and len(doc["subsegments"][0]["name"]) == 200
    assert len(doc["annotations"]["note"]) == 1000
    assert len(doc["http"]["request"]["url"]) == 250 and len(doc["http"]["request"]["user_agent"]) == 250


def test_names_keep_unicode_letters_and_lose_characters_xray_refuses() -> None:
    tracer, collect = make_tracer({**BASE_RESOURCE, "service.name": "café-服务 🚀 <shop>\\"})
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("zahlung.prüfen ✓"):
            pass
        with tracer.start_as_current_span("🚀🚀"):
            pass
    (doc,) = documents(collect.spans)
    assert doc["name"] == "café-服务  shop"
    assert [s["name"] for s in doc["subsegments"]] == ["zahlung.prüfen", "span"]


def test_nan_and_infinite_attributes_still_give_valid_json() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                      attributes={"ratio": float("nan"), "limit": float("inf")}):
        pass
    (text,) = XRayTranslator().encode_spans(collect.spans)
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["metadata"]["default"] == {"ratio": "nan", "limit": "inf"}


def _ids(doc: dict[str, Any]) -> set[str]:
    return {doc["id"], *(i for s in doc.get("subsegments", ()) for i in _ids(s))}


def test_a_trace_over_64kb_is_split_into_documents_that_reassemble_whole() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("report.build"):
            for i in range(400):
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                                  attributes={**postgres_attrs(), "row": "r" * 200, "i": i}):
                    pass
    metrics = SelfMetrics()
    texts = XRayTranslator(metrics=metrics).encode_spans(collect.spans)
    assert len(texts) > 2 and all(len(t.encode()) <= MAX_DOCUMENT_BYTES for t in texts)
    assert sum(len(t.encode()) for t in texts) > 64 * 1024
    docs = [json.loads(t) for t in texts]
    assert sum(1 for d in docs if "type" not in d) == 1
    assert {d["trace_id"] for d in docs} == {docs[0]["trace_id"]}
    for doc in docs:
        if doc.get("type") == "subsegment":
            parent = doc["parent_id"]
            assert any(parent in _ids(other) for other in docs if other is not doc), "dangling parent_id"
    all_ids = set().union(*(_ids(d) for d in docs))
    assert all_ids == {f"{s.context.span_id:016x}" for s in collect.spans}
    assert metrics.counter("xray_documents_split") >= 1


def test_one_span_too_big_alone_is_trimmed_until_it_fits() -> None:
    tracer, collect = make_tracer()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                      attributes={f"blob.{i}": "é" * 10_000 for i in range(10)}) as root:
        try:
            raise_deep(40)
        except RuntimeError as exc:
            root.record_exception(exc)
    metrics = SelfMetrics()
    (text,) = XRayTranslator(metrics=metrics).encode_spans(collect.spans)
    assert len(text.encode()) <= MAX_DOCUMENT_BYTES
    doc = json.loads(text)
    assert doc["cause"]["exceptions"][0]["type"] == "RuntimeError"  # the cause survives the trimming
    assert metrics.counter("xray_documents_trimmed") == 1


def test_stored_spans_translate_to_the_same_documents_as_sdk_spans(tmp_path: Path) -> None:
    tracer, collect = make_tracer(ECS_RESOURCE)
    shop_request(tracer, status=502, gateway_status=500)
    store = LocalStore(tmp_path)
    store.write_spans(collect.spans)
    stored = store.trace_spans(f"{collect.spans[0].context.trace_id:032x}")
    store.close()
    from_sdk = XRayTranslator().segments(view_from_readable(s) for s in collect.spans)
    from_store = XRayTranslator().segments(view_from_stored(s) for s in stored)

    def normal(docs: list[dict[str, Any]]) -> str:
        def strip(d: dict[str, Any]) -> dict[str, Any]:
            d = {k: v for k, v in d.items() if k != "cause"}
            d["start_time"] = round(d["start_time"], 5)
            d["end_time"] = round(d["end_time"], 5)
            if "subsegments" in d:
                d["subsegments"] = sorted((strip(s) for s in d["subsegments"]), key=lambda s: s["id"])
            return d
        return json.dumps(sorted((strip(d) for d in docs), key=lambda d: d["id"]), sort_keys=True)

    assert normal(from_store) == normal(from_sdk)
