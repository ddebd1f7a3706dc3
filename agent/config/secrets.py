"""The one secret vocabulary: which keys name a secret, and how a value echoed by the agent is masked.

Three places decide what is a secret and must agree (a word one of them knows and another
does not is a leak): the configuration masker (``pulsetrace config validate``, problem lines,
errors), the health-detail redaction (probe errors that echo a DSN), and the span scrubber
(attributes, URLs and free text leaving the process). All three take their words from here.

A key names a secret when, case-insensitively,

* it contains one of :data:`SECRET_WORDS` (separators inside compound words are allowed:
  ``api_key``, ``api-key``, ``apikey``), or
* one of its segments (split at anything that is not a letter) is one of
  :data:`SECRET_SEGMENTS` (``x-auth``, ``db.pwd``, ``pass``; but not ``author`` or ``bypass``).

A query parameter is a secret under the same rule, or when its whole name is one of
:data:`SECRET_QUERY_NAMES` (``key=``, ``code=``, ``sig=``: too short to be words in keys).

:func:`mask_text` is the one masking function for every place the agent echoes a
configuration value (problem lines, the effective configuration, errors, logs): URL
credentials with or without a scheme (``postgresql://app:pw@db``, ``:pw@cache:6379/0``),
key/value DSNs (``host=db user=app password=pw dbname=shop``, quoted values too),
secret-named query parameters (``?code=``, ``&sig=``) and ``Bearer``/``Basic`` credentials.

Pure functions; every one runs in time linear in its input and never raises.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

__all__ = ["MASK", "NOT_AN_EXCEPTION_NAME", "SECRET_QUERY_NAMES", "SECRET_SEGMENTS", "SECRET_WORDS", "USERINFO_PATTERN",
           "is_secret_key", "is_secret_query_name", "mask_text", "mask_url", "mask_url_path", "masked_dict",
           "secret_key_regex"]

MASK = "****"

#: Words that make a key secret wherever they appear in it (regex fragments; ``[_.\-]?`` lets
#: a compound word be written with a separator).
SECRET_WORDS: tuple[str, ...] = (
    r"pass(?:word|wd|phrase)", r"secret", r"token", r"api[_.\-]?key", r"access[_.\-]?key", r"private[_.\-]?key",
    r"credential", r"authorization", r"cookie", r"signature", r"session", r"routing[_.\-]?key",
    r"webhook[_.\-]?url",
)
#: Words that make a key secret only as a whole segment.
SECRET_SEGMENTS: tuple[str, ...] = ("pwd", "pw", "pass", "auth", "sig")
#: Query parameter names that are secrets (OAuth ``code``, signed-URL ``sig``, ``key``).
SECRET_QUERY_NAMES: frozenset[str] = frozenset({"key", "code", "sig", "pass", "pw", "pwd", "auth"})


def secret_key_regex(extra_words: tuple[str, ...] = ()) -> str:
    """The regex (no flags, no groups) that finds a secret word in a key; ``extra_words`` are literal."""
    words = "|".join((*SECRET_WORDS, *(re.escape(w) for w in extra_words if w)))
    segments = "|".join(SECRET_SEGMENTS)
    return rf"(?:{words})|(?<![A-Za-z])(?:{segments})(?![A-Za-z])"


#: After a key run in free text: not an exception's class name (``InvalidPasswordError: password
#: authentication failed`` names no secret value; masking it would hide the reason).
NOT_AN_EXCEPTION_NAME = r"(?<!error)(?<!exception)(?<!warning)"

_SECRET_KEY = re.compile(f"(?i){secret_key_regex()}")


def is_secret_key(key: str) -> bool:
    """``True`` when ``key`` (a config key, header, attribute or JSON key) names a secret."""
    return _SECRET_KEY.search(key) is not None


def is_secret_query_name(name: str) -> bool:
    """``True`` when the query parameter ``name`` holds a secret."""
    return name.lower() in SECRET_QUERY_NAMES or is_secret_key(name)


_QUERY_PAIR = re.compile(r"([^=&;]*)(=)([^&;]*)")


def mask_query(query: str) -> str:
    """``a=1&token=x&code=y`` → ``a=1&token=****&code=****``."""
    return _QUERY_PAIR.sub(lambda m: m.group(1) + "=" + MASK if is_secret_query_name(m.group(1)) else m.group(0),
                           query)


#: Path segments after which a URL's path is a credential (Discord ``/api/webhooks/ID/TOKEN``,
#: Slack ``/services/T/B/TOKEN``, Teams, Google Chat and most webhook relays).
_WEBHOOK_SEGMENTS = frozenset({"webhooks", "webhook", "hooks", "services", "webhookb2"})
#: A path segment this long made of letters and digits (and ``-_``), with both, is taken for a token.
_TOKEN_SEGMENT = re.compile(r"^(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}$")


def _mask_path(path: str) -> str:
    segments = path.split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        if i and segments[i - 1].lower() in _WEBHOOK_SEGMENTS and seg:
            return "/".join(out + [seg if seg.lower() in _WEBHOOK_SEGMENTS else MASK]) + ("/" + MASK
                                                                                          if i + 1 < len(segments) else "")
        out.append(MASK if _TOKEN_SEGMENT.match(seg) else seg)
    return "/".join(out)


def mask_url_path(url: str) -> str:
    """A URL whose whole path is a secret: ``https://discord.com/api/webhooks/1/abc`` → ``https://discord.com/****``."""
    try:
        parts = urlsplit(mask_url(url))
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return MASK if url else ""
    return urlunsplit((parts.scheme, parts.netloc, "/" + MASK if parts.path not in ("", "/") else parts.path,
                       MASK if parts.query else "", ""))


