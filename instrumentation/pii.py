"""PII and secret scrubbing of finished spans, before any exporter sees them.

:func:`build_scrubber` gives the pipeline its export-side transform: every span
(on the export thread, never on the request path) goes through
:class:`PiiScrubber` and then the annotation step of
:mod:`pulsetrace.instrumentation.annotations`. What is scrubbed, in span names, attribute
values, event names and attributes (``exception.message``,
``exception.stacktrace``), link attributes and the status description:

- **keys that name secrets** (``password``, ``passwd``, ``secret``, ``token``,
  ``authorization``, ``cookie``, ``set-cookie``, ``api_key``, ``apikey``,
  ``x-api-key``, ``private_key``, ``credential``, ``session`` and
  ``tracing.pii.secret_keys``; matched as fragments of the lower-cased key with
  ``-`` and ``.`` read as ``_``): string values become ``[REDACTED]``; numbers
  and booleans are kept (``llm.usage.total_tokens`` is a count, not a secret);
- **keys that name personal data** (``email``, ``phone``, ``mobile``,
  ``msisdn``, ``card_number``, ``cvv``): any value becomes ``[REDACTED]``;
- **keys in** ``tracing.pii.hash_keys``: exported only as ``h:`` + the hex
  HMAC-SHA256 of the value under ``tracing.pii.hash_secret`` (the same user can be
  followed across traces; the id never leaves the process). Without a secret a
  random per-process key is used, so hashes do not match across processes;
- ``db.statement`` / ``db.query.text``: literals replaced by ``?``
  (:func:`pulsetrace.instrumentation.sql.sanitize_sql`);
- **in any string** (:func:`scrub_text`): credentials in URLs
  (``scheme://user:pass@`` → ``scheme://[REDACTED]@``), ``Bearer``/``Basic``
  credentials, ``key=value`` / ``key: value`` pairs whose key names a secret
  (query strings included, e.g. ``?token=..``, ``X-Amz-Signature=..``), e-mail
  addresses (``[EMAIL]``), card numbers (13–19 digits, spaces or dashes allowed,
  Luhn-valid: ``[CARD]``) and phone numbers (``[PHONE]``). Percent-encoded text is
  decoded first so ``bob%40example.com`` is caught too.

Phone heuristics, chosen so ordinary numbers (ids, timestamps, amounts, dates,
IP addresses) survive: ``+`` followed by 7–15 digits (E.164, separators allowed);
North-American ``(NNN) NNN-NNNN`` / ``NNN-NNN-NNNN`` / ``NNN.NNN.NNNN`` /
``NNN NNN NNNN``; trunk-prefixed national numbers in 2–3 groups starting with
``0`` (``020 7946 0958``, ``07700 900123``, ``098765 43210``); Indian mobiles
``NNNNN NNNNN`` starting with 6–9. A bare run of digits is never taken for a
phone number (under a phone-named key it is redacted anyway). Numbers that are not
strings are never pattern-matched.

Cards: a 13–19 digit number that passes the Luhn check is redacted even if it
was an id (about one such id in ten): privacy over fidelity.

Bounded cost: every pattern runs in time linear in the string, and a string longer
than 16 KB (:data:`MAX_SCRUB_CHARS`) is cut to it, marked ``...[TRUNCATED]``, before
the rules run, so one hostile value cannot hold the GIL on the export thread.

The scrubber never raises; the pipeline drops (and counts) a span it cannot
scrub rather than export it unscrubbed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

from pulsetrace.config.schema import Config
from pulsetrace.config.secrets import NOT_AN_EXCEPTION_NAME, SECRET_QUERY_NAMES, secret_key_regex
from pulsetrace.instrumentation.annotations import build_annotator
from pulsetrace.instrumentation.enrich import enrich_attributes
from pulsetrace.instrumentation.spans import copy_event, copy_link, copy_span
from pulsetrace.instrumentation.sql import sanitize_sql
from pulsetrace.selfmetrics import SelfMetrics

__all__ = ["MAX_SCRUB_CHARS", "REDACTED", "TRUNCATED", "PiiScrubber", "build_scrubber", "luhn_valid",
           "scrub_text"]

_log = logging.getLogger("pulsetrace.pii")

REDACTED = "[REDACTED]"
EMAIL = "[EMAIL]"
CARD = "[CARD]"
PHONE = "[PHONE]"

PII_KEY_FRAGMENTS: tuple[str, ...] = ("email", "phone", "mobile", "msisdn", "card_number", "cardnumber", "cvv")
SQL_KEYS = frozenset({"db.statement", "db.query.text"})
#: Names the instrumentation builds as ``<name>@<host>`` for X-Ray's service map: not personal data.
SERVICE_NAME_KEYS = frozenset({"peer.service", "aws.local.service", "aws.remote.service"})

# --- patterns -----------------------------------------------------------------------------

#: Longest string the text rules look at. A longer one is cut to this (plus a marker) so the
#: scrub of one value is bounded whatever a client sends; see :func:`_TextScrubber.__call__`.
MAX_SCRUB_CHARS = 16 * 1024
#: Appended to a string that was cut.
TRUNCATED = "...[TRUNCATED]"
#: Text past the cut that is scrubbed anyway, so a secret straddling the cut is still seen whole
#: (longer than an e-mail's 64 + 1 + 255 characters).
_SCRUB_OVERLAP = 512

# Every pattern below runs in time linear in the text: no quantified group whose matches can
# overlap (they are atomic or separated by a character outside the repeated class), and runs
# are entered only at their first character (a look-behind), so no position is rescanned for
# each of the positions before it. A 64 KB hostile string costs milliseconds, not seconds.

#: A string without any of these cannot hold anything we scrub: returned untouched.
_TRIGGER = re.compile(r"[@=:%0-9]|(?i:bearer|basic|digest)\s")
#: ``scheme://userinfo@``: the match starts at ``://`` (after a scheme character), so only the
#: user-info run after each ``://`` is scanned; the scheme itself is kept as it is.
_URL_CREDENTIALS = re.compile(r"(?<=[A-Za-z0-9+.\-])://(?>[^\s/?#@]+)@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)(?>\s+)(?>[A-Za-z0-9\-._~+/]+)=*")
#: Query parameters that are secrets by name alone (``?code=``, ``&sig=``): the shared vocabulary.
_QUERY_SHORT_NAMES = "|".join(sorted(SECRET_QUERY_NAMES))
#: E-mails are found from their ``@`` (see :func:`_redact_emails`): at most 64 characters of
#: local part before it (matched on the reversed text), at most 255 of domain after it.
_LOCAL_PART_MAX = 64
_DOMAIN_MAX = 255
_LOCAL_PART_REVERSED = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,64}")
_LABEL = r"(?>[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)"
#: The last label (the TLD) starts with a letter, so ``shop@127.0.0.1`` (a service at an address) is no e-mail.
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.(?=[A-Za-z]){_LABEL}")
#: Maximal runs of digits with single space/dash separators, long enough to hold a card.
_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,}(?!\d)")
_E164 = re.compile(r"(?<![\w+])\+\d(?:[ .\-()]{0,2}\d){6,14}(?!\d)")
_NANP = re.compile(r"(?<![\w.\-+])(?:\(\d{3}\)\s?|\d{3}[\-. ])\d{3}[\-. ]\d{4}(?![\w\-]|\.\d)")
_TRUNK = re.compile(r"(?<![\w.\-+:/])0\d{1,5}(?:[ \-]\d{2,6}){1,2}(?![\w\-]|[.:/]\d)")
_IN_MOBILE = re.compile(r"(?<![\w.\-+:/])[6-9]\d{4} \d{5}(?![\w\-]|[.:/]\d)")
_SEPARATORS = re.compile(r"[ \-]")
#: One pass for every phone shape; leftmost match wins, then the order below.
_PHONES = re.compile("|".join(f"(?P<{name}>{rx.pattern})" for name, rx in
                              (("e164", _E164), ("nanp", _NANP), ("trunk", _TRUNK), ("mobile", _IN_MOBILE))))
#: Fewer than seven digits (with short separators) cannot be a card or a phone number.
_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,4}\d){6}")
_AUTH_GATE = re.compile(r"(?i)bearer|basic|digest")


def _secret_pair_pattern(extra: Sequence[str]) -> re.Pattern[str]:
    r"""``key=value`` / ``key: value`` where the key names a secret; group 1 is kept, group 2 redacted.

    The key is a whole run of ``[\w.-]`` containing a secret word: the run is entered only at
    its start (look-behind), the word found by a lazy look-ahead that cannot leave the run,
    and the run then taken atomically, so each run is scanned a bounded number of times.
    """
    words = secret_key_regex(tuple(extra))
    return re.compile(
        rf"(?i)((?:^|(?<=[?&;]))(?:{_QUERY_SHORT_NAMES})="
        rf"|(?<![\w.\-])(?=[\w.\-]*?(?:{words}))(?>[\w.\-]+){NOT_AN_EXCEPTION_NAME}[\"']?(?>\s*)[:=](?>\s*)[\"']?)"
        r"([^\s&;,\"'}\]]+)")


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


def luhn_valid(digits: str) -> bool:
    """The Luhn check used by card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _cards(match: re.Match[str]) -> str:
    text = match.group(0)
    groups = _SEPARATORS.split(text)
    if len(groups) == 1 and len(text) > 19:  # one long id: no card can be cut out of it
        return text
    digits = "".join(groups)
    if len(digits) <= 19:
        return CARD if len(digits) >= 13 and luhn_valid(digits) else text
    return _cards_in_run(text, groups, digits)


