"""What the ASGI and WSGI server middleware share: the route stand-in and the header getter.

Private to the two middleware modules; pure functions, safe on the request path.
"""

from __future__ import annotations

__all__ = ["GETTER", "MAX_QUERY_CHARS", "ROUTE_KEY", "SPAN_KEY", "cut_query", "path_template"]

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
