"""Redaction of probe details: no DSN password, token, URL credential or gateway key ever leaves.

A dependency's own error message may echo what it was given (a DSN in a driver error,
a URL with a token in an HTTP error), so every string a probe produces goes through
:meth:`Redactor.scrub`: the secret values known from the configuration are replaced
wherever they appear (also URL-quoted and base64 "user:password" forms), then
generic patterns (URL credentials with or without a scheme, ``password=...`` and key/value
DSNs, ``Bearer ...``) are masked by :func:`pulsetrace.config.secrets.mask_text`.
Never raises.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pulsetrace.config.secrets import MASK, SECRET_QUERY_NAMES, is_secret_key, is_secret_query_name, mask_text

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config, ProbeConfig

#: Secrets shorter than this are not searched for (they would mangle every detail line);
#: the generic patterns below still mask them where they appear as credentials.
MIN_SECRET_LEN = 3

def url_secrets(url: str) -> list[str]:
    """The password and secret-looking query values of a URL (decoded and raw)."""
    out: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    if parts.password:
        out += [parts.password, unquote(parts.password)]
    if parts.username and parts.password:
        out.append(unquote(parts.username) + ":" + unquote(parts.password))
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_secret_query_name(key):
            out.append(value)
    return out


class Redactor:
    """Masks known secret values and credential patterns in text. Thread-safe."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register more secret values (e.g. credentials a probe read from the environment)."""
        variants: set[str] = set()
        for secret in secrets:
            if not isinstance(secret, str) or len(secret) < MIN_SECRET_LEN:
                continue
            variants.update({secret, quote(secret, safe=""), quote(secret)})
            if ":" in secret:  # "user:password" also travels base64-encoded in Basic auth
                variants.add(base64.b64encode(secret.encode()).decode())
        with self._lock:
            new = variants - self._secrets
            if not new:
                return
            self._secrets |= new
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial leftovers
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def scrub(self, text: object) -> str:
        try:
            out = text if isinstance(text, str) else str(text)
            pattern = self._pattern
            if pattern is not None:
                out = pattern.sub(MASK, out)
            # The generic patterns are the configuration masker's: one masking function for the agent.
            return mask_text(out)
        except Exception:  # a redactor that fails must fail closed
            return MASK

    def __contains__(self, secret: str) -> bool:
        with self._lock:
            return secret in self._secrets

    @classmethod
    def from_config(cls, cfg: Config) -> Redactor:
        secrets: list[str] = [cfg.health.token]
        for probe in cfg.health.probes:
            secrets += probe_secrets(probe)
        return cls(secrets)


def probe_secrets(probe: ProbeConfig) -> list[str]:
    """Every secret value one probe's configuration holds."""
    out: list[str] = []
    for url in (probe.dsn, probe.url, *probe.source.values()):
        out += url_secrets(url)
    out += list(probe.headers.values())
    for value in probe.headers.values():  # "Bearer abc" → also "abc"
        out += value.split()[1:] if " " in value else []
    if probe.password:
        out.append(probe.password)
        if probe.username:
            out.append(f"{probe.username}:{probe.password}")
    for key, value in probe.options.items():
        if not isinstance(value, str):
            continue
        if is_secret_key(str(key)) or str(key).lower() in SECRET_QUERY_NAMES:
            out.append(value)
        elif "://" in value:  # a DSN or URL handed to a custom probe
            out += url_secrets(value)
    return out
