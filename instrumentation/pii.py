"""PII and secret scrubbing of finished spans, before any exporter sees them.

:func:`build_scrubber` gives the pipeline its export-side transform: every span
(on the export thread, never on the request path) goes through
:class:`PiiScrubber` and then the annotation step of
:mod:`pulsetrace.instrumentation.annotations`. What is scrubbed, in span names, attribute
values, event names and attributes (``exception.message``,
``exception.stacktrace``), link attributes and the status description:

- **keys that name secrets** (the shared vocabulary of :mod:`pulsetrace.config.secrets`:
  ``password``, ``pass``, ``secret``, ``token``, ``authorization``, ``cookie``, ``api_key``,
  ``x-access-key``, ``x-auth``, ``x-signature``, ... and ``tracing.pii.secret_keys``):
  string values become ``[REDACTED]``; numbers and booleans are kept
  (``llm.usage.total_tokens`` is a count, not a secret);
- **keys that name personal data** (``email``, ``phone``, ``mobile``,
  ``msisdn``, ``card_number``, ``cvv``): any value becomes ``[REDACTED]``;
- **keys in** ``tracing.pii.hash_keys``: exported only as ``h:`` + the hex
  HMAC-SHA256 of the value under ``tracing.pii.hash_secret`` (the same user can be
  followed across traces; the id never leaves the process). Without a secret a
  random per-process key is used, so hashes do not match across processes;
- ``db.statement`` / ``db.query.text``: literals replaced by ``?``
  (:func:`pulsetrace.instrumentation.sql.sanitize_sql`);
- **in any string**: the text rules of :mod:`pulsetrace.instrumentation.pii_text`
  (credentials, tokens, AWS keys, secret pairs, e-mails, cards, phones; percent- and
  form-encoded text too), bounded to 16 KB per value, scrubbed before the cut.

The scrubber never raises; the pipeline drops (and counts) a span it cannot
scrub rather than export it unscrubbed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

from pulsetrace.config.schema import Config
from pulsetrace.config.secrets import secret_key_regex
from pulsetrace.instrumentation.annotations import build_annotator
from pulsetrace.instrumentation.enrich import enrich_attributes
from pulsetrace.instrumentation.pii_numbers import CARD, PHONE, luhn_valid
from pulsetrace.instrumentation.pii_text import (
    EMAIL,
    MAX_SCRUB_CHARS,
    REDACTED,
    SCRUB_OVERLAP,
    TRUNCATED,
    TextScrubber,
    scrub_text,
)
from pulsetrace.instrumentation.spans import copy_event, copy_link, copy_span
from pulsetrace.instrumentation.sql import sanitize_sql
from pulsetrace.selfmetrics import SelfMetrics

__all__ = ["CARD", "EMAIL", "MAX_SCRUB_CHARS", "PHONE", "PII_KEY_FRAGMENTS", "REDACTED", "TRUNCATED", "PiiScrubber",
           "build_scrubber", "luhn_valid", "scrub_text"]

_log = logging.getLogger("pulsetrace.pii")

PII_KEY_FRAGMENTS: tuple[str, ...] = ("email", "phone", "mobile", "msisdn", "card_number", "cardnumber", "cvv")
SQL_KEYS = frozenset({"db.statement", "db.query.text"})
#: Names the instrumentation builds as ``<name>@<host>`` for X-Ray's service map: not personal data.
SERVICE_NAME_KEYS = frozenset({"peer.service", "aws.local.service", "aws.remote.service"})


#: An attributes step run after scrubbing: (trace id, attributes) → new attributes, or ``None`` if unchanged.
AttributesStep = Callable[[int | None, Mapping[str, Any]], dict[str, Any] | None]

# Key actions.
_PLAIN, _SECRET, _PII, _HASH, _SQL, _KEEP = range(6)

#: Statements remembered with their scrubbed text (an ORM sends the same few statements with
#: placeholders on every request): at most this many, each at most this long.
_SQL_MEMO_ENTRIES = 1024
_SQL_MEMO_CHARS = 4096


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
        self._text = TextScrubber(tuple(k for k in secret_keys if k))
        self._actions: dict[str, int] = {}
        #: Short strings already found clean (bounded; never holds a string that needed scrubbing).
        self._clean: set[str] = set()
        #: Statement → its sanitized and scrubbed text (bounded; the result depends on the statement alone).
        self._sql_done: dict[str, str] = {}

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
                return self._sql(value)
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

    def _sql(self, statement: str) -> str:
        """A statement with its literals replaced and the text rules applied, remembered for the next span."""
        done = self._sql_done.get(statement)
        if done is not None:
            return done
        # Cut first: the sanitizer treats a literal left open by the cut as running to the end.
        done = self._text(sanitize_sql(statement[:MAX_SCRUB_CHARS + SCRUB_OVERLAP]))
        if len(statement) <= _SQL_MEMO_CHARS:
            if len(self._sql_done) >= _SQL_MEMO_ENTRIES:
                self._sql_done.clear()  # many distinct statements (literals inlined): start over, stay bounded
            self._sql_done[statement] = done
        return done

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