#: A digit's value when the Luhn check doubles it.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _cards_in_run(text: str, groups: list[str], digits: str) -> str:
    """A longer run (a card next to other numbers): redact every window of whole groups that is a card.

    Windows are 13–19 digits of consecutive groups; their union is cut, so a spurious
    window can only widen the cut. Each window's Luhn sum comes from two prefix sums
    (one per doubling parity), so a run costs O(groups), not O(groups × 19²).
    """
    values = [ord(ch) - 48 for ch in digits]
    # odd[q]: sum of the Luhn terms of digits[:q] when the odd positions are doubled; even[q] likewise.
    odd = [0, *itertools.accumulate(_DOUBLED[d] if p & 1 else d for p, d in enumerate(values))]
    even = [0, *itertools.accumulate(d if p & 1 else _DOUBLED[d] for p, d in enumerate(values))]
    offsets = [0, *itertools.accumulate(map(len, groups))]  # digit offset of each group, then the total
    starts = [offsets[k] + k for k in range(len(groups))]  # text offset of each group (one separator each)
    count = len(groups)
    cuts: list[tuple[int, int]] = []  # merged as they come: window starts only grow
    first = 0  # the first group j for which groups[i..j] holds 13 digits; only moves forward
    for i in range(count):
        a = offsets[i]
        first = max(first, i)
        while first < count and offsets[first + 1] - a < 13:
            first += 1
        limit = a + 19
        best = -1
        for j in range(first, count):
            b = offsets[j + 1]
            if b > limit:
                break
            # The rightmost digit (b - 1) is never doubled, so the doubled ones have the other parity.
            if ((odd[b] - odd[a]) if b & 1 else (even[b] - even[a])) % 10 == 0:
                best = j
        if best < 0:
            continue
        start, end = starts[i], starts[best] + len(groups[best])
        if cuts and start <= cuts[-1][1] + 1:
            if end > cuts[-1][1]:
                cuts[-1] = (cuts[-1][0], end)
        else:
            cuts.append((start, end))
    if not cuts:
        return text
    out: list[str] = []
    last = 0
    for start, end in cuts:
        out.append(text[last:start])
        out.append(CARD)
        last = end
    out.append(text[last:])
    return "".join(out)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.lastgroup == "trunk" and not 10 <= sum(c.isdigit() for c in text) <= 12:
        return text
    return PHONE


