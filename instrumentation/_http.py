"""What the ASGI and WSGI server middleware share: the route stand-in and the header getter.

Private to the two middleware modules; pure functions, safe on the request path.
"""

from __future__ import annotations

from opentelemetry.trace import Span

__all__ = ["GETTER", "MAX_QUERY_CHARS", "ROUTE_KEY", "SPAN_KEY", "cut_query", "path_template",
           "split_host", "trace_response_headers"]

#: Scope/environ key holding the request's server span: a request already traced by an outer
#: pulsetrace middleware (the server's wrapper and the framework's both apply) gets no second one.
SPAN_KEY = "pulsetrace.span"
#: Scope/environ key where a framework hook leaves the matched route template (``users/<slug:name>/``).
ROUTE_KEY = "pulsetrace.route"


#: Longest ``url.query`` recorded on the request path (the rest is dropped, whole parameters at a time).
MAX_QUERY_CHARS = 2048


def cut_query(query: str, limit: int = MAX_QUERY_CHARS) -> str:
    """``query`` cut to at most ``limit`` characters at a parameter boundary.

    The scrubber runs later, on the export thread: a parameter cut in the middle
    (``email=alice@exam``, ``card=4111 1111 11``) would no longer look like what it is and
    leave in clear, so a cut never splits a parameter; the ones past it are dropped whole.
    """
    if len(query) <= limit:
        return query
    end = max(query.rfind("&", 0, limit + 1), query.rfind(";", 0, limit + 1))
    return query[:end] if end > 0 else ""


def path_template(path: str) -> str:
    """A low-cardinality stand-in for a route when the framework gives none.

    Segments that look like ids (any digit, or longer than 24 characters) become ``{id}``,
    so ``/orders/8812/items`` and ``/orders/9/items`` share ``/orders/{id}/items``.
    """
    parts = path.split("/")
    for i, part in enumerate(parts):
        if len(part) > 24 or any(c.isdigit() for c in part):
            parts[i] = "{id}"
    return "/".join(parts[:8]) if len(parts) <= 8 else "/".join(parts[:8]) + "/…"


def split_host(host: str) -> tuple[str, int]:
    """``Host`` header → (address, port or 0): ``shop:8080``, ``[::1]:8080``, ``shop``."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        addr, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else 0
    return addr, port if 0 < port < 65536 else 0


class _DictGetter:
    """A TextMap getter over a plain ``dict[str, str]``."""

    @staticmethod
    def get(carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    @staticmethod
    def keys(carrier: dict[str, str]) -> list[str]:
        return list(carrier)


#: The getter both middleware hand to ``propagate.extract`` (headers already in a ``dict``).
GETTER = _DictGetter()


def trace_response_headers(span: Span) -> tuple[tuple[str, str], ...]:
    """``X-Amzn-Trace-Id`` and ``traceresponse`` for the request's server span (``tracing.response_header``).

    ``X-Amzn-Trace-Id: Root=1-...;Sampled=0|1`` as the X-Ray SDK answers it (the root and the
    decision, no parent), and W3C Trace Context Level 2's ``traceresponse``
    (``00-<trace id>-<server span id>-<flags>``). Nothing outside a valid trace.
    """
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ()
    hex_trace = format(ctx.trace_id, "032x")
    flags = int(ctx.trace_flags)
    return (("x-amzn-trace-id", f"Root=1-{hex_trace[:8]}-{hex_trace[8:]};Sampled={flags & 1}"),
            ("traceresponse", f"00-{hex_trace}-{ctx.span_id:016x}-{flags:02x}"))
