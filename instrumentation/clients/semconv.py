"""The attributes and span names the lean hooks record, per the semantic conventions.

Each hook records the current (stable) keys and the older ones that the X-Ray
translation and the awsxray exporter still read (``http.method``, ``http.url``,
``http.status_code``, ``net.peer.name``, ``db.name``, ``db.statement``...): the same
values contrib's instrumentations write with ``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup,
database/dup``, minus the keys nothing downstream reads (the differences are listed in
docs/performance.md). Statements are recorded as the application wrote them: the PII
scrubber sanitises them on the export thread, never on the request path.

Pure functions; never raise for the inputs the hooks pass.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KNOWN_METHODS", "db_attributes", "http_attributes", "http_response_attributes", "http_span_name", "sql_operation",
           "strip_userinfo"]

KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (credentials never go into a span)."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    start = scheme_end + 3
    end = len(url)
    for sep in "/?#":
        i = url.find(sep, start)
        if 0 <= i < end:
            end = i
    at = url.rfind("@", start, end)
    if at < 0:
        return url
    return url[:start] + url[at + 1:]


def http_span_name(method: str, host: str, port: int | None, scheme: str) -> str:
    """``GET host`` (``GET host:port`` when the port is not the scheme's default), ``HTTP host`` for odd methods.

    The host as the ``Host`` header names it, so two services on one machine get two names.
    """
    verb = method if method in KNOWN_METHODS else "HTTP"
    if not host:
        return verb
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{verb} {host}:{port}"
    return f"{verb} {host}"


def http_attributes(method: str, url: str, host: str, port: int | None, scheme: str) -> dict[str, Any]:
    """A client span's attributes known before the request is sent (old and new keys)."""
    if method in KNOWN_METHODS:
        attrs: dict[str, Any] = {"http.method": method, "http.request.method": method}
    else:
        attrs = {"http.method": method, "http.request.method": "_OTHER", "http.request.method_original": method}
    url = strip_userinfo(url)
    attrs["http.url"] = url
    attrs["url.full"] = url
    if host:
        attrs["server.address"] = host
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if port is not None:
        attrs["server.port"] = port
    return attrs


def sql_operation(statement: str) -> str:
    """The first word of ``statement`` after any leading ``/* comment */``: the span name contrib gives."""
    text = statement.lstrip()
    while text.startswith("/*"):
        end = text.find("*/")
        if end < 0:
            return ""
        text = text[end + 2:].lstrip()
    parts = text.split(None, 1)
    return parts[0] if parts else ""


def db_attributes(system: str, database: str | None, user: str | None, host: str | None,
                  port: int | None) -> dict[str, Any]:
    """A database connection's attributes (the same on every span of that connection)."""
    attrs: dict[str, Any] = {"db.system": system, "db.system.name": system}
    if database:
        attrs["db.name"] = database
        attrs["db.namespace"] = database
    if user:
        attrs["db.user"] = user
    if host:
        attrs["net.peer.name"] = host
        attrs["server.address"] = host
    if port is not None:
        attrs["net.peer.port"] = port
        attrs["server.port"] = port
    return attrs


def http_response_attributes(status_code: int) -> dict[str, Any]:
    """The attributes a response adds (``error.type`` is the code for a 4xx/5xx, as contrib writes it)."""
    attrs: dict[str, Any] = {"http.status_code": status_code, "http.response.status_code": status_code}
    if status_code >= 400:
        attrs["error.type"] = str(status_code)
    return attrs
