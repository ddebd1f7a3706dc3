"""The channel types: one small protocol, one class per service, one registry by type name.

A channel turns a notice into its service's payload (:mod:`pulsetrace.alerts.formats`) and
sends it once: :meth:`Channel.send` returns a :class:`DeliveryResult` and never raises.
Retries, rate limits and deadlines are the worker's (:mod:`pulsetrace.alerts.worker`).
Called on the delivery thread only, with instrumentation suppressed. A channel never puts its
URL, routing key or header values into a result, a log line or an exception message.
"""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pulsetrace.alerts import formats
from pulsetrace.alerts.model import DeliveryResult, Notice
from pulsetrace.background import suppressed
from pulsetrace.config.schema import AlertChannelConfig

__all__ = ["CHANNELS", "Channel", "build_channel", "channel_problems"]

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
#: Requests per minute when ``rate_per_minute`` is 0: Discord allows about 30 a minute per webhook,
#: Slack 1 a second per webhook, PagerDuty 120 events a minute per integration key.
DEFAULT_RATES = {"discord": 30.0, "slack": 60.0, "pagerduty": 120.0, "sns": 600.0, "webhook": 120.0}
_MAX_BODY = 256 * 1024
_USER_AGENT = "pulsetrace-alerts/1"


class Channel(Protocol):
    """Sends one notice to one destination, once. Thread contract: called from one thread."""

    name: str
    type: str
    rate_per_minute: float

    def send(self, notice: Notice) -> DeliveryResult:
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook that redirects is misconfigured; following it would re-send the body elsewhere.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _retry_after(headers: Mapping[str, str] | Any, body: bytes) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        if value is not None and math.isfinite(float(value)):
            return max(0.0, min(float(value), 3600.0))
    except ValueError:
        pass
    try:  # Discord also says it in the JSON body, in seconds
        doc = json.loads(body or b"{}")
        if isinstance(doc, dict) and isinstance(doc.get("retry_after"), (int, float)):
            return max(0.0, min(float(doc["retry_after"]), 3600.0))
    except (ValueError, UnicodeDecodeError):
        pass
    return None


