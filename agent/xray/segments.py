"""Finished spans → AWS X-Ray segment documents: one pure translator for every path.

Input is a :class:`SpanView`, built from an OpenTelemetry ``ReadableSpan``
(:func:`view_from_readable`, the exporters) or from the local store's ``StoredSpan``
(:func:`view_from_stored`, the local service map), so both paths draw the same map.

* Server spans and local roots (no parent, or a remote one) become **segments**
  named after ``service.name``; a local root that is itself a client or producer
  call becomes a segment for the service holding that call as its subsegment.
* Client, producer, consumer and internal spans become **subsegments** nested
  under their parent when the parent is in the same batch, else **independent
  subsegment documents** (``type: subsegment``, ``parent_id``, ``trace_id``).
* Calls are named the way X-Ray's map names nodes: ``dbname@host`` for SQL
  (``namespace: remote`` + ``sql``), ``redis@host:port`` for caches (and other
  non-SQL stores), ``peer.service`` or ``host:port`` for HTTP (the host alone on the scheme's default port), the AWS service for
  botocore (``namespace: aws`` + ``aws``).
* A document stays under :data:`~pulsetrace.xray.limits.MAX_DOCUMENT_BYTES` of UTF-8
  JSON: subsegments that do not fit move to documents of their own; a span too big
  alone loses metadata, then its stack traces, then annotations, until it fits.

Runs on exporter threads, never on the request path; never raises on odd spans.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import StatusCode

from pulsetrace.xray.fields import (
    SQL_SYSTEMS,
    ResourceParts,
    aws_block,
    client_http,
    exceptions_from_events,
    host_port,
    http_node_name,
    resource_parts,
    server_http,
    sql_block,
    status_code,
    status_exception,
    take,
)
from pulsetrace.xray.limits import (
    MAX_ANNOTATIONS,
    MAX_DOCUMENT_BYTES,
    MAX_HTTP_FIELD_CHARS,
    annotation_key,
    annotation_value,
    cut,
    json_safe,
    segment_name,
)
from pulsetrace.xray.span_view import SpanView, view_from_readable, view_from_stored, xray_trace_id

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from pulsetrace.config.schema import Config
    from pulsetrace.selfmetrics import SelfMetrics

__all__ = ["SpanView", "XRayTranslator", "view_from_readable", "view_from_stored", "xray_trace_id",
           "UDP_HEADER", "ANNOTATIONS_ATTRIBUTE"]

_log = logging.getLogger("pulsetrace.xray")

#: The X-Ray daemon's wire header, sent before every document in a datagram.
UDP_HEADER = b'{"format":"json","version":1}\n'
#: The span attribute listing which of its attributes are annotations (the collector reads it too).
ANNOTATIONS_ATTRIBUTE = "aws.xray.annotations"

#: Attribute keys the blocks may use; everything else goes to metadata as it is.
_KNOWN = frozenset({
    "http.request.method", "http.method", "url.full", "http.url", "url.path", "http.target", "url.scheme",
    "http.scheme", "server.address", "http.host", "server.port", "user_agent.original", "http.user_agent",
    "client.address", "http.client_ip", "http.response.status_code", "http.status_code",
    "http.response.body.size", "http.response_content_length", "enduser.id", ANNOTATIONS_ATTRIBUTE,
    "rpc.system", "rpc.service", "rpc.method", "cloud.region", "aws.region", "aws.request_id", "aws.requestId",
    "aws.dynamodb.table_names", "aws.table_name", "aws.sqs.queue_url", "aws.queue_url", "messaging.url",
    "db.system", "db.system.name", "db.name", "db.namespace", "db.statement", "db.query.text", "db.user",
    "db.version", "net.peer.name", "net.peer.port", "peer.service", "retry_attempts",
})
#: Kept in the metadata of a subsegment even though a block used it (the service map reads it).
_KEEP_IN_METADATA = ("db.system", "peer.service")
_ERROR = StatusCode.ERROR
_SEGMENT_ID_MASK = 0x5EC0_5EC0_5EC0_5EC0


def _sdk_version() -> str:
    try:
        from importlib.metadata import version

        return version("pulsetrace")
    except Exception:
        return "0.0.0"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False,
                            default=str)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=str)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class XRayTranslator:
    """Turns batches of span views into X-Ray documents. One per exporter; not thread-safe by design
    (each exporter calls it from its own thread)."""

    def __init__(self, indexed: Sequence[str] = (), metrics: SelfMetrics | None = None,
                 max_document_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        #: Attributes indexed as annotations on every span, besides the span's own list (the
        #: equivalent of the collector's ``indexed_attributes``).
        self.indexed = tuple(dict.fromkeys(indexed))
        self._indexed_set = frozenset(self.indexed)
        self.metrics = metrics
        self.max_document_bytes = max_document_bytes
        self._sdk_version = _sdk_version()
        self._resources: dict[object, tuple[object, ResourceParts]] = {}

    @classmethod
    def from_config(cls, cfg: Config, metrics: SelfMetrics | None = None) -> XRayTranslator:
        # No ``indexed`` keys: the span's own ``aws.xray.annotations`` list is authoritative. The
        # export-side annotator (pulsetrace.instrumentation.annotations) fills it from
        # ``tracing.business.annotations`` and enforces the per-trace cap, so adding the configured
        # keys again here could only bring back annotations it refused.
        return cls(metrics=metrics)

    def _count(self, name: str, n: float = 1, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.inc(name, n, reason=reason)

    # -- per resource ------------------------------------------------------------------------

    def _parts(self, view: SpanView) -> ResourceParts:
        hit = self._resources.get(view.resource_key)
        if hit is not None and (hit[0] is view.resource or not isinstance(view.resource_key, int)):
            return hit[1]
        if len(self._resources) >= 64:
            self._resources.clear()
        parts = resource_parts(view.resource, self._sdk_version)
        # Keep the resource alive with its parts: the key may be its id().
        self._resources[view.resource_key] = (view.resource, parts)
        return parts

    # -- one span ----------------------------------------------------------------------------

    def _node(self, v: SpanView, as_segment: bool, parts: ResourceParts) -> dict[str, Any]:
        known: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        known_keys = _KNOWN
        for key, value in v.attributes.items():
            if key in known_keys:
                known[key] = value
            else:
                meta[key] = value
        status = status_code(known) if known else None
        doc: dict[str, Any] = {"name": "", "id": v.span_id, "start_time": v.start, "end_time": v.end}
        remote = False
        if as_segment:
            doc["name"] = parts.name
            doc["trace_id"] = xray_trace_id(v.trace_id)
            if v.parent_id is not None:
                doc["parent_id"] = v.parent_id
            if parts.origin is not None:
                doc["origin"] = parts.origin
            doc["aws"] = parts.aws
            if parts.service is not None:
                doc["service"] = parts.service
            if known:
                http = server_http(known, status)
                if http is not None:
                    doc["http"] = http
                user = known.pop("enduser.id", None)
                if user is not None:
                    doc["user"] = cut(user, MAX_HTTP_FIELD_CHARS)
        else:
            kind = v.kind
            remote = kind == "client" or kind == "producer"
            if known or remote:
                self._dependency(v, doc, known, meta, status, remote)
            else:
                doc["name"] = segment_name(v.name)
        # error (4xx), throttle (429, also an error), fault (5xx, or an ERROR status otherwise)
        if status is not None and 400 <= status < 500:
            doc["error"] = True
            if status == 429:
                doc["throttle"] = True
        elif v.error or (status is not None and 500 <= status < 600):
            doc["fault"] = True
        if v.events or v.error:
            exceptions = exceptions_from_events(v.events, remote) if v.events else []
            if not exceptions and v.error:
                exceptions = status_exception(v.status_message)
            if exceptions:
                doc["cause"] = {"exceptions": exceptions}
        listed = known.pop(ANNOTATIONS_ATTRIBUTE, None) if known else None
        if listed or not (self._indexed_set.isdisjoint(meta.keys()) and self._indexed_set.isdisjoint(known.keys())):
            annotations = self._annotations(listed, meta, known)
            if annotations:
                doc["annotations"] = annotations
        if known:
            meta.update(known)
        if as_segment:
            if parts.metadata:
                doc["metadata"] = {"default": meta, "otel.resource": parts.metadata} if meta else \
                    {"otel.resource": parts.metadata}
            elif meta:
                doc["metadata"] = {"default": meta}
        elif meta:
            doc["metadata"] = {"default": meta}
        return doc

    def _dependency(self, v: SpanView, doc: dict[str, Any], known: dict[str, Any], meta: dict[str, Any],
                    status: int | None, remote: bool) -> None:
        """Name, namespace and blocks of a subsegment, after what it called. Attributes the
        name, URL or blocks already carry are not repeated in the metadata."""
        peer = known.pop("peer.service", None)
        db_system = take(known, "db.system", "db.system.name")
        host = take(known, "server.address", "net.peer.name")
        port = take(known, "server.port", "net.peer.port")
        name: str
        if known.get("rpc.system") == "aws-api":
            service = str(known.pop("rpc.service", "") or "")
            name = service.removeprefix("AWS.SDK.").removeprefix("AWS::") or v.name.split(".", 1)[0]
            doc["namespace"] = "aws"
            doc["aws"] = aws_block(known)
            http = client_http(known, status)
            if http is not None:
                doc["http"] = http
            if host is not None:
                meta["server.address"] = host
        elif db_system in SQL_SYSTEMS:
            system = str(db_system)
            database = str(take(known, "db.name", "db.namespace") or "")
            name = f"{database}@{host}" if database and host else (database or str(host or system))
            doc["namespace"] = "remote"
            doc["sql"] = sql_block(known, system, database, str(host or ""), port)
        elif db_system:
            # Named for the server it reaches (``redis@host:port``), like SQL databases: a
            # peer.service only when the span has no address.
            name = f"{db_system}@{host_port(host, port)}" if host else str(peer or db_system)
            doc["namespace"] = "remote"
        elif remote or peer:
            url = known.get("url.full") or known.get("http.url")
            # host:port unless peer.service names it: services on different ports of one host stay apart.
            name = str(peer or http_node_name(host, port, url or (f"//{known['http.host']}" if known.get("http.host")
                                                                  else None),
                                              known.get("url.scheme") or known.get("http.scheme")) or v.name)
            doc["namespace"] = "remote"
            http = client_http(known, status)
            if http is not None:
                doc["http"] = http
            if not url and host is not None:
                meta["server.address"] = host
                if port is not None:
                    meta["server.port"] = port
        else:
            name = v.name
            if host is not None:
                meta["server.address"] = host
            if port is not None:
                meta["server.port"] = port
        doc["name"] = segment_name(name)
        if db_system is not None:
            meta["db.system"] = db_system
        if peer is not None:
            meta["peer.service"] = peer
        known.pop("rpc.system", None)

    def _annotations(self, listed: object, meta: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
        keys: Iterable[str] = self.indexed
        if isinstance(listed, (list, tuple)):
            keys = dict.fromkeys([*self.indexed, *(str(k) for k in listed)])
        elif isinstance(listed, str) and listed:
            keys = dict.fromkeys([*self.indexed, *listed.split(",")])
        out: dict[str, Any] = {}
        for key in keys:
            source = meta if key in meta else known if key in known else None
            if source is None:
                continue
            value = annotation_value(source[key])
            if value is None:
                continue  # not indexable (a list): stays in metadata
            if len(out) >= MAX_ANNOTATIONS:
                self._count("annotations_dropped", reason="document_limit")
                continue
            del source[key]
            out[annotation_key(key)] = value
        return out

    # -- batches -----------------------------------------------------------------------------

    def segments(self, views: Iterable[SpanView]) -> list[dict[str, Any]]:
        """Documents (as dicts) for a batch: segments with their subsegments nested, plus an
        independent subsegment document for each span whose parent is not in the batch."""
        # (trace id, span id) → (view, its node, whether the node already has its place)
        nodes: dict[tuple[str, str], tuple[SpanView, dict[str, Any], bool]] = {}
        roots: list[dict[str, Any]] = []
        for v in views:
            try:
                parts = self._parts(v)
                as_segment = v.kind == "server" or v.parent_id is None or v.parent_remote
                if as_segment and (v.kind == "client" or v.kind == "producer"):
                    # A call with no local parent: the service (a segment of its own) made it.
                    call = self._node(v, False, parts)
                    segment = self._service_segment(v, parts)
                    segment["subsegments"] = [call]
                    roots.append(segment)
                    nodes[(v.trace_id, v.span_id)] = (v, call, True)
                    continue
                node = self._node(v, as_segment, parts)
            except Exception:  # one odd span must not cost the batch
                _log.debug("span %s could not be translated", getattr(v, "span_id", "?"), exc_info=True)
                self._count("xray_spans_untranslatable")
                continue
            nodes[(v.trace_id, v.span_id)] = (v, node, as_segment)
            if as_segment:
                roots.append(node)
        for (trace_id, _), (v, node, placed) in nodes.items():
            if placed or v.parent_id is None:
                continue
            parent = nodes.get((trace_id, v.parent_id))
            if parent is not None:
                parent[1].setdefault("subsegments", []).append(node)
            else:
                node["type"] = "subsegment"
                node["trace_id"] = xray_trace_id(trace_id)
                node["parent_id"] = v.parent_id
                roots.append(node)
        return roots

    def _service_segment(self, v: SpanView, parts: ResourceParts) -> dict[str, Any]:
        seg: dict[str, Any] = {"name": parts.name, "id": f"{int(v.span_id, 16) ^ _SEGMENT_ID_MASK:016x}",
                               "trace_id": xray_trace_id(v.trace_id), "start_time": v.start, "end_time": v.end,
                               "aws": parts.aws}
        if v.parent_id is not None:
            seg["parent_id"] = v.parent_id
        if parts.origin is not None:
            seg["origin"] = parts.origin
        if parts.service is not None:
            seg["service"] = parts.service
        if v.error:
            seg["fault"] = True
        if parts.metadata:
            seg["metadata"] = {"otel.resource": parts.metadata}
        return seg

    def documents(self, views: Iterable[SpanView]) -> list[str]:
        """The batch as JSON documents, each at most ``max_document_bytes`` of UTF-8."""
        out: list[str] = []
        for doc in self.segments(views):
            self._emit(doc, out)
        return out

    def encode_spans(self, spans: Sequence[ReadableSpan]) -> list[str]:
        """The X-Ray documents for a batch of finished SDK spans."""
        views: list[SpanView] = []
        for span in spans:
            try:
                views.append(view_from_readable(span))
            except Exception:
                _log.debug("span could not be read", exc_info=True)
                self._count("xray_spans_untranslatable")
        return self.documents(views)

    # -- encoding and size -------------------------------------------------------------------

    def _dumps(self, doc: dict[str, Any]) -> str:
        try:
            text = _ENCODER.encode(doc)
        except ValueError:  # NaN or Infinity somewhere in the metadata
            text = _ENCODER.encode(json_safe(doc))
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: escape it rather than send invalid UTF-8
                text = _ASCII_ENCODER.encode(json_safe(doc))
        return text

    def _emit(self, doc: dict[str, Any], out: list[str]) -> None:
        text = self._dumps(doc)
        if _utf8_len(text) <= self.max_document_bytes:
            out.append(text)
            return
        self._split(doc, out)

    def _split(self, doc: dict[str, Any], out: list[str]) -> None:
        """Send ``doc`` with as many of its subsegments as fit; the rest as documents of their own."""
        self._count("xray_documents_split")
        children: list[dict[str, Any]] = doc.pop("subsegments", None) or []
        trace_id = doc["trace_id"]
        size = _utf8_len(self._dumps(doc)) + len(',"subsegments":[]')
        kept: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        for child in children:
            n = _utf8_len(self._dumps(child)) + 1
            if size + n <= self.max_document_bytes:
                kept.append(child)
                size += n
            else:
                moved.append(child)
        if kept:
            doc["subsegments"] = kept
        text = self._dumps(doc)
        if _utf8_len(text) > self.max_document_bytes:
            text = self._trim(doc)
        if text:
            out.append(text)
        for child in moved:
            child["type"] = "subsegment"
            child["trace_id"] = trace_id
            child["parent_id"] = doc["id"]
            self._emit(child, out)

    def _trim(self, doc: dict[str, Any]) -> str:
        """Make one document without subsegments fit: shorten metadata, then drop it, then the
        stack traces, then the annotations, then the sql query."""
        self._count("xray_documents_trimmed")
        steps = (self._shorten_metadata, lambda d: d.pop("metadata", None), self._drop_stacks,
                 lambda d: d.pop("annotations", None), self._drop_query, lambda d: d.pop("cause", None))
        text = ""
        for step in steps:
            step(doc)
            text = self._dumps(doc)
            if _utf8_len(text) <= self.max_document_bytes:
                return text
        _log.debug("document %s does not fit even trimmed; dropped", doc.get("id"))
        self._count("xray_documents_dropped", reason="too_large")
        return ""

    @staticmethod
    def _shorten_metadata(doc: dict[str, Any]) -> None:
        # New dicts, never edits in place: a namespace may be shared (the resource's).
        short: dict[str, Any] = {}
        for ns, values in (doc.get("metadata") or {}).items():
            if not isinstance(values, dict):
                continue
            short[ns] = {k: (v[:256] + "…" if isinstance(v, str) and len(v) > 256 else
                             list(v[:16]) if isinstance(v, (list, tuple)) and len(v) > 16 else v)
                         for k, v in values.items()}
        if short:
            doc["metadata"] = short

    @staticmethod
    def _drop_stacks(doc: dict[str, Any]) -> None:
        for exc in (doc.get("cause") or {}).get("exceptions", []):
            dropped = len(exc.pop("stack", []))
            if dropped:
                exc["truncated"] = exc.get("truncated", 0) + dropped

    @staticmethod
    def _drop_query(doc: dict[str, Any]) -> None:
        sql = doc.get("sql")
        if isinstance(sql, dict) and "sanitized_query" in sql:
            sql["sanitized_query"] = sql["sanitized_query"][:256]
