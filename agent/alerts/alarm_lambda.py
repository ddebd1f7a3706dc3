"""The CloudWatch alarm forwarder's Lambda code: SNS alarm notifications → the same Discord/Slack/PagerDuty/webhook
messages the agent sends.

Standard library only: :mod:`pulsetrace.alerts.forwarder` inlines this module (with ``text``,
``model`` and ``formats``) into the CloudFormation template, where nothing can be installed. The
``from pulsetrace...`` imports below are removed by that inlining; everything else runs as written.

Environment (set by the template): ``PULSETRACE_SERVICE``, ``PULSETRACE_ENVIRONMENT``,
``PULSETRACE_CHANNELS`` (JSON ``[{name, type, secret, username}]``: ``secret`` is the name of an SSM
SecureString parameter, or the ARN of a Secrets Manager secret, holding the webhook URL or the
PagerDuty routing key; never the value), ``PULSETRACE_ROUTES`` (JSON ``{severity: [channel, ...]}``),
``PULSETRACE_RUNBOOK_URL``. Secrets are read with SigV4-signed SSM/Secrets Manager calls (the
function's role credentials) and kept in memory for the life of the container. A channel that
fails is logged by name and HTTP status (never its URL) and does not stop the others; the
function does not raise for it, so SNS's retries never send the others twice.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from pulsetrace.alerts.formats import discord, pagerduty, slack, webhook
from pulsetrace.alerts.model import Alert, Notice, Severity

TIERS: tuple[Severity, ...] = ("critical", "warning", "business", "info")
_SECRETS: dict[str, str] = {}


def _tier(topic_arn: str) -> Severity:
    """The alert tier from the topic name (``...-critical``, ``...-warning``, ``...-business``)."""
    name = topic_arn.rsplit(":", 1)[-1]
    return next((t for t in TIERS if name.endswith("-" + t) or name == t), "warning")


def _epoch(text: object) -> float:
    if not isinstance(text, str) or not text:
        return time.time()
    value = text.replace("Z", "+00:00")
    if len(value) > 5 and value[-5] in "+-" and value[-3] != ":":  # 2026-12-03T10:00:00.000+0000
        value = value[:-2] + ":" + value[-2:]
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return time.time()


def alarm_notice(message: dict[str, Any], topic_arn: str, service: str, environment: str,
                 runbook_url: str = "") -> Notice:
    """One CloudWatch alarm state change (metric or composite) as a notice."""
    name = str(message.get("AlarmName") or "unnamed alarm")
    state = str(message.get("NewStateValue") or "ALARM")
    severity: Severity = _tier(topic_arn)
    trigger = message.get("Trigger") if isinstance(message.get("Trigger"), dict) else None
    details: dict[str, Any] = {"Alarm state": f"{message.get('OldStateValue', '?')} -> {state}",
                               "Region": str(message.get("Region") or "")}
    value: Any = state
    threshold: Any = None
    if trigger:
        dims = ", ".join(f"{d.get('name')}={d.get('value')}" for d in trigger.get("Dimensions") or []
                         if isinstance(d, dict))
        details["Metric"] = f"{trigger.get('Namespace', '')}/{trigger.get('MetricName', '')}".strip("/") or "expression"
        if dims:
            details["Dimensions"] = dims
        threshold = trigger.get("Threshold")
        if trigger.get("ComparisonOperator"):
            details["Condition"] = f"{trigger['ComparisonOperator']} {threshold}"
    if message.get("AlarmRule"):
        details["Rule"] = str(message["AlarmRule"])
        children = [str(c.get("Arn", "")).rsplit(":", 1)[-1] for c in message.get("TriggeringChildren") or []
                    if isinstance(c, dict)]
        if children:
            details["Triggered by"] = ", ".join(children)
    status = "resolved" if state == "OK" else "firing"
    key = f"cloudwatch:{name}"
    if state == "INSUFFICIENT_DATA":
        # Not an outage, and not the alarm's own incident: its own key, at most a warning.
        key, severity = f"{key}:insufficient-data", ("warning" if severity == "critical" else severity)
    title = name if state != "INSUFFICIENT_DATA" else f"{name}: insufficient data"
    alert = Alert(key=key, severity=severity, title=title, service=service, environment=environment,
                  source=f"cloudwatch:{name}", started=_epoch(message.get("StateChangeTime")),
                  summary=str(message.get("NewStateReason") or message.get("AlarmDescription") or title),
                  value=value, threshold=threshold if isinstance(threshold, (int, float)) else None,
                  runbook_url=runbook_url.replace("{alarm}", name).replace("{key}", key), command="pulsetrace sla",
                  details={k: v for k, v in details.items() if v})
    return Notice(alert, status, _epoch(message.get("StateChangeTime")))  # type: ignore[arg-type]


# -- secrets: SSM / Secrets Manager through a SigV4-signed call -------------------------------------


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sigv4_headers(service: str, region: str, host: str, target: str, body: bytes, access_key: str,
                  secret_key: str, token: str = "", now: datetime.datetime | None = None) -> dict[str, str]:
    """The headers of an AWS JSON-1.1 POST to ``/`` signed with Signature Version 4."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz_date,
               "x-amz-target": target}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join(["POST", "/", "", *(f"{n}:{headers[n]}" for n in names), "", ";".join(names),
                           hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(("AWS4" + secret_key).encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers


def _aws_call(service: str, target: str, payload: dict[str, Any]) -> dict[str, Any]:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (os.environ.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}")
                or os.environ.get("AWS_ENDPOINT_URL") or f"https://{service}.{region}.amazonaws.com")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    body = json.dumps(payload).encode()
    headers = sigv4_headers(service, region, host, target, body, os.environ.get("AWS_ACCESS_KEY_ID", ""),
                            os.environ.get("AWS_SECRET_ACCESS_KEY", ""), os.environ.get("AWS_SESSION_TOKEN", ""))
    req = urllib.request.Request(endpoint.rstrip("/") + "/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def secret(ref: str) -> str:
    """The value of an SSM SecureString parameter (by name) or a Secrets Manager secret (by ARN), cached."""
    if ref not in _SECRETS:
        if ref.startswith("arn:") and ":secretsmanager:" in ref:
            doc = _aws_call("secretsmanager", "secretsmanager.GetSecretValue", {"SecretId": ref})
            _SECRETS[ref] = str(doc.get("SecretString", "")).strip()
        else:
            doc = _aws_call("ssm", "AmazonSSM.GetParameter", {"Name": ref, "WithDecryption": True})
            _SECRETS[ref] = str(doc["Parameter"]["Value"]).strip()
    return _SECRETS[ref]


# -- delivery --------------------------------------------------------------------------------------


def _payload(channel: dict[str, Any], notice: Notice, value: str) -> tuple[str, dict[str, Any]]:
    kind = channel["type"]
    if kind == "discord":
        return value + ("&" if "?" in value else "?") + "wait=true", discord(notice, channel.get("username", ""))
    if kind == "slack":
        return value, slack(notice)
    if kind == "pagerduty":
        return channel.get("url") or "https://events.pagerduty.com/v2/enqueue", pagerduty(notice, value)
    return value, webhook(notice)


def deliver(channel: dict[str, Any], notice: Notice, deadline: float) -> str:
    """Send to one channel, honouring one 429 ``Retry-After`` within ``deadline``; returns a loggable result."""
    try:
        url, body = _payload(channel, notice, secret(channel["secret"]))
    except Exception as exc:
        return f"secret not read ({type(exc).__name__})"
    data = json.dumps(body).encode("utf-8")
    last = "not sent"
    for _ in range(3):
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "pulsetrace-forwarder/1"})
        try:
            with urllib.request.urlopen(req, timeout=max(1.0, min(10.0, deadline - time.time()))) as resp:
                return f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            wait = float(exc.headers.get("Retry-After") or 1.0) if exc.code in (429, 500, 502, 503, 504) else None
            if wait is None or time.time() + wait >= deadline:
                return last
            time.sleep(wait)
        except OSError as exc:
            return f"not delivered ({type(exc).__name__})"
    return last


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point for SNS events."""
    channels = {c["name"]: c for c in json.loads(os.environ.get("PULSETRACE_CHANNELS", "[]"))}
    routes: dict[str, list[str]] = json.loads(os.environ.get("PULSETRACE_ROUTES", "{}"))
    service = os.environ.get("PULSETRACE_SERVICE", "unknown_service")
    environment = os.environ.get("PULSETRACE_ENVIRONMENT", "default")
    runbook = os.environ.get("PULSETRACE_RUNBOOK_URL", "")
    remaining = getattr(context, "get_remaining_time_in_millis", lambda: 30000)() / 1000.0
    deadline = time.time() + max(1.0, remaining - 2.0)
    results: dict[str, str] = {}
    for record in event.get("Records") or []:
        sns = record.get("Sns") or {}
        try:
            message = json.loads(sns.get("Message") or "{}")
        except ValueError:
            continue
        if not isinstance(message, dict) or "AlarmName" not in message:
            continue  # not a CloudWatch alarm notification
        notice = alarm_notice(message, str(sns.get("TopicArn") or ""), service, environment, runbook)
        for name in routes.get(notice.alert.severity, []):
            if name in channels:
                results[f"{notice.alert.key}:{notice.status}:{name}"] = deliver(channels[name], notice, deadline)
    print(json.dumps({"pulsetrace_forwarder": results}))
    return {"delivered": results}
