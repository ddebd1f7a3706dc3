"""AWS X-Ray's limits on segment documents, and the functions that make a value fit them.

X-Ray rejects a document it cannot take whole; pulsetrace never lets that happen
for a reason it can see coming: names are cleaned to X-Ray's allowed characters
and cut at 200 characters, annotation keys are cleaned to ``[A-Za-z0-9_]``,
annotation values cut at 1,000 characters, http fields at 250, and a document is
kept under :data:`MAX_DOCUMENT_BYTES` (see :mod:`pulsetrace.xray.segments`). A value is
truncated, never refused. Pure functions, no I/O, safe from any thread.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

#: X-Ray's limit is 64 KB per segment document. 64,000 bytes stays under it whichever
#: way "KB" is read, and leaves room for the 30-byte UDP header inside one IPv4
#: datagram (at most 65,507 bytes of payload).
MAX_DOCUMENT_BYTES = 64_000
#: Segment and subsegment names.
MAX_NAME_CHARS = 200
#: Annotation keys (the published schema's ``^[a-zA-Z0-9_]{1,500}$``).
MAX_ANNOTATION_KEY_CHARS = 500
#: Annotation string values.
MAX_ANNOTATION_VALUE_CHARS = 1000
#: Annotations per document (X-Ray indexes at most 50 per trace).
MAX_ANNOTATIONS = 50
#: ``http.request.*`` strings and ``user`` (the schema's ``maxLength: 250``).
MAX_HTTP_FIELD_CHARS = 250
#: Our own bounds, so one span cannot fill a document on its own.
MAX_QUERY_CHARS = 8192
MAX_MESSAGE_CHARS = 8192
MAX_STACK_FRAMES = 50
MAX_EXCEPTIONS = 10
#: What a name with no allowed character at all becomes.
DEFAULT_NAME = "span"

_ASCII_NAME = re.compile(r"[A-Za-z0-9 _.:/%&#=+\-@]{1,200}")
_NAME_PUNCT = frozenset(" _.:/%&#=+-@")


def _name_char_ok(ch: str) -> bool:
    if ch in _NAME_PUNCT or ch.isalnum():
        return True
    # Unicode letters and numbers are covered by isalnum(); X-Ray also allows separators (Zs, Zl, Zp).
    return unicodedata.category(ch).startswith("Z")


@functools.lru_cache(maxsize=4096)
def segment_name(name: str) -> str:
    """``name`` with only X-Ray's allowed characters (letters, numbers, spaces, ``_.:/%&#=+-@``), ≤ 200.

    The backslash X-Ray's prose also allows is dropped: the published schema's pattern refuses it.
    """
    if _ASCII_NAME.fullmatch(name):
        return name
    cleaned = "".join(ch for ch in name if _name_char_ok(ch)).strip()
    return cleaned[:MAX_NAME_CHARS] or DEFAULT_NAME


_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_]")
_key_cache: dict[str, str] = {}


def annotation_key(attr_key: str) -> str:
    """The X-Ray annotation key for an attribute key: every character outside ``[A-Za-z0-9_]`` → ``_``.

    ``payment.method`` → ``payment_method``; cut at 500 characters; never empty. The
    business-spans API and the segment translation both use this, so they agree.
    """
    cached = _key_cache.get(attr_key)
    if cached is not None:
        return cached
    key = _INVALID_KEY_CHARS.sub("_", attr_key)[:MAX_ANNOTATION_KEY_CHARS] or "_"
    if len(_key_cache) < 4096:
        _key_cache[attr_key] = key
    return key


def annotation_value(value: object) -> str | int | float | bool | None:
    """``value`` as X-Ray accepts it in an annotation, or ``None`` when it cannot be one.

    Strings are cut to 1,000 characters; non-finite floats, lists, bytes, ``None``
    and anything else are not annotatable.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= MAX_ANNOTATION_VALUE_CHARS else value[:MAX_ANNOTATION_VALUE_CHARS]
    return None


def cut(value: object, limit: int) -> str:
    """``str(value)`` cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit]


def json_safe(value: object) -> object:
    """``value`` with non-finite floats turned into strings (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