class _TextScrubber:
    """All string rules, compiled once for a configuration.

    Cheap gates decide which rule families can apply at all (an ``@`` for e-mails
    and URL credentials, ``=``/``:`` for secret pairs, seven digits for cards and
    phones), so an ordinary string costs one or two C-level scans.
    """

    def __init__(self, extra_secret_words: Sequence[str] = ()) -> None:
        self._pairs = _secret_pair_pattern(extra_secret_words)

    def __call__(self, text: str) -> str:
        """``text`` scrubbed; a text longer than :data:`MAX_SCRUB_CHARS` comes back cut to it + ``TRUNCATED``.

        The cut is made before scrubbing (with :data:`_SCRUB_OVERLAP` characters more,
        so a secret across the cut is still recognised), then again on the result.
        """
        if len(text) > MAX_SCRUB_CHARS:
            return self._scrub(text[:MAX_SCRUB_CHARS + _SCRUB_OVERLAP])[:MAX_SCRUB_CHARS] + TRUNCATED
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        if _TRIGGER.search(text) is None:
            return text
        if "%" in text:
            try:
                decoded = unquote(text, errors="strict")
            except UnicodeDecodeError:
                decoded = text
            text = decoded
        at = "@" in text
        if at and "://" in text:
            text = _URL_CREDENTIALS.sub("://" + REDACTED + "@", text)
        if _AUTH_GATE.search(text) is not None:
            text = _AUTH_SCHEME.sub(r"\1 " + REDACTED, text)
        if "=" in text or ":" in text:
            text = self._pairs.sub(r"\1" + REDACTED, text)
        if at:
            text = _redact_emails(text)
        if _SEVEN_DIGITS.search(text) is not None:
            text = _DIGIT_RUN.sub(_cards, text)
            text = _PHONES.sub(_phone, text)
        return text


