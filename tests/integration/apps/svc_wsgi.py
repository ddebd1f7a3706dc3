"""Test app: a plain WSGI application (served by gunicorn's sync workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/fail":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"fail"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", b"wsgi"]
