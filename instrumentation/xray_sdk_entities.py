"""The segments and subsegments the X-Ray SDK bridge hands back: OpenTelemetry spans in X-Ray's clothes.

An :class:`XRayEntity` wraps one OpenTelemetry span and answers the X-Ray SDK's entity interface
(``trace_id``, ``id``, ``sampled``, ``put_annotation``, ``put_metadata``, ``put_http_meta``,
``add_exception``, ``apply_status_code``, ``set_aws``, ``set_sql``, ``set_user`` ...), writing
everything as span attributes, so one trace holds what the SDK calls and pulsetrace's own
instrumentation recorded:

- ``put_annotation(k, v)``: the attribute ``k``, listed in ``aws.xray.annotations`` so the X-Ray
  exporters (and ADOT's ``awsxray`` exporter) index it, within the same limits as ``index=``
  (:mod:`pulsetrace.instrumentation.annotations`); a value X-Ray cannot index is dropped, as the
  SDK drops it;
- ``put_metadata(k, v, namespace)``: the attribute ``k`` (``namespace.k`` outside ``default``),
  a JSON string for a value that is not a string, number or boolean: X-Ray metadata, and an
  attribute on OTLP;
- HTTP, SQL, AWS and user fields: the OpenTelemetry semantic-convention attributes the
  translation to X-Ray reads back.

An entity that *borrows* its span (the SDK's ``XRayMiddleware`` inside pulsetrace's server span)
adds to it but never ends it. Methods never raise into the application.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextvars import Token
from typing import Any

from opentelemetry.context import Context

from opentelemetry.trace import Span, Status, StatusCode

from pulsetrace.instrumentation.annotations import ANNOTATIONS_ATTR, annotation_value, merge_index_keys

__all__ = ["XRayEntity", "xray_trace_id"]

_log = logging.getLogger("pulsetrace.instrumentation.xray_sdk")

#: The SDK's ``put_http_meta`` keys → attributes (request fields; the status has its own path).
_HTTP = {"url": "url.full", "method": "http.request.method", "user_agent": "user_agent.original",
         "client_ip": "client.address", "content_length": "http.response.body.size"}
_SQL = {"url": "db.connection_string", "sanitized_query": "db.statement", "database_type": "db.system",
        "database_version": "db.version", "driver_version": "db.driver.version", "user": "db.user",
        "preparation": "db.preparation"}
_AWS = {"operation": "rpc.method", "region": "cloud.region", "request_id": "aws.request_id",
        "queue_url": "aws.sqs.queue_url", "table_name": "aws.dynamodb.table_names", "bucket_name": "aws.s3.bucket"}


def xray_trace_id(trace_id: int) -> str:
    """``1-XXXXXXXX-YYYYYYYYYYYYYYYYYYYYYYYY`` for a 128-bit OpenTelemetry trace id."""
    text = f"{trace_id:032x}"
    return f"1-{text[:8]}-{text[8:]}"


def _attribute_value(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


class XRayEntity:
    """A segment (``type == "segment"``) or subsegment over one span."""

    def __init__(self, span: Span, name: str, *, segment: bool, owned: bool, namespace: str = "local",
                 token: Token[Context] | None = None, parent: XRayEntity | None = None) -> None:
        self.span = span
        self.name = name
        self.type = "segment" if segment else "subsegment"
        self.namespace = namespace
        #: Whether the bridge started the span (and so ends it) or borrowed pulsetrace's own.
        self.owned = owned
        #: The context token of the span, detached when the entity ends.
        self.token = token
        self._parent = parent
        self._origin_header: Any = None
        self._annotated: tuple[str, ...] | None = None
        self.in_progress = True

    # The ids are read rarely (a response header, a log line): formatted when asked, not per call.
    @property
    def trace_id(self) -> str:
        return xray_trace_id(self.span.get_span_context().trace_id)

    @property
    def id(self) -> str:
        return f"{self.span.get_span_context().span_id:016x}"

    @property
    def sampled(self) -> bool:
        return bool(self.span.get_span_context().trace_flags.sampled)

    @property
    def parent_segment(self) -> XRayEntity:
        return self._parent if self._parent is not None else self

    # -- what the SDK's users call ---------------------------------------------------------------

    def put_annotation(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or annotation_value(value) is None:
            _log.debug("annotation %r dropped: X-Ray indexes strings, numbers and booleans only", key)
            return
        self._set(key, value)
        if self._annotated is None:  # what other instrumentation already listed on this span, read once
            self._annotated = merge_index_keys((getattr(self.span, "attributes", None) or {}).get(ANNOTATIONS_ATTR), ())
        if key not in self._annotated:
            self._annotated = (*self._annotated, key)
            self._set(ANNOTATIONS_ATTR, self._annotated)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        if not isinstance(key, str) or not isinstance(namespace, str) or namespace.startswith("AWS."):
            return  # the SDK reserves the AWS. namespace too
        self._set(key if namespace == "default" else f"{namespace}.{key}", _attribute_value(value))

    def put_http_meta(self, key: str, value: Any) -> None:
        if value is None:
            return
        if key == "status":
            self.apply_status_code(value)
        elif key in _HTTP and not (key == "url" and not self.owned):
            self._set(_HTTP[key], _attribute_value(value))

    def apply_status_code(self, status_code: Any) -> None:
        if not isinstance(status_code, int) or isinstance(status_code, bool):
            return
        if self.owned:  # a borrowed server span records its own status
            self._set("http.response.status_code", status_code)
            if status_code >= 500:
                self.add_fault_flag()

    def add_exception(self, exception: BaseException, stack: Any = None, remote: bool = False) -> None:
        try:
            self.span.record_exception(exception)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"[:256]))
        except Exception:
            _log.debug("add_exception failed", exc_info=True)

    def add_fault_flag(self) -> None:
        try:
            self.span.set_status(Status(StatusCode.ERROR))
        except Exception:
            _log.debug("add_fault_flag failed", exc_info=True)

    def add_error_flag(self) -> None:
        self._set("xray.error", True)

    def add_throttle_flag(self) -> None:
        self._set("xray.throttle", True)

    def set_aws(self, aws_meta: Mapping[str, Any]) -> None:
        for key, value in (aws_meta or {}).items():
            self._set(_AWS.get(key, f"aws.{key}"), _attribute_value(value))

    def set_sql(self, sql: Mapping[str, Any]) -> None:
        for key, value in (sql or {}).items():
            if key in _SQL:
                self._set(_SQL[key], _attribute_value(value))

    def set_user(self, user: str) -> None:
        self._set("enduser.id", str(user))

    def set_service(self, service_info: Mapping[str, Any]) -> None:
        pass  # the resource (service.name, service.version) says it already

    def set_rule_name(self, rule_name: str) -> None:
        pass  # pulsetrace's sampler records the rule that decided (sampling.rule)

    def save_origin_trace_header(self, trace_header: Any) -> None:
        self._origin_header = trace_header

    def get_origin_trace_header(self) -> Any:
        return self._origin_header

    def close(self, end_time: float | None = None) -> None:
        if self.owned and self.in_progress:
            self.span.end(end_time=int(end_time * 1e9) if end_time is not None else None)
        self.in_progress = False

    def __getattr__(self, name: str) -> Any:
        # Anything else of the SDK's entity interface (serialize, add_subsegment, ...): a no-op,
        # so a call this bridge does not model never breaks the application.
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def _set(self, key: str, value: Any) -> None:
        try:
            self.span.set_attribute(key, value)
        except Exception:
            _log.debug("attribute %r not set", key, exc_info=True)
