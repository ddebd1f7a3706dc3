"""Routes and silences: which channels an alert goes to, and whether it is silenced now.

A route or silence matches on the alert's severity, probe, business operation, source and key
(glob patterns, ``fnmatch`` rules, case-sensitive). Every matching route delivers; an empty
list in a route matches anything. Silence times are ISO 8601 (``2026-12-24T22:00:00Z``; no
zone means UTC); an empty ``starts`` is "already started", an empty ``ends`` "never ends".
Pure functions.
"""

from __future__ import annotations

import datetime
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pulsetrace.alerts.model import Alert
from pulsetrace.config.schema import AlertRouteConfig, AlertsConfig, SilenceConfig

__all__ = ["Silence", "channels_for", "parse_time", "silences_from", "silenced_by"]


def parse_time(text: str) -> float:
    """ISO 8601 → epoch seconds; raises ``ValueError``."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    when = datetime.datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _fields(alert: Alert) -> dict[str, str]:
    return {"severity": alert.severity, "probe": alert.probe, "operation": alert.operation, "source": alert.source,
            "key": alert.key, "sla": alert.probe if alert.source.startswith("sla:") else ""}


def _any(patterns: Sequence[str], value: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def channels_for(alert: Alert, routes: Sequence[AlertRouteConfig]) -> tuple[str, ...]:
    """The channel names of every route the alert matches, each once, in configuration order."""
    out: dict[str, None] = {}
    for route in routes:
        if (_any(route.severity, alert.severity) and _any(route.probe, alert.probe)
                and _any(route.operation, alert.operation) and _any(route.source, alert.source)):
            out.update(dict.fromkeys(route.channels))
    return tuple(out)


@dataclass(frozen=True)
class Silence:
    match: dict[str, str]
    starts: float
    ends: float
    comment: str

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def matches(self, alert: Alert) -> bool:
        values = _fields(alert)
        return all(fnmatch.fnmatchcase(values.get(k, ""), str(p)) for k, p in self.match.items())

    def as_dict(self) -> dict[str, Any]:
        from pulsetrace.alerts.text import iso_time

        return {"match": dict(self.match), "starts": iso_time(self.starts) if self.starts > 0 else None,
                "ends": iso_time(self.ends) if self.ends < 1e17 else None, "comment": self.comment}


def _silence(cfg: SilenceConfig) -> Silence:
    return Silence(dict(cfg.match), parse_time(cfg.starts) if cfg.starts else 0.0,
                   parse_time(cfg.ends) if cfg.ends else 1e18, cfg.comment)


def silences_from(cfg: AlertsConfig) -> list[Silence]:
    """The configured silences (their times were checked by the configuration's validation)."""
    return [_silence(s) for s in cfg.silences]


def silenced_by(alert: Alert, silences: Sequence[Silence], now: float) -> Silence | None:
    return next((s for s in silences if s.active(now) and s.matches(alert)), None)


def config_problems(cfg: AlertsConfig) -> list[tuple[str, str, str, str]]:
    """(key, problem, got, expected) for the alerts section's cross-references and times."""
    out: list[tuple[str, str, str, str]] = []
    names = [c.name for c in cfg.channels]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name or len(name) > 64 or not all(ch.isalnum() or ch in "_.-" for ch in name):
            out.append((f"alerts.channels[{i}].name", "invalid channel name", repr(name),
                        "1-64 characters of letters, digits, '_', '.', '-'"))
        if name in seen:
            out.append((f"alerts.channels[{i}].name", "duplicate channel name", repr(name), "unique names"))
        seen.add(name)
    for i, route in enumerate(cfg.routes):
        if not route.channels:
            out.append((f"alerts.routes[{i}].channels", "is empty", "", "one or more channel names"))
        for j, ch in enumerate(route.channels):
            if ch not in seen:
                out.append((f"alerts.routes[{i}].channels[{j}]", "unknown channel", repr(ch),
                            "one of " + (", ".join(names) or "the names in alerts.channels")))
    for i, s in enumerate(cfg.silences):
        bounds: list[float] = []
        for name in ("starts", "ends"):
            text = getattr(s, name)
            if not text:
                continue
            try:
                bounds.append(parse_time(text))
            except ValueError:
                out.append((f"alerts.silences[{i}].{name}", "not an ISO 8601 time", repr(text),
                            "e.g. 2026-12-24T22:00:00Z"))
        if len(bounds) == 2 and bounds[1] <= bounds[0]:
            out.append((f"alerts.silences[{i}].ends", "is not after starts", repr(s.ends), "a later time"))
        if not s.match:
            out.append((f"alerts.silences[{i}].match", "is empty (it would silence everything)", "",
                        "one or more of probe, operation, severity, source, sla, key"))
    if cfg.channels and not cfg.routes:
        out.append(("alerts.routes", "no route: no alert would reach a channel", "",
                    "e.g. [{severity: [critical], channels: [NAME]}]"))
    return out
