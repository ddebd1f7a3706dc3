"""The health server's messages and limits: what a handler gets and returns, and the bounds it runs under.

Pure data and small pure functions, shared by :mod:`pulsetrace.http.connection` (one client
connection) and :mod:`pulsetrace.http.server` (the listener); no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulsetrace.config.schema import HealthConfig



MAX_HEAD = 16 * 1024
MAX_TARGET = 8 * 1024
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
#: Time spent draining the non-priority queue per loop turn before I/O (and /health) gets a turn.
SLICE_S = 0.001
#: A connection this young is evicted only when no older idle one can go: it has barely had time to speak.
FRESH_S = 0.5
#: Connections looked at, least recently active first, to find one to evict.
_EVICTION_SCAN = 512


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 512
    max_per_client: int = 64
    #: Connections admitted past ``max_connections`` when none can give way (then 503).
    reserve: int = 64
    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_head: int = MAX_HEAD
    max_body: int = MAX_BODY

    @classmethod
    def from_config(cls, hc: HealthConfig) -> ServerLimits:
        return cls(max_connections=hc.max_connections, max_per_client=hc.max_connections_per_client,
                   header_timeout=hc.header_timeout, idle_timeout=hc.idle_timeout, max_body=hc.max_body)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: str
    version: str = "HTTP/1.1"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.peer)


def is_loopback(peer: str) -> bool:
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # a dual-stack socket's IPv4 client
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())
    close: bool = False


def json_response(status: int, doc: Any, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode() + b"\n", headers=headers, close=close)


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": message, **extra})


Handler = Callable[[Request], "Response | Awaitable[Response]"]
