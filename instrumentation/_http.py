"""What the ASGI and WSGI server middleware share: the route stand-in and the header getter.

Private to the two middleware modules; pure functions, safe on the request path.
"""

from __future__ import annotations

__all__ = ["GETTER", "ROUTE_KEY", "SPAN_KEY", "path_template"]

#: Scope/environ key holding the request's server span: a request already traced by an outer
#: pulsetrace middleware (the server's wrapper and the framework's both apply) gets no second one.
SPAN_KEY = "pulsetrace.span"
#: Scope/environ key where a framework hook leaves the matched route template (``users/<slug:name>/``).
ROUTE_KEY = "pulsetrace.route"


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
