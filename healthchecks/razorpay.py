"""The ``razorpay`` preset of the http probe: the gateway's own Downtime API.

``GET {url}/v1/payments/downtimes`` with basic auth (key id : key secret, from the probe's
``username``/``password`` or ``RAZORPAY_KEY_ID``/``RAZORPAY_KEY_SECRET``). A downtime is
active when its status is ``started`` or ``updated``, it has begun and has not ended.
Active downtimes map by severity: any ``high`` → DOWN, else ``medium``/``low`` → DEGRADED;
``options.methods`` (e.g. ``[card, upi]``) limits which payment methods count. The
detail names each active downtime's method, severity and instrument.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status
from pulsetrace.healthchecks.http_probe import DEFAULT_LATENCY_MS, HttpTransport, env_credentials, error_detail

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

DEFAULT_URL = "https://api.razorpay.com"
PATH = "/v1/payments/downtimes"
_ACTIVE = {"started", "updated"}
_SEVERITY_STATUS = {"high": Status.DOWN, "medium": Status.DEGRADED, "low": Status.DEGRADED}


class RazorpayProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        key_id, key_secret = env_credentials(cfg, "RAZORPAY_KEY_ID", "RAZORPAY_KEY_SECRET")
        ctx.redactor.add(key_secret, f"{key_id}:{key_secret}")
        self.url = (cfg.url or DEFAULT_URL).rstrip("/") + PATH
        self.latency_ms = cfg.thresholds.get("latency_ms", DEFAULT_LATENCY_MS)
        methods = cfg.options.get("methods")
        self.methods = {str(m).lower() for m in methods} if isinstance(methods, list) else None
        self.transport = HttpTransport(cfg, ctx, auth=(key_id, key_secret) if key_id or key_secret else None)

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            got = await self.transport.fetch(self.url, want_body=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ProbeResult(Status.DOWN, time.perf_counter() - started, self.ctx.redactor.scrub(error_detail(exc)))
        m: dict[str, Measurement] = {"status_code": got.status_code, "latency_ms": round(got.latency_s * 1000, 3)}
        if got.status_code in (401, 403):
            return ProbeResult(Status.DOWN, got.latency_s, f"downtime API refused the credentials (HTTP "
                               f"{got.status_code})", m)
        if got.status_code != 200:
            return ProbeResult(Status.DOWN, got.latency_s, f"downtime API answered HTTP {got.status_code}", m)
        try:
            items = _items(json.loads(got.body))
        except ValueError as exc:
            return ProbeResult(Status.DOWN, got.latency_s, f"downtime API answer not understood: {exc}", m)
        return self.judge(items, got.latency_s, m)

    def judge(self, items: list[dict[str, Any]], latency_s: float, m: dict[str, Measurement]) -> ProbeResult:
        now = self.ctx.clock()
        active = [d for d in items if _is_active(d, now)
                  and (self.methods is None or str(d.get("method", "")).lower() in self.methods)]
        m["downtimes_active"] = len(active)
        m["downtime_methods"] = sorted({str(d.get("method", "?")) for d in active})
        if active:
            status = max((_SEVERITY_STATUS.get(str(d.get("severity", "")).lower(), Status.DEGRADED) for d in active),
                         key=lambda s: s.severity)
            parts = [_describe(d) for d in sorted(active, key=lambda d: str(d.get("method", "")))]
            shown = "; ".join(parts[:8]) + (f"; +{len(parts) - 8} more" if len(parts) > 8 else "")
            return ProbeResult(status, latency_s, f"{len(active)} active downtime(s): {shown}", m)
        if latency_s * 1000 > self.latency_ms:
            return ProbeResult(Status.DEGRADED, latency_s, f"slow response {latency_s * 1000:.0f} ms > "
                               f"{self.latency_ms:g} ms", m)
        return ProbeResult(Status.UP, latency_s, "no active downtime", m)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _items(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [d for d in doc["items"] if isinstance(d, dict)]
    if isinstance(doc, list):
        return [d for d in doc if isinstance(d, dict)]
    raise ValueError("expected a collection with items")


def _is_active(d: dict[str, Any], now: float) -> bool:
    if str(d.get("status", "")).lower() not in _ACTIVE:
        return False
    begin, end = d.get("begin"), d.get("end")
    if isinstance(begin, (int, float)) and begin > now:
        return False
    return not (isinstance(end, (int, float)) and end <= now)


def _describe(d: dict[str, Any]) -> str:
    method = str(d.get("method", "?"))[:24]
    severity = str(d.get("severity", "?"))[:12]
    instrument = d.get("instrument")
    inst = ""
    if isinstance(instrument, dict) and instrument:
        inst = " (" + ", ".join(f"{str(k)[:20]} {str(v)[:24]}" for k, v in list(instrument.items())[:3]) + ")"
    return f"{method} {severity}{inst}"
