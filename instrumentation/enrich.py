"""Export-side enrichment of client spans, so X-Ray draws one node per dependency.

The upstream asyncpg and redis instrumentations write the old semantic-convention
keys (``net.peer.name``, ``db.name``) and no ``peer.service``. On the export thread
(never the request path) this adds ``server.address``/``server.port``,
``db.namespace`` and ``peer.service`` (``dbname@host`` for SQL databases,
``redis@host:port`` for caches) unless the span already has them. Spans that need
nothing are returned as they are. :func:`enrich_attributes` is the same step on an
attribute mapping, run by the scrubber within its one copy of the span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.instrumentation.spans import copy_span

_SQL_SYSTEMS = {"postgresql", "mysql", "mariadb", "mssql", "oracle", "sqlite", "other_sql"}


def db_peer_service(attrs: Any) -> str | None:
    """The node name a database or cache client span should have, or ``None`` for other spans."""
    system = attrs.get("db.system") or attrs.get("db.system.name")
    if not system:
        return None
    host = attrs.get("server.address") or attrs.get("net.peer.name") or "localhost"
    if system in _SQL_SYSTEMS:
        database = attrs.get("db.namespace") or attrs.get("db.name") or system
        return f"{database}@{host}"
    port = attrs.get("server.port") or attrs.get("net.peer.port")
    return f"{system}@{host}:{port}" if port else f"{system}@{host}"


def enrich_attributes(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """``attrs`` with ``peer.service`` and the current keys added, or ``None`` when nothing is to add.

    The form the scrubber uses (:func:`pulsetrace.instrumentation.pii.build_scrubber`), so a
    database span is enriched and scrubbed in one copy.
    """
    if "peer.service" in attrs:
        return None
    peer = db_peer_service(attrs)
    if peer is None:
        return None
    extra: dict[str, Any] = {"peer.service": peer}
    if "server.address" not in attrs and "net.peer.name" in attrs:
        extra["server.address"] = attrs["net.peer.name"]
    if "server.port" not in attrs and "net.peer.port" in attrs:
        extra["server.port"] = attrs["net.peer.port"]
    if "db.namespace" not in attrs and "db.name" in attrs:
        extra["db.namespace"] = attrs["db.name"]
    return {**attrs, **extra}


def enrich_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` enriched (a copy), or ``span`` itself when it needs nothing."""
    attrs = enrich_attributes(span.attributes or {})
    return span if attrs is None else copy_span(span, attributes=attrs)
