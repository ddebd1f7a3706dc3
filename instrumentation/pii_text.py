"""The PII scrubber's text rules: what is redacted in any string leaving the process.

:func:`scrub_text` (and :class:`TextScrubber`, compiled once per configuration) replace, in
this order:

- percent-escapes are decoded first, run by run (``alice%40example.com`` is an e-mail even
  when another parameter holds an invalid escape such as ``x=%ff``: a run that is not UTF-8
  is left as it was, the others are decoded);
- URL credentials with or without a scheme (``scheme://user:pass@``, ``:pass@cache:6379``)
  → ``[REDACTED]@``;
- ``Bearer``/``Basic``/``Digest`` credentials, JSON Web Tokens anywhere (``eyJ...``), AWS
  access key ids (``AKIA...``, ``ASIA...``) and AWS secret access keys (40 characters of
  mixed-case base64 with a digit) → ``[REDACTED]``;
- ``key=value`` / ``key: value`` / ``"key": "value"`` pairs whose key names a secret (the
  shared vocabulary of :mod:`pulsetrace.config.secrets`, query strings included) → the value
  ``[REDACTED]``, quoted values whole;
- e-mail addresses, Unicode local parts and domains included → ``[EMAIL]``;
- card numbers (:mod:`pulsetrace.instrumentation.pii_numbers`; dots, double spaces, ``+``
  and full-width digits included) → ``[CARD]``, phone numbers → ``[PHONE]``.

A string longer than :data:`MAX_SCRUB_CHARS` is scrubbed first (with :data:`SCRUB_OVERLAP`
more characters, so a value across the cut is seen whole) and cut after; a token left
broken at the cut that could be part of a value (it holds a digit, ``@``, ``=`` or ``%``) is
dropped with it, so no partial value survives a cut.

Every rule runs in time linear in the text (bounded repetition, atomic groups, runs entered
only at their first character); nothing here raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

from pulsetrace.config.secrets import (
    NOT_AN_EXCEPTION_NAME,
    SECRET_QUERY_NAMES,
    USERINFO_PATTERN,
    secret_key_regex,
)
from pulsetrace.instrumentation.pii_numbers import SEVEN_DIGITS, redact_cards, redact_phones

__all__ = ["EMAIL", "MAX_SCRUB_CHARS", "REDACTED", "SCRUB_OVERLAP", "TRUNCATED", "TextScrubber", "scrub_text"]

REDACTED = "[REDACTED]"
EMAIL = "[EMAIL]"

#: Longest string the text rules look at. A longer one is cut to this (plus a marker) so the
#: scrub of one value is bounded whatever a client sends.
MAX_SCRUB_CHARS = 16 * 1024
#: Appended to a string that was cut.
TRUNCATED = "...[TRUNCATED]"
#: Text past the cut that is scrubbed anyway, so a secret straddling the cut is still seen whole
#: (longer than an e-mail's 64 + 1 + 255 characters).
SCRUB_OVERLAP = 512
#: How far back from a cut a broken token is looked for.
_TOKEN_BACKOFF = 320

#: A string without any of these cannot hold anything we scrub: returned untouched.
_TRIGGER = re.compile(r"[@=:%]|\d|(?i:bearer|basic|digest)\s|eyJ|A[A-Z]{3}[A-Z0-9]{16}")
#: A run of percent-escapes, decoded as one UTF-8 sequence.
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
#: ``scheme://userinfo@``: the match starts at ``://`` (after a scheme character), so only the
#: user-info run after each ``://`` is scanned; the scheme itself is kept as it is.
_URL_CREDENTIALS = re.compile(r"(?<=[A-Za-z0-9+.\-])://(?>[^\s/?#@]+)@")
#: ``user:pass@host`` without a scheme (``:pw@cache:6379/0``): the configuration masker's pattern.
_BARE_CREDENTIALS = re.compile(USERINFO_PATTERN)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)(?>\s+)(?>[A-Za-z0-9\-._~+/]+)=*")
_AUTH_GATE = re.compile(r"(?i)bearer|basic|digest")
#: Three base64url parts, the first two JSON objects (``eyJ`` is ``{"``).
_JWT = re.compile(r"(?<![\w\-])eyJ(?>[A-Za-z0-9_\-]+)\.(?>[A-Za-z0-9_\-]+)\.?(?>[A-Za-z0-9_\-]*)")
#: AWS access key ids: a known four-letter prefix and 16 upper-case letters or digits.
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)"
                         r"[A-Z0-9]{16}(?![A-Za-z0-9])")
#: AWS secret access keys: exactly 40 base64 characters with upper case, lower case and a digit
#: (a hex digest has no upper case; privacy over fidelity for the rare 40-character token).
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
                         r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
#: E-mails are found from their ``@`` (see :func:`_redact_emails`): at most 64 characters of
#: local part before it (matched on the reversed text), at most 255 of domain after it.
_LOCAL_PART_REVERSED = re.compile(r"[\w!#$%&'*+/=?^`{|}~.\-]{1,64}")
_DOMAIN_MAX = 255
_LABEL = r"(?>[^\W_](?:[\w\-]*[^\W_])?)"
#: The last label (the TLD) starts with a letter, so ``shop@127.0.0.1`` (a service at an address) is no e-mail.
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.(?=[^\W\d_]){_LABEL}")
#: Characters that may belong to a value broken by a cut.
_VALUE_CHAR = re.compile(r"[^\s,;&|<>()\[\]{}\"']")
_VALUE_HINT = re.compile(r"[\d@=%]")


def _secret_pair_pattern(extra: Sequence[str]) -> re.Pattern[str]:
    r"""``key=value`` / ``key: value`` / ``"key": "value"`` where the key names a secret.

    Groups: ``key`` (kept, with its opening quote of the value if any) and ``value``. The
    key is a whole run of ``[\w.-]`` containing a secret word: the run is entered only at
    its start (look-behind), the word found by a lazy look-ahead that cannot leave the run,
    and the run then taken atomically, so each run is scanned a bounded number of times.
    """
    words = secret_key_regex(tuple(extra))
    return re.compile(
        rf"(?i)(?P<key>(?:^|(?<=[?&;\s]))(?:{'|'.join(sorted(SECRET_QUERY_NAMES))})="
        rf"|(?<![\w.\-])(?=[\w.\-]*?(?:{words}))(?>[\w.\-]+){NOT_AN_EXCEPTION_NAME}[\"']?(?>\s*)[:=](?>\s*))"
        r"(?P<value>\"(?:[^\"\\\n]|\\.){0,1024}\"|'(?:[^'\\\n]|\\.){0,1024}'|[^\s&;,\"'}\]]+)")


def _pair(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.startswith(('"', "'")) and len(value) > 1 and value[-1] == value[0]:
        return f"{match.group('key')}{value[0]}{REDACTED}{value[0]}"
    return match.group("key") + REDACTED


def _decode_escapes(text: str) -> str:
    """Percent-escapes decoded run by run; a run that is not UTF-8 stays as written."""

    def run(m: re.Match[str]) -> str:
        try:
            return unquote(m.group(0), errors="strict")
        except UnicodeDecodeError:
            return m.group(0)

    return _ESCAPES.sub(run, text)


def _redact_emails(text: str) -> str:
    """``text`` with every e-mail address replaced by ``[EMAIL]``, in time linear in ``len(text)``.

    Anchored on each ``@``: the domain is matched forwards (at most 255 characters,
    and never across another ``@``), the local part backwards on the reversed text
    (at most 64 characters, never into the previous replacement). A longer run of
    local-part characters keeps its beginning: only its last 64 characters go.
    """
    n = len(text)
    out: list[str] = []
    done = 0  # text[:done] is already in out
    reversed_text = ""
    at = text.find("@")
    while at != -1:
        domain = _DOMAIN.match(text, at + 1, min(n, at + 1 + _DOMAIN_MAX)) if at > done else None
        if domain is not None:
            if not reversed_text:
                reversed_text = text[::-1]
            local = _LOCAL_PART_REVERSED.match(reversed_text, n - at, n - done)
            if local is not None:
                out.append(text[done:at - (local.end() - local.start())])
                out.append(EMAIL)
                done = domain.end()
        at = text.find("@", max(at + 1, done))
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    """``text[:limit]``, less a token broken by the cut that could be part of a value."""
    if len(text) <= limit:
        return text
    if not (_VALUE_CHAR.match(text, limit - 1) and _VALUE_CHAR.match(text, limit)):
        return text[:limit]
    start = limit
    floor = max(0, limit - _TOKEN_BACKOFF)
    while start > floor and _VALUE_CHAR.match(text, start - 1):
        start -= 1
    token_end = limit
    while token_end < len(text) and token_end < limit + _TOKEN_BACKOFF and _VALUE_CHAR.match(text, token_end):
        token_end += 1
    if _VALUE_HINT.search(text, start, token_end) is None:
        return text[:limit]
    return text[:start]


class TextScrubber:
    """All string rules, compiled once for a configuration.

    Cheap gates decide which rule families can apply at all (an ``@`` for e-mails
    and URL credentials, ``=``/``:`` for secret pairs, seven digits for cards and
    phones), so an ordinary string costs one or two C-level scans.
    """

    def __init__(self, extra_secret_words: Sequence[str] = ()) -> None:
        self._pairs = _secret_pair_pattern(extra_secret_words)

    def __call__(self, text: str) -> str:
        """``text`` scrubbed; a text longer than :data:`MAX_SCRUB_CHARS` comes back cut to it + ``TRUNCATED``."""
        limit = MAX_SCRUB_CHARS
        if len(text) > limit:
            return _cut(self._scrub(text[:limit + SCRUB_OVERLAP]), limit) + TRUNCATED
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        if _TRIGGER.search(text) is None:
            return text
        if "%" in text:
            text = _decode_escapes(text)
        at = "@" in text
        if at:
            if "://" in text:
                text = _URL_CREDENTIALS.sub("://" + REDACTED + "@", text)
            text = _BARE_CREDENTIALS.sub(REDACTED + "@", text)
        if _AUTH_GATE.search(text) is not None:
            text = _AUTH_SCHEME.sub(r"\1 " + REDACTED, text)
        if "eyJ" in text:
            text = _JWT.sub(REDACTED, text)
        if len(text) >= 20:  # shorter text cannot hold an AWS key id (20) or secret key (40)
            text = _AWS_KEY_ID.sub(REDACTED, text)
            if len(text) >= 40:
                text = _AWS_SECRET.sub(REDACTED, text)
        if "=" in text or ":" in text:
            text = self._pairs.sub(_pair, text)
        if at:
            text = _redact_emails(text)
        if SEVEN_DIGITS.search(text) is not None:
            text = redact_phones(redact_cards(text))
        return text


_default_text_scrubber = TextScrubber()


def scrub_text(text: str) -> str:
    """``text`` with URL credentials, secrets, e-mails, card and phone numbers redacted (default rules)."""
    return _default_text_scrubber(text)
