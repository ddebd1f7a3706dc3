"""The blocks of an X-Ray segment document built from OpenTelemetry attributes.

``origin`` and the ``aws`` / ``service`` blocks of a segment come from the resource
(computed once per resource, see :class:`ResourceParts`); ``http``, ``sql`` and the
subsegment ``aws`` block from span attributes in either the current or the old
semantic conventions; ``cause`` from ``exception`` events, with Python tracebacks
parsed into stack frames. Names and namespaces follow what the X-Ray SDKs and the
collector's ``awsxray`` exporter write, so the X-Ray console draws the same map
whichever path spans take. Pure functions: no I/O, never raise on odd input.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pulsetrace.xray.limits import (
    MAX_EXCEPTIONS,
    MAX_HTTP_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_QUERY_CHARS,
    MAX_STACK_FRAMES,
    cut,
    json_safe,
    segment_name,
)

SDK_NAME = "pulsetrace"

#: ``cloud.platform`` → X-Ray ``origin``.
ORIGINS: dict[str, str] = {
    "aws_ecs": "AWS::ECS::Container",
    "aws_ec2": "AWS::EC2::Instance",
    "aws_eks": "AWS::EKS::Container",
    "aws_lambda": "AWS::Lambda::Function",
    "aws_elastic_beanstalk": "AWS::ElasticBeanstalk::Environment",
    "aws_app_runner": "AWS::AppRunner::Service",
}

#: ``db.system`` values that get a ``sql`` block, with the ``database_type`` the X-Ray SDKs write.
SQL_SYSTEMS: dict[str, str] = {
    "postgresql": "PostgreSQL",
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "mssql": "Microsoft SQL Server",
    "oracle": "Oracle",
    "sqlite": "SQLite",
    "db2": "DB2",
    "redshift": "Redshift",
    "cockroachdb": "CockroachDB",
    "other_sql": "SQL",
}
#: ``db.system`` values drawn as a cache node.
CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey", "hazelcast"})

#: Resource attributes that fill the segment's ``aws`` block, per platform sub-block.
_AWS_RESOURCE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "ecs": (("container", "host.name"), ("container_id", "container.id"), ("task_arn", "aws.ecs.task.arn"),
            ("task_family", "aws.ecs.task.family"), ("cluster_arn", "aws.ecs.cluster.arn"),
            ("container_arn", "aws.ecs.container.arn"), ("launch_type", "aws.ecs.launchtype"),
            ("availability_zone", "cloud.availability_zone")),
    "ec2": (("instance_id", "host.id"), ("availability_zone", "cloud.availability_zone"),
            ("instance_size", "host.type"), ("ami_id", "host.image.id")),
    "eks": (("cluster_name", "k8s.cluster.name"), ("pod", "k8s.pod.name"), ("container_id", "container.id")),
    "elastic_beanstalk": (("environment_name", "service.namespace"), ("version_label", "service.version")),
}
#: Resource attributes the segment already carries elsewhere (name, service, origin, aws).
_REPRESENTED = frozenset({"service.name", "service.version", "cloud.provider", "cloud.platform", "cloud.account.id"})
_PLATFORM_BLOCK = {"aws_ecs": "ecs", "aws_ec2": "ec2", "aws_eks": "eks", "aws_elastic_beanstalk": "elastic_beanstalk"}


@dataclass(frozen=True)
class ResourceParts:
    """What a segment takes from its resource, computed once per resource."""

    name: str
    origin: str | None
    aws: dict[str, Any]
    service: dict[str, Any] | None
    #: Resource attributes for ``metadata["otel.resource"]`` (shared, never mutated).
    metadata: dict[str, Any]


def resource_parts(attrs: Mapping[str, Any], sdk_version: str) -> ResourceParts:
    name = segment_name(str(attrs.get("service.name") or "unknown_service"))
    provider = attrs.get("cloud.provider")
    platform = str(attrs.get("cloud.platform") or "")
    origin = ORIGINS.get(platform) if provider in (None, "aws") else None
    aws: dict[str, Any] = {"xray": {"sdk": SDK_NAME, "sdk_version": sdk_version, "auto_instrumentation": True}}
    account = attrs.get("cloud.account.id")
    if account:
        aws["account_id"] = str(account)
    block = _PLATFORM_BLOCK.get(platform)
    if block is not None and origin is not None:
        sub: dict[str, Any] = {field: str(attrs[key]) for field, key in _AWS_RESOURCE_KEYS[block] if attrs.get(key)}
        if block == "elastic_beanstalk" and str(attrs.get("service.instance.id", "")).isdigit():
            sub["deployment_id"] = int(str(attrs["service.instance.id"]))
        if sub:
            aws[block] = sub
    version = attrs.get("service.version")
    service = {"version": str(version)} if version else None
    represented = _REPRESENTED | {key for block_keys in _AWS_RESOURCE_KEYS.values() for _, key in block_keys}
    metadata = {str(k): json_safe(v) for k, v in attrs.items() if k not in represented}
    return ResourceParts(name=name, origin=origin, aws=aws, service=service, metadata=metadata)


# -- URLs and hosts -------------------------------------------------------------------------


def clean_url(url: str) -> str:
    """``url`` without credentials, query or fragment, ≤ 250 characters (the schema's limit)."""
    if "@" in url or "?" in url or "#" in url:
        try:
            parts = urlsplit(url)
            netloc = parts.netloc.rpartition("@")[2]
            url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        except ValueError:
            url = url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    return url if len(url) <= MAX_HTTP_FIELD_CHARS else url[:MAX_HTTP_FIELD_CHARS]


def host_port(host: object, port: object) -> str:
    if host in (None, ""):
        return ""
    host = str(host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port}" if port not in (None, "") else host


#: Ports a URL leaves out: a node on one of them is named by its host alone.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def http_node_name(host: object, port: object, url: object, scheme: object = None) -> str:
    """The name of an HTTP dependency's node: ``host:port``, or the host when the port is the scheme's default.

    Two services on different ports of one host are two nodes (``127.0.0.1:8001``,
    ``127.0.0.1:8002``); ``api.stripe.com`` stays ``api.stripe.com``. The address and port
    attributes win over the URL's (the URL may name a proxy's view); either may be missing.
    """
    url_scheme = ""
    if url:
        try:
            parts = urlsplit(str(url))
            url_scheme = parts.scheme
            host = host if host not in (None, "") else parts.hostname
            port = port if port not in (None, "") else parts.port
        except ValueError:  # not a URL, or a port that is not a number: the host alone
            pass
    if host in (None, ""):
        return ""
    number = _int(port)
    kind = str(scheme or url_scheme or "").lower()
    if number is None or number == _DEFAULT_PORTS.get(kind) or (not kind and number in (80, 443)):
        return host_port(host, None)
    return host_port(host, number)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def take(known: dict[str, Any], *keys: str) -> Any:
    """The first truthy value among ``keys`` (current convention first), removing all of them:
    instrumentations often write both conventions, and the metadata need not repeat either."""
    found: Any = None
    for key in keys:
        value = known.pop(key, None)
        if found is None and value:
            found = value
    return found


def status_code(known: Mapping[str, Any]) -> int | None:
    value = known.get("http.response.status_code")
    if value is None:
        value = known.get("http.status_code")
    return None if value is None else _int(value)


# -- http blocks ----------------------------------------------------------------------------


def server_http(known: dict[str, Any], status: int | None) -> dict[str, Any] | None:
    """The ``http`` block of a segment (the request as the server saw it)."""
    request: dict[str, Any] = {}
    method = take(known, "http.request.method", "http.method")
    if method:
        request["method"] = cut(method, MAX_HTTP_FIELD_CHARS)
    url = take(known, "url.full", "http.url")
    # The URL carries these from now on: taken, so the metadata does not repeat them.
    host = take(known, "server.address", "http.host")
    path = take(known, "url.path", "http.target")
    scheme = take(known, "url.scheme", "http.scheme")
    port = known.pop("server.port", None)
    if url:
        request["url"] = clean_url(str(url))
    elif host and path is not None:
        scheme = scheme or "http"
        n = _int(port)
        netloc = str(host) if n is None or (scheme, n) in (("http", 80), ("https", 443)) or ":" in str(host) \
            else f"{host}:{n}"
        request["url"] = clean_url(f"{scheme}://{netloc}{path}")
    else:
        if path is not None:
            request["url"] = clean_url(str(path))
        for key, value in (("server.address", host), ("url.scheme", scheme), ("server.port", port)):
            if value is not None:
                known[key] = value  # no URL carries them: they stay in the metadata
    agent = take(known, "user_agent.original", "http.user_agent")
    if agent:
        request["user_agent"] = cut(agent, MAX_HTTP_FIELD_CHARS)
    client = take(known, "client.address", "http.client_ip")
    if client:
        request["client_ip"] = cut(client, MAX_HTTP_FIELD_CHARS)
    return _http_block(request, _response(known, status))


def _http_block(request: dict[str, Any], response: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"request": ..., "response": ...}`` with the empty halves left out; ``None`` when both are."""
    out: dict[str, Any] = {}
    if request:
        out["request"] = request
    if response:
        out["response"] = response
    return out or None


def client_http(known: dict[str, Any], status: int | None) -> dict[str, Any] | None:
    """The ``http`` block of a remote subsegment (the call as the client made it)."""
    request: dict[str, Any] = {}
    method = take(known, "http.request.method", "http.method")
    if method:
        request["method"] = cut(method, MAX_HTTP_FIELD_CHARS)
    url = take(known, "url.full", "http.url")
    if url:
        request["url"] = clean_url(str(url))
    return _http_block(request, _response(known, status))


def _response(known: dict[str, Any], status: int | None) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if status is not None:
        response["status"] = status
        known.pop("http.response.status_code", None)
        known.pop("http.status_code", None)
    length = known.pop("http.response.body.size", None)
    if length is None:
        length = known.pop("http.response_content_length", None)
    if length is not None and (n := _int(length)) is not None:
        response["content_length"] = n
    return response


# -- sql and aws blocks ---------------------------------------------------------------------


def sql_block(known: dict[str, Any], system: str, database: str, host: str, port: object) -> dict[str, Any]:
    """The ``sql`` block: a URL built from parts (so never with a password), type, query, user."""
    sql: dict[str, Any] = {"database_type": SQL_SYSTEMS.get(system, system)}
    if host:
        sql["url"] = f"{system}://{host_port(host, port)}/{database}" if database else \
            f"{system}://{host_port(host, port)}"
    query = take(known, "db.statement", "db.query.text")
    if query:
        sql["sanitized_query"] = cut(query, MAX_QUERY_CHARS)
    user = known.pop("db.user", None)
    if user:
        sql["user"] = cut(user, MAX_HTTP_FIELD_CHARS)
    version = known.pop("db.version", None)
    if version:
        sql["database_version"] = str(version)
    return sql


def aws_block(known: dict[str, Any]) -> dict[str, Any]:
    """The ``aws`` block of a botocore subsegment."""
    aws: dict[str, Any] = {}
    op = known.pop("rpc.method", None)
    if op:
        aws["operation"] = str(op)
    region = take(known, "cloud.region", "aws.region")
    if region:
        aws["region"] = str(region)
    request_id = take(known, "aws.request_id", "aws.requestId")
    if request_id:
        aws["request_id"] = str(request_id)
    tables = known.pop("aws.dynamodb.table_names", None)
    if isinstance(tables, (list, tuple)) and tables:
        aws["table_name"] = str(tables[0])
        if len(tables) > 1:
            aws["table_names"] = [str(t) for t in tables]
    elif known.get("aws.table_name"):
        aws["table_name"] = str(known.pop("aws.table_name"))
    queue = take(known, "aws.sqs.queue_url", "aws.queue_url", "messaging.url")
    if queue:
        aws["queue_url"] = str(queue)
    retries = known.pop("retry_attempts", None)
    if retries is not None and (n := _int(retries)) is not None:
        aws["retries"] = n
    return aws


# -- cause ----------------------------------------------------------------------------------

_CHAIN_SPLIT = re.compile(
    r"\n\s*\n(?:During handling of the above exception, another exception occurred:|"
    r"The above exception was the direct cause of the following exception:)\s*\n\s*\n")
_REPEATED = re.compile(r"\[Previous line repeated (\d+) more times?\]")
_FRAME = re.compile(r'^[ \t|+]*File "(?P<path>[^"]*)", line (?P<line>\d+)(?:, in (?P<label>.*))?$', re.M)


def _new_id() -> str:
    return os.urandom(8).hex()


def _frames(block: str) -> tuple[list[dict[str, Any]], int]:
    """Stack frames of one traceback block, innermost first, at most ``MAX_STACK_FRAMES``."""
    frames = [{"path": m.group("path"), "line": int(m.group("line")), "label": (m.group("label") or "").strip()}
              for m in _FRAME.finditer(block)]
    frames.reverse()
    # Python collapses runs of identical frames into one line; those frames count as truncated.
    collapsed = sum(int(m.group(1)) for m in _REPEATED.finditer(block))
    dropped = max(0, len(frames) - MAX_STACK_FRAMES) + collapsed
    return frames[:MAX_STACK_FRAMES], dropped


def _last_line(block: str) -> tuple[str, str]:
    """``(type, message)`` from a traceback block's final ``Type: message`` line."""
    for line in reversed(block.strip().splitlines()):
        if line and not line[0].isspace() and not line.startswith("Traceback"):
            kind, _, message = line.partition(": ")
            return kind.strip(), message.strip()
    return "", ""


def exceptions_from_events(events: Sequence[tuple[str, Mapping[str, Any]]], remote: bool) -> list[dict[str, Any]]:
    """X-Ray ``cause.exceptions`` from OpenTelemetry ``exception`` events (chained causes linked)."""
    out: list[dict[str, Any]] = []
    for name, attrs in events:
        if name != "exception" or len(out) >= MAX_EXCEPTIONS:
            continue
        stacktrace = str(attrs.get("exception.stacktrace") or "")
        blocks = _CHAIN_SPLIT.split(stacktrace) if stacktrace else [""]
        # The last block is the exception raised; the ones before it are its causes, outermost last.
        chain: list[dict[str, Any]] = []
        for i, block in enumerate(reversed(blocks)):
            if len(out) + len(chain) >= MAX_EXCEPTIONS:
                break
            if i == 0:
                kind = str(attrs.get("exception.type") or "") or _last_line(block)[0]
                message = str(attrs.get("exception.message") or "")
            else:
                kind, message = _last_line(block)
            exc: dict[str, Any] = {"id": _new_id(), "type": kind, "message": cut(message, MAX_MESSAGE_CHARS)}
            if remote:
                exc["remote"] = True
            frames, dropped = _frames(block)
            if frames:
                exc["stack"] = frames
            if dropped:
                exc["truncated"] = dropped
            if chain:
                chain[-1]["cause"] = exc["id"]
            chain.append(exc)
        out.extend(chain)
    return out


def status_exception(message: str | None) -> list[dict[str, Any]]:
    """An ERROR status with a description but no exception event becomes one exception."""
    if not message:
        return []
    return [{"id": _new_id(), "message": cut(message, MAX_MESSAGE_CHARS)}]