def post_json(channel: str, url: str, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float,
              ok: Callable[[int, bytes], bool] = lambda status, _: 200 <= status < 300) -> DeliveryResult:
    """POST ``body`` as JSON; the result names the HTTP status, never the URL."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT, **headers})
    try:
        with suppressed(), _OPENER.open(req, timeout=timeout) as resp:
            status = int(resp.status)
            answer = resp.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        try:
            answer = exc.read(_MAX_BODY)
        except (OSError, ValueError):
            answer = b""
        hdrs = exc.headers
        retry = _retry_after(hdrs, answer) if status == 429 or status == 503 else None
        return DeliveryResult(channel, False, status, f"HTTP {status}",
                              retryable=status == 429 or status >= 500 or status == 408, retry_after=retry)
    except (socket.timeout, TimeoutError):
        return DeliveryResult(channel, False, None, f"timed out after {timeout:g}s", retryable=True)
    except urllib.error.URLError as exc:
        reason = exc.reason
        what = type(reason).__name__ if not isinstance(reason, str) else "unreachable"
        if isinstance(reason, OSError) and reason.strerror:
            what = reason.strerror
        return DeliveryResult(channel, False, None, f"not delivered: {what}", retryable=True)
    except (OSError, ValueError) as exc:
        return DeliveryResult(channel, False, None, f"not delivered: {type(exc).__name__}", retryable=True)
    if 300 <= status < 400:
        return DeliveryResult(channel, False, status, f"HTTP {status} (redirect not followed)")
    if ok(status, answer):
        return DeliveryResult(channel, True, status, f"HTTP {status}")
    return DeliveryResult(channel, False, status, f"HTTP {status} (unexpected answer)", retryable=False)


class _HttpChannel:
    type = "webhook"

    def __init__(self, cfg: AlertChannelConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.rate_per_minute = cfg.rate_per_minute or DEFAULT_RATES[self.type]

    def body(self, notice: Notice) -> dict[str, Any]:
        return formats.webhook(notice)

    def url(self) -> str:
        return self.cfg.url

    def send(self, notice: Notice) -> DeliveryResult:
        try:
            body = self.body(notice)
        except Exception as exc:  # a bug of ours in a renderer: reported, never raised
            return DeliveryResult(self.name, False, None, f"not rendered: {type(exc).__name__}")
        return post_json(self.name, self.url(), body, self.cfg.headers, self.cfg.timeout)


class WebhookChannel(_HttpChannel):
    type = "webhook"


class DiscordChannel(_HttpChannel):
    type = "discord"

    def body(self, notice: Notice) -> dict[str, Any]:
        return formats.discord(notice, self.cfg.username)

    def url(self) -> str:
        # ?wait=true: Discord answers 200 with the message once it is posted (else 204 unseen).
        return self.cfg.url + ("&" if "?" in self.cfg.url else "?") + "wait=true"


class SlackChannel(_HttpChannel):
    type = "slack"

    def body(self, notice: Notice) -> dict[str, Any]:
        return formats.slack(notice)


class PagerDutyChannel(_HttpChannel):
    type = "pagerduty"

    def body(self, notice: Notice) -> dict[str, Any]:
        return formats.pagerduty(notice, self.cfg.routing_key)

    def url(self) -> str:
        return self.cfg.url or PAGERDUTY_URL


class SnsChannel:
    """SNS Publish through boto3 (the ``aws`` extra): ``Subject`` and a JSON ``Message``."""

    type = "sns"

    def __init__(self, cfg: AlertChannelConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.rate_per_minute = cfg.rate_per_minute or DEFAULT_RATES["sns"]
        self._client: Any = None

    def _sns(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            region = self.cfg.region or (self.cfg.topic_arn.split(":")[3] if self.cfg.topic_arn.count(":") >= 5 else None)
            self._client = boto3.client(
                "sns", region_name=region or None, endpoint_url=self.cfg.endpoint_url or None,
                config=BotoConfig(connect_timeout=self.cfg.timeout, read_timeout=self.cfg.timeout,
                                  retries={"max_attempts": 1}))
        return self._client

    def send(self, notice: Notice) -> DeliveryResult:
        subject, message = formats.sns(notice)
        attrs = {"severity": {"DataType": "String", "StringValue": notice.alert.severity},
                 "status": {"DataType": "String", "StringValue": notice.status}}
        try:
            with suppressed():
                self._sns().publish(TopicArn=self.cfg.topic_arn, Subject=subject, Message=message,
                                    MessageAttributes=attrs)
        except ImportError:
            return DeliveryResult(self.name, False, None, "boto3 is not installed (pip install 'pulsetrace[aws]')")
        except Exception as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            throttled = code in ("Throttling", "ThrottlingException", "ThrottledException")
            return DeliveryResult(self.name, False, status, f"SNS {code}",
                                  retryable=throttled or status is None or status >= 500)
        return DeliveryResult(self.name, True, 200, "SNS published")


#: Channel type → class. A new type registers here and is accepted by the configuration at once.
CHANNELS: dict[str, Callable[[AlertChannelConfig], Channel]] = {
    "discord": DiscordChannel, "slack": SlackChannel, "pagerduty": PagerDutyChannel, "sns": SnsChannel,
    "webhook": WebhookChannel,
}


def build_channel(cfg: AlertChannelConfig) -> Channel:
    return CHANNELS[cfg.type](cfg)


def _http_url_ok(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def channel_problems(key: str, cfg: AlertChannelConfig) -> list[tuple[str, str, str]]:
    """(key, problem, expected) for one channel; values are never echoed (they are secrets)."""
    out: list[tuple[str, str, str]] = []
    if cfg.type in ("discord", "slack", "webhook"):
        if not cfg.url:
            out.append((f"{key}.url", f"is required for a {cfg.type} channel", "an https:// webhook URL"))
        elif not _http_url_ok(cfg.url):
            out.append((f"{key}.url", "not an http(s) URL", "an https:// webhook URL"))
    if cfg.type == "pagerduty":
        if not cfg.routing_key:
            out.append((f"{key}.routing_key", "is required for a pagerduty channel",
                        "the 32-character Events API v2 integration key"))
        if cfg.url and not _http_url_ok(cfg.url):
            out.append((f"{key}.url", "not an http(s) URL", PAGERDUTY_URL))
    if cfg.type == "sns" and not (cfg.topic_arn.startswith("arn:") and cfg.topic_arn.count(":") >= 5):
        out.append((f"{key}.topic_arn", "is required for an sns channel",
                    "arn:aws:sns:REGION:ACCOUNT:TOPIC"))
    if cfg.headers and cfg.type != "webhook":
        out.append((f"{key}.headers", f"is not used by a {cfg.type} channel", "headers on webhook channels only"))
    return out
