"""Database client spans get peer.service (one X-Ray node per database), inside the scrubber's one copy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind

import pulsetrace.instrumentation.pii
from pulsetrace.validation import config_from_mapping
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.instrumentation.enrich import db_peer_service, enrich_attributes, enrich_span
from pulsetrace.instrumentation.pii import build_scrubber
from pulsetrace.instrumentation.spans import copy_span

ASYNCPG = {"db.system": "postgresql", "db.name": "shop", "net.peer.name": "db.internal", "net.peer.port": 5432,
           "db.statement": "SELECT * FROM users WHERE email = 'bob@example.com'"}
REDIS = {"db.system": "redis", "net.peer.name": "cache.internal", "net.peer.port": 6379,
         "db.statement": "GET session:42"}


def client_span(attributes: dict[str, object]) -> ReadableSpan:
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span(
        "SELECT", kind=SpanKind.CLIENT, attributes=attributes)  # type: ignore[arg-type]
    span.end()
    return span  # type: ignore[return-value]


@pytest.mark.parametrize(("attrs", "peer"), [
    (ASYNCPG, "shop@db.internal"),
    (REDIS, "redis@cache.internal:6379"),
    ({"db.system": "postgresql"}, "postgresql@localhost"),
    ({"http.request.method": "GET"}, None),
])
def test_the_peer_service_names_the_database_and_its_host(attrs: dict[str, object], peer: str | None) -> None:
    assert db_peer_service(attrs) == peer


def test_enrich_attributes_adds_peer_service_and_the_current_keys_and_keeps_the_rest() -> None:
    out = enrich_attributes(ASYNCPG)
    assert out is not None
    assert out == {**ASYNCPG, "peer.service": "shop@db.internal", "server.address": "db.internal",
                   "server.port": 5432, "db.namespace": "shop"}
    assert enrich_attributes({**ASYNCPG, "peer.service": "mine"}) is None  # the instrumentation's own wins
    assert enrich_attributes({"http.request.method": "GET"}) is None


def test_enrich_span_copies_only_when_something_is_added() -> None:
    span = client_span(ASYNCPG)
    out = enrich_span(span)
    assert out is not span and (out.attributes or {})["peer.service"] == "shop@db.internal"
    assert out.context == span.context and out.kind is SpanKind.CLIENT
    assert enrich_span(out) is out


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ReadableSpan]]:
    made: list[ReadableSpan] = []

    def counting(span: ReadableSpan, **kwargs: object) -> ReadableSpan:
        out = copy_span(span, **kwargs)  # type: ignore[arg-type]
        made.append(out)
        return out

    monkeypatch.setattr(pulsetrace.instrumentation.pii, "copy_span", counting)
    yield made


@pytest.mark.parametrize("attrs", [ASYNCPG, REDIS], ids=["asyncpg", "redis"])
def test_the_export_transform_enriches_sanitizes_and_scrubs_a_database_span_in_one_copy(
        attrs: dict[str, object], copies: list[ReadableSpan]) -> None:
    transform = build_scrubber(config_from_mapping({}, env={}), SelfMetrics())
    assert transform is not None
    out = transform(client_span(attrs))
    assert len(copies) == 1
    got = dict(out.attributes or {})
    assert got["peer.service"] == db_peer_service(attrs)  # kept as built: a name@host is no e-mail
    assert got["server.address"] == attrs["net.peer.name"]
    assert "bob@example.com" not in str(got["db.statement"])


def test_enriching_before_the_transform_changes_nothing_so_the_runtime_chain_can_go() -> None:
    transform = build_scrubber(config_from_mapping({}, env={}), SelfMetrics())
    assert transform is not None
    span = client_span(ASYNCPG)
    assert dict(transform(enrich_span(span)).attributes or {}) == dict(transform(span).attributes or {})
