"""HTTP probe (a payment gateway, any HTTP dependency): status, latency, body condition, TLS expiry.

A new connection per check (no keep-alive: a stale pooled connection must not look like
an outage, and the TLS certificate is seen on every check). The body is read up to
:data:`MAX_BODY` only when a ``json_condition`` needs it. Credentials (headers, basic
auth, URL userinfo or query tokens) are never put in a detail: the redactor masks them
even when an error message echoes the request. The ``razorpay`` preset lives in
:mod:`pulsetrace.healthchecks.razorpay` and reuses this transport.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pulsetrace.healthchecks.base import Measurement, ProbeContext, ProbeResult, Status, describe_error
from pulsetrace.healthchecks.jsoncond import JsonCondition

if TYPE_CHECKING:
    from pulsetrace.config.schema import ProbeConfig

MAX_BODY = 1024 * 1024
DEFAULT_LATENCY_MS = 1000.0


@dataclass
class Fetched:
    status_code: int
    latency_s: float
    body: bytes
    cert_days_left: float | None


def _tls_context(cfg: ProbeConfig) -> ssl.SSLContext | bool:
    if not cfg.verify_tls:
        return False
    return ssl.create_default_context(cafile=cfg.ca_file or None)


def _days_left(ssl_object: Any, now: float) -> float | None:
    """Days until the peer certificate expires (negative: expired); None when unknown."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if cert and cert.get("notAfter"):
        return (ssl.cert_time_to_seconds(cert["notAfter"]) - now) / 86400.0
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:  # unverified connection: the dict form is empty, parse the DER (optional dependency)
        from cryptography import x509
    except ImportError:
        return None
    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (not_after.timestamp() - now) / 86400.0


class HttpTransport:
    """One request per check on a fresh connection; owns the client, rebuilt after failures."""

    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext, *, auth: tuple[str, str] | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.auth = auth
        # The driver and the TLS context (loading the CA bundle takes tens of ms) are made now,
        # not inside the first check's timeout; the context is reused by every client.
        self._verify = _tls_context(cfg)
        self._client: Any = self._make_client()

    def _make_client(self) -> Any:
        import httpx

        return httpx.AsyncClient(verify=self._verify, timeout=httpx.Timeout(self.cfg.timeout),
                                 follow_redirects=False, auth=self.auth,
                                 limits=httpx.Limits(max_connections=2, max_keepalive_connections=0),
                                 headers={"user-agent": "pulsetrace-probe"})

    async def fetch(self, url: str, *, want_body: bool) -> Fetched:
        if self._client is None:
            self._client = self._make_client()
        started = time.perf_counter()
        try:
            async with self._client.stream(self.cfg.method, url, headers=self.cfg.headers) as response:
                body = b""
                if want_body and self.cfg.method != "HEAD":
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > MAX_BODY:
                            break
                    body = b"".join(chunks)[:MAX_BODY]
                stream = response.extensions.get("network_stream")
                ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
                days = _days_left(ssl_object, self.ctx.clock())
                return Fetched(response.status_code, time.perf_counter() - started, body, days)
        except BaseException:
            await self.reset()
            raise

    async def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(asyncio.shield(client.aclose()), timeout=0.5)
            except BaseException:
                pass

    async def aclose(self) -> None:
        await self.reset()


def error_detail(exc: BaseException) -> str:
    """A short, human reason for a failed request (TLS and timeouts named plainly)."""
    text = describe_error(exc)
    if "certificate verify failed" in text.lower():
        reason = text.split("certificate verify failed:", 1)[-1] if "verify failed:" in text else "verify failed"
        return "TLS certificate rejected: " + reason.split("(_ssl")[0].strip()
    if type(exc).__name__.endswith("Timeout") or isinstance(exc, TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return text


class HttpProbe:
    def __init__(self, cfg: ProbeConfig, ctx: ProbeContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.condition = JsonCondition.parse(cfg.json_condition) if cfg.json_condition else None
        self.latency_ms = cfg.thresholds.get("latency_ms", DEFAULT_LATENCY_MS)
        auth = (cfg.username, cfg.password) if cfg.username or cfg.password else None
        self.transport = HttpTransport(cfg, ctx, auth=auth)

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            got = await self.transport.fetch(self.cfg.url, want_body=self.condition is not None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ProbeResult(Status.DOWN, time.perf_counter() - started, self.ctx.redactor.scrub(error_detail(exc)))
        return judge(self.cfg, got, self.latency_ms, self.condition)

    async def aclose(self) -> None:
        await self.transport.aclose()


def judge(cfg: ProbeConfig, got: Fetched, latency_ms: float, condition: JsonCondition | None) -> ProbeResult:
    m: dict[str, Measurement] = {"status_code": got.status_code, "latency_ms": round(got.latency_s * 1000, 3)}
    if got.cert_days_left is not None:
        m["cert_days_left"] = round(got.cert_days_left, 2)
    if got.status_code not in cfg.expect_status:
        expected = ", ".join(str(s) for s in cfg.expect_status)
        return ProbeResult(Status.DOWN, got.latency_s, f"HTTP {got.status_code} (expected {expected})", m)
    if got.cert_days_left is not None and got.cert_days_left < 0:
        return ProbeResult(Status.DOWN, got.latency_s, f"TLS certificate expired {-got.cert_days_left:.1f} days ago", m)
    if condition is not None:
        try:
            doc = json.loads(got.body)
        except ValueError:
            return ProbeResult(Status.DOWN, got.latency_s, "body is not JSON (json_condition)", m)
        if not condition.holds(doc):
            return ProbeResult(Status.DOWN, got.latency_s, f"json_condition not met: {condition.text}", m)
    problems = []
    if got.latency_s * 1000 > latency_ms:
        problems.append(f"slow response {got.latency_s * 1000:.0f} ms > {latency_ms:g} ms")
    if got.cert_days_left is not None and got.cert_days_left < cfg.cert_expiry_days:
        problems.append(f"TLS certificate expires in {got.cert_days_left:.1f} days (< {cfg.cert_expiry_days:g})")
    if problems:
        return ProbeResult(Status.DEGRADED, got.latency_s, "; ".join(problems), m)
    return ProbeResult(Status.UP, got.latency_s, f"HTTP {got.status_code} in {got.latency_s * 1000:.0f} ms", m)


def env_credentials(cfg: ProbeConfig, user_var: str, secret_var: str) -> tuple[str, str]:
    """Basic-auth credentials from the config, else from the environment."""
    return (cfg.username or os.environ.get(user_var, ""), cfg.password or os.environ.get(secret_var, ""))
