"""The alert book-keeping: one open alert per key, group_wait, repeats, flap folding, silences, routes.

:meth:`AlertEngine.observe` takes what a source sees now (the active conditions within its
``scope`` of key prefixes) and :meth:`AlertEngine.due` says which notices to send now, each
with its channels. The rules (docs/alerts.md):

- A new condition waits ``group_wait`` before its first message (so a blip that clears at
  once sends nothing, and alerts raised together leave together).
- A condition that clears waits ``group_wait`` before its resolve is sent; firing again
  within that time is a flap: no message, only ``flaps`` counted on the alert, shown in the
  next message ("flapping: 21x"). 20 flaps a minute are one firing and one resolve.
- An open alert is sent again every ``repeat_interval``, and at once when its severity
  rises (a DEGRADED warning becoming a DOWN critical).
- A silenced alert sends nothing while the silence lasts; its resolve is not sent if its
  firing never was. The resolve goes to the channels the firing went to.

Pure state machine: no I/O, no threads, the clock is an argument. Not thread-safe: one
thread (the alert evaluator) drives it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pulsetrace.alerts.model import SEVERITIES, Alert, Notice
from pulsetrace.alerts.routing import Silence, channels_for, silenced_by
from pulsetrace.config.schema import AlertsConfig

__all__ = ["AlertEngine", "Outgoing", "OpenAlert"]

_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Outgoing:
    notice: Notice
    channels: tuple[str, ...]


@dataclass
class OpenAlert:
    alert: Alert
    first_seen: float
    active: bool = True
    cleared_at: float | None = None
    sent_at: float | None = None
    sent_severity: str | None = None
    channels: tuple[str, ...] = ()
    flaps: int = 0
    silenced_by: Silence | None = None


class AlertEngine:
    def __init__(self, cfg: AlertsConfig, silences: Sequence[Silence] = ()) -> None:
        self.cfg = cfg
        self.silences = list(silences)
        self.open: dict[str, OpenAlert] = {}
        self.changed = False

    def adopt(self, carried: Iterable[OpenAlert]) -> None:
        """Open alerts a previous process sent (from the store): kept open until a source says they cleared."""
        for st in carried:
            self.open.setdefault(st.alert.key, st)

    def observe(self, active: Mapping[str, Alert], scope: Iterable[str], now: float,
                undecided: Iterable[str] = ()) -> None:
        """The conditions a source sees now; open alerts under ``scope`` (key prefixes) it no longer sees clear.

        Keys in ``undecided`` (a probe not checked yet) neither open nor clear: an entry ending in ``:``
        is a prefix, any other a whole key.
        """
        prefixes = tuple(scope)
        unknown = tuple(undecided)
        for key, alert in active.items():
            st = self.open.get(key)
            if st is None:
                self.open[key] = OpenAlert(alert=alert, first_seen=now)
                self.changed = True
                continue
            if not st.active:  # fired again before its resolve left: a flap, folded
                st.active, st.cleared_at = True, None
                st.flaps += 1
                self.changed = True
            # Keep when it started; take the current figures.
            st.alert = dataclasses.replace(alert, started=st.alert.started)
        for key, st in self.open.items():
            held = any(key.startswith(u) if u.endswith(":") else key == u for u in unknown)
            if st.active and key.startswith(prefixes) and key not in active and not held:
                st.active, st.cleared_at = False, now
                self.changed = True

    def due(self, now: float) -> list[Outgoing]:
        """The notices to send now (and forget the alerts whose resolve is done)."""
        out: list[Outgoing] = []
        wait = self.cfg.group_wait
        for key, st in list(self.open.items()):
            silence = silenced_by(st.alert, self.silences, now)
            if silence is not st.silenced_by:
                st.silenced_by = silence
                self.changed = True
            if not st.active:
                assert st.cleared_at is not None
                if now - st.cleared_at < wait:
                    continue
                if st.sent_at is not None and self.cfg.send_resolved and st.channels:
                    out.append(Outgoing(Notice(st.alert, "resolved", now, st.flaps), st.channels))
                del self.open[key]
                self.changed = True
                continue
            if silence is not None:
                continue
            if st.sent_at is None:
                if now - st.first_seen < wait:
                    continue
            elif not (now - st.sent_at >= self.cfg.repeat_interval
                      or _RANK[st.alert.severity] < _RANK.get(st.sent_severity or "info", 99)):
                continue
            channels = channels_for(st.alert, self.cfg.routes)
            # A resolve must reach every channel a firing reached, even after a severity change.
            st.channels = tuple(dict.fromkeys((*st.channels, *channels)))
            st.sent_at, st.sent_severity = now, st.alert.severity
            self.changed = True
            if channels:
                out.append(Outgoing(Notice(st.alert, "firing", now, st.flaps), channels))
        return out

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until :meth:`due` may have something to send (``None``: nothing pending)."""
        waits = []
        for st in self.open.values():
            if st.active and st.silenced_by is not None:
                continue  # looked at again on the evaluator's next tick
            if not st.active and st.cleared_at is not None:
                waits.append(st.cleared_at + self.cfg.group_wait - now)
            elif st.sent_at is None:
                waits.append(st.first_seen + self.cfg.group_wait - now)
            else:
                waits.append(st.sent_at + self.cfg.repeat_interval - now)
        return max(0.0, min(waits)) if waits else None