#: ``[scheme://]user:password@host``: the user-info of a URL with or without its scheme. The match
#: starts at a token boundary (or right after ``://``); lengths are bounded so a hostile string
#: is scanned a bounded number of times per character (linear time).
#: Shared with the span scrubber (a regex fragment with the named groups ``user`` and ``password``).
USERINFO_PATTERN = (r"(?:(?<=://)|(?<![^\s=\"'(<,;]))"
                    r"(?P<user>[^\s/?#@:=\"'<>]{0,128}):(?P<password>[^\s/?#@\"'<>]{1,256})@(?=[\w\[.\-])")
_USERINFO = re.compile(USERINFO_PATTERN)
#: A key naming a secret (the vocabulary above) or a secret query name, then ``=``/``:`` and its
#: value: quoted (``password='a b'``, libpq style, with ``\'`` escapes) or up to a separator.
_SECRET_PAIR = re.compile(
    rf"(?i)(?P<key>(?:(?:^|(?<=[?&;\s]))(?:{'|'.join(sorted(SECRET_QUERY_NAMES))})="
    rf"|(?<![\w.\-])(?=[\w.\-]*?(?:{secret_key_regex()}))(?>[\w.\-]+){NOT_AN_EXCEPTION_NAME}[\"']?(?>\s*)[:=](?>\s*)))"
    r"(?P<value>'(?:[^'\\]|\\.){0,512}'|\"(?:[^\"\\]|\\.){0,512}\"|[^\s&;,\"'}\]]+)")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)[ \t]+[A-Za-z0-9\-._~+/]+=*")
#: A URL in free text, entered only at the start of its scheme.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s\"'<>]+")
_MASK_GATE = re.compile(r"[@=:]|(?i:bearer|basic|digest)")


def mask_text(text: str) -> str:
    """``text`` (a value or a line that echoes one) with every credential it holds replaced by ``****``.

    ``postgresql://app:pw@db/shop`` → ``postgresql://app:****@db/shop``;
    ``:pw@cache:6379/0`` → ``:****@cache:6379/0``;
    ``host=db user=app password='p w' dbname=shop`` → ``host=db user=app password=**** dbname=shop``;
    ``https://h/cb?state=1&code=x`` → ``https://h/cb?state=1&code=****``.
    A user name is kept unless it is long enough to be a token (``https://ghp_...@github.com``).
    """
    try:
        if _MASK_GATE.search(text) is None:
            return text
        if "://" in text:  # a URL: its credentials, secret query values and token path segments
            text = _URL.sub(lambda m: mask_url(m.group(0)), text)
        if "@" in text:
            text = _USERINFO.sub(_mask_userinfo, text)
        text = _AUTH_SCHEME.sub(lambda m: m.group(1) + " " + MASK, text)
        if "=" in text or ":" in text:
            text = _SECRET_PAIR.sub(_mask_pair, text)
        return text
    except Exception:  # noqa: BLE001 - a masker that fails must fail closed
        return MASK


def _mask_userinfo(m: re.Match[str]) -> str:
    user = m.group("user")
    return f"{MASK if len(user) > 20 else user}:{MASK}@"


def _mask_pair(m: re.Match[str]) -> str:
    value = m.group("value")
    if value == MASK or value.startswith("[REDACTED") or value.lower() in ("bearer", "basic", "digest"):
        return m.group(0)
    return m.group("key") + MASK


def mask_url(url: str) -> str:
    """``postgresql://app:pw@host/db?password=x`` → credentials replaced by ``****``.

    A user name alone is kept when it looks like one (``postgresql://app@db``) and
    masked when it is long enough to be a token (``https://ghp_...@github.com``). A webhook
    path (``/api/webhooks/ID/TOKEN``, ``/services/T/B/TOKEN``) and any token-like path
    segment are masked too: there the path is the credential.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        if len(user) > 20:
            user = MASK
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, _mask_path(parts.path), mask_query(parts.query), parts.fragment))


#: ``host=db user=app ...``: a libpq key/value connection string (every word ``key=``).
_KEY_VALUE_DSN = re.compile(r"\s*[A-Za-z_]\w*\s*=")


def masked_dict(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for display only).

    Masked: every field the schema marks secret, every mapping entry whose key names
    a secret (``password``, ``token``, ``Authorization`` ...) and the credentials of
    any URL, wherever they appear.
    """
    masked = _mask_node(cfg)
    assert isinstance(masked, dict)
    return masked


def _mask_node(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            name = f.metadata.get("key", f.name)
            if f.metadata.get("secret") and f.metadata.get("mask") == "path" and isinstance(value, str):
                out[name] = mask_url_path(value) if "://" in value else _mask_secret(value)
            else:
                out[name] = _mask_secret(value) if f.metadata.get("secret") else _mask_node(value)
        return out
    if isinstance(obj, dict):
        return {k: _mask_secret(v) if is_secret_key(str(k)) else _mask_node(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_node(v) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj


def _mask_secret(value: object) -> object:
    if isinstance(value, str):
        if not value:
            return ""
        if "://" in value:
            return mask_url(value)
        if _KEY_VALUE_DSN.match(value) or ("@" in value and _USERINFO.search(value)):
            # A key/value DSN or a scheme-less URL: show what locates it, mask what opens it.
            return mask_text(value)
        return MASK
    if isinstance(value, dict):
        # Mappings of secrets (headers, an rfid source) keep the entries that only locate data.
        return {k: v if str(k).endswith(("_pattern", "query", "push")) else _mask_secret(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_secret(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return MASK