_default_text_scrubber = _TextScrubber()


def scrub_text(text: str) -> str:
    """``text`` with URL credentials, secrets, e-mails, card and phone numbers redacted (default rules)."""
    return _default_text_scrubber(text)


#: An attributes step run after scrubbing: (trace id, attributes) → new attributes, or ``None`` if unchanged.
AttributesStep = Callable[[int | None, Mapping[str, Any]], dict[str, Any] | None]

# Key actions.
_PLAIN, _SECRET, _PII, _HASH, _SQL, _KEEP = range(6)


class PiiScrubber:
    """``ReadableSpan`` → scrubbed ``ReadableSpan`` (the same object when nothing needed scrubbing)."""

    def __init__(self, *, hash_keys: Sequence[str] = (), hash_secret: str = "", secret_keys: Sequence[str] = (),
                 metrics: SelfMetrics | None = None) -> None:
        self.metrics = metrics
        self._hash_keys = frozenset(hash_keys)
        if hash_keys and not hash_secret:
            _log.warning("tracing.pii.hash_keys is set without tracing.pii.hash_secret: "
                         "hashes use a per-process key and will not match across processes")
        self._hash_key = hash_secret.encode("utf-8") if hash_secret else secrets.token_bytes(32)
        self._secret_key = re.compile(f"(?i){secret_key_regex(tuple(k for k in secret_keys if k))}")
        self._text = _TextScrubber(tuple(k for k in secret_keys if k))
        self._actions: dict[str, int] = {}
        #: Short strings already found clean (bounded; never holds a string that needed scrubbing).
        self._clean: set[str] = set()

    # -- keys -------------------------------------------------------------------------------

    def _action(self, key: str) -> int:
        action = self._actions.get(key)
        if action is not None:
            return action
        norm = _norm(key)
        if key in self._hash_keys:
            action = _HASH
        elif key in SQL_KEYS:
            action = _SQL
        elif key in SERVICE_NAME_KEYS:
            action = _KEEP
        elif self._secret_key.search(key):
            action = _SECRET
        elif any(f in norm for f in PII_KEY_FRAGMENTS):
            action = _PII
        else:
            action = _PLAIN
        if len(self._actions) < 8192:
            self._actions[key] = action
        return action

    def hash_value(self, value: object) -> str:
        """``h:`` + hex HMAC-SHA256 of ``str(value)`` under the configured secret."""
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        return "h:" + hmac.new(self._hash_key, raw, hashlib.sha256).hexdigest()

    # -- values -----------------------------------------------------------------------------

    def _value(self, action: int, value: Any) -> Any:
        if action == _PLAIN:
            if isinstance(value, str):
                return self._text(value)
            if isinstance(value, (list, tuple)):
                return tuple(self._text(v) if isinstance(v, str) else v for v in value)
            return value
        if action == _HASH:
            if isinstance(value, (list, tuple)):
                return tuple(self.hash_value(v) for v in value)
            return self.hash_value(value)
        if action == _SQL:
            if isinstance(value, str):
                # Cut first: the sanitizer treats a literal left open by the cut as running to the end.
                return self._text(sanitize_sql(value[:MAX_SCRUB_CHARS + _SCRUB_OVERLAP]))
            return value
        if action == _KEEP:
            return value
        if action == _SECRET:
            if isinstance(value, (str, bytes)):
                return REDACTED if value else value
            if isinstance(value, (list, tuple)):
                return tuple(REDACTED if isinstance(v, (str, bytes)) and v else v for v in value)
            return value
        return REDACTED  # _PII: whatever the type

    def attributes(self, attrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Scrubbed copy of ``attrs``, or ``None`` when nothing changed."""
        if not attrs:
            return None
        # A span's attributes come as a read-only view over the SDK's container, slow to walk
        # key by key: copy once into a plain dict.
        src = attrs if type(attrs) is dict else dict(attrs)
        actions = self._actions
        clean = self._clean
        out: dict[str, Any] | None = None
        for key, value in src.items():
            action = actions.get(key)
            if action is None:
                action = self._action(key)
            if action == _PLAIN:
                if type(value) is not str:
                    if not isinstance(value, (list, tuple)):
                        continue
                    new = self._value(action, value)
                elif value in clean:
                    continue
                else:
                    new = self._text(value)
                    if new == value:
                        self._remember_clean(value)
                        continue
            else:
                new = self._value(action, value)
            if new is not value and new != value:
                if out is None:
                    out = src if src is not attrs else dict(src)
                out[key] = new
        return out

    def _remember_clean(self, value: str) -> None:
        """Strings that needed no scrubbing (span names, enum-like values) are not scanned again."""
        if len(value) <= 128:
            if len(self._clean) >= 8192:
                self._clean.clear()
            self._clean.add(value)

    def text(self, text: str) -> str:
        return self._text(text)

    # -- spans ------------------------------------------------------------------------------

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        return self.scrub(span)

    def scrub(self, span: ReadableSpan, post: AttributesStep | None = None,
              pre: Callable[[Mapping[str, Any]], dict[str, Any] | None] | None = None) -> ReadableSpan:
        """The scrubbed span (one copy of the span in all, none when nothing changes).

        ``pre`` may add to the attributes before they are scrubbed (the enricher),
        ``post`` may rewrite them after (the annotator); each returns ``None`` for
        "unchanged".
        """
        changed = False
        name = span.name
        if name not in self._clean:
            name = self._text(name)
            if name != span.name:
                changed = True
            else:
                self._remember_clean(name)
        raw = span.attributes
        base: dict[str, Any] = dict(raw) if raw else {}
        enriched = False
        if pre is not None and base:
            added = pre(base)
            if added is not None:
                base = added
                enriched = True
        attrs = self.attributes(base)
        if attrs is None and enriched:
            attrs = base
        if attrs is not None:
            changed = True
        if post is not None:
            ctx = span.context
            posted = post(ctx.trace_id if ctx is not None else None, attrs if attrs is not None else base)
            if posted is not None:
                attrs = posted
                changed = True
        events: Sequence[Event] = span.events
        new_events: list[Event] | None = None
        for i, event in enumerate(events):
            ev_name = self._text(event.name)
            ev_attrs = self.attributes(event.attributes)
            if ev_attrs is not None or ev_name != event.name:
                if new_events is None:
                    new_events = list(events)
                new_events[i] = copy_event(event, name=ev_name, attributes=ev_attrs)
        if new_events is not None:
            events = new_events
            changed = True
        links: Sequence[Link] = span.links
        new_links: list[Link] | None = None
        for i, link in enumerate(links):
            link_attrs = self.attributes(link.attributes)
            if link_attrs is not None:
                if new_links is None:
                    new_links = list(links)
                new_links[i] = copy_link(link, attributes=link_attrs)
        if new_links is not None:
            links = new_links
            changed = True
        status = span.status
        if status.description:
            description = self._text(status.description)
            if description != status.description:
                status = Status(status.status_code, description)
                changed = True
        if not changed:
            return span
        return copy_span(span, name=name, attributes=attrs, events=events, links=links, status=status)


def _norm(key: str) -> str:
    return key.lower().replace("-", "_").replace(".", "_")


def build_scrubber(cfg: Config, metrics: SelfMetrics) -> Callable[[ReadableSpan], ReadableSpan] | None:
    """The export-side transform every exporter sees, in one copy of the span.

    Database-span enrichment (:func:`pulsetrace.instrumentation.enrich.enrich_attributes`:
    ``peer.service``, current semantic-convention keys), then PII scrubbing, then
    X-Ray annotation marking. A span already enriched is left as it is, so running
    :func:`pulsetrace.instrumentation.enrich.enrich_span` before this changes nothing but the
    cost of a second copy.
    """
    pii = cfg.tracing.pii
    scrubber = PiiScrubber(hash_keys=pii.hash_keys, hash_secret=pii.hash_secret, secret_keys=pii.secret_keys,
                           metrics=metrics)
    annotate = build_annotator(cfg, metrics).annotate_attributes

    def transform(span: ReadableSpan) -> ReadableSpan:
        return scrubber.scrub(span, annotate, enrich_attributes)

    return transform
