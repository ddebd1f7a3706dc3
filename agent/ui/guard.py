"""The console's front door: methods, Host, token and security headers, before any page runs.

A pure ASGI middleware so it sees every request, static files included:

* only ``GET`` and ``HEAD``: anything else is 405 (the console writes nothing);
* on a loopback listener the ``Host`` header must be a loopback name, so a web page on
  another origin that rebinds its DNS name to 127.0.0.1 cannot read the console;
* with a token, a request needs ``Authorization: Bearer TOKEN`` or the ``pulsetrace_ui``
  cookie; opening any page with ``?token=TOKEN`` once sets the cookie (HttpOnly,
  SameSite=Strict) and redirects to the same address without the token, so it does not
  stay in the address bar or the history. Tokens are compared in constant time;
* every answer gets a Content-Security-Policy allowing only this origin's own scripts
  and styles (no inline ones, no other origin), no framing, no referrer, ``nosniff`` and
  ``no-store``.

A refused request gets a small plain-text 4xx and nothing else.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Guard", "COOKIE", "CSP", "LOOPBACK_HOSTS"]

COOKIE = "pulsetrace_ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token or None
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        if scope.get("method") not in ("GET", "HEAD"):
            await _plain(send, 405, "read-only console: GET and HEAD only\n", [(b"allow", b"GET, HEAD")])
            return
        if self.loopback and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
            await _plain(send, 421, "this console answers to 127.0.0.1 / localhost only\n")
            return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            offered = query.get("token")
            if offered is not None and self._ok(offered):
                rest = urlencode([(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                               keep_blank_values=True) if k != "token"])
                location = scope.get("path", "/") + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                await _plain(send, 303, "", [(b"location", location.encode("latin-1", "replace")),
                                             (b"set-cookie", cookie.encode("latin-1", "replace"))])
                return
            if not self._authorised(headers):
                await _plain(send, 401, "a token is needed: open this address with ?token=... or send "
                                        "Authorization: Bearer ...\n", [(b"www-authenticate", b"Bearer")])
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers") or []) + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _ok(self, offered: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode("utf-8", "replace"))

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self._ok(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is simply no cookie
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and self._ok(morsel.value)


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *_HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
