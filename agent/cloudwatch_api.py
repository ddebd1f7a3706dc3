"""PutMetricData: metric data to CloudWatch through boto3, within the API's limits.

One call carries at most 1,000 metric data and stays under 1 MB (the size is
estimated for the most verbose wire protocol, the query protocol, so it holds for
JSON and CBOR too); a datum has at most 30 dimensions and 150 values. A throttled
call (or a 5xx) is retried with exponential backoff and jitter while the flush's
deadline allows; data that still could not be sent (throttled, endpoint down, no
credentials) go back to the publisher's bounded buffer for the next interval;
data CloudWatch rejects as invalid are dropped and counted. botocore's own retries
are off so that every retry is ours, bounded and counted.

Runs on the flusher thread only; the client is created there, lazily (importing
boto3 takes a while), and again after ``fork()``. Never raises.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.metrics_publisher import MAX_DIMENSIONS, MetricDatum
from agent.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from agent.config_schema import Config

_log = logging.getLogger("pulsetrace.cloudwatch")

MAX_DATA_PER_CALL = 1000
MAX_PAYLOAD_BYTES = 1_000_000
#: Room left under the 1 MB limit for the envelope (Action, Version, Namespace) and estimate error.
PAYLOAD_BUDGET = 950_000
MAX_VALUES_PER_DATUM = 150
THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded",
                            "TooManyRequestsException", "RequestThrottled", "SlowDown"})
_MAX_ATTEMPTS = 5
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 5.0


def api_data(d: MetricDatum) -> list[dict[str, Any]]:
    """The PutMetricData ``MetricDatum`` structures for one datum (several when it has > 150 values)."""
    base: dict[str, Any] = {
        "MetricName": d.name,
        "Dimensions": [{"Name": n, "Value": v} for n, v in d.dimensions[:MAX_DIMENSIONS]],
        "Timestamp": dt.datetime.fromtimestamp(d.timestamp, tz=dt.timezone.utc),
        "Unit": d.unit,
    }
    if d.value is not None:
        return [{**base, "Value": d.value}]
    if not d.values:
        return [{**base, "StatisticValues": {"SampleCount": d.count, "Sum": d.total, "Minimum": d.minimum,
                                             "Maximum": d.maximum}}]
    out = []
    for i in range(0, len(d.values), MAX_VALUES_PER_DATUM):
        out.append({**base, "Values": list(d.values[i:i + MAX_VALUES_PER_DATUM]),
                    "Counts": list(d.counts[i:i + MAX_VALUES_PER_DATUM])})
    return out


def estimate_size(datum: dict[str, Any], index: int) -> int:
    """Bytes this datum adds to a query-protocol request body (``MetricData.member.N.…=…&``)."""
    prefix = f"MetricData.member.{index}."
    size = 0

    def field(key: str, value: object) -> int:
        return len(prefix) + len(key) + 2 + len(quote(str(value), safe=""))

    size += field("MetricName", datum["MetricName"])
    size += field("Unit", datum["Unit"])
    size += field("Timestamp", "2000-01-01T00:00:00.000000Z")
    for j, dim in enumerate(datum["Dimensions"], 1):
        size += field(f"Dimensions.member.{j}.Name", dim["Name"])
        size += field(f"Dimensions.member.{j}.Value", dim["Value"])
    if "Value" in datum:
        size += field("Value", repr(float(datum["Value"])))
    if "StatisticValues" in datum:
        for k, v in datum["StatisticValues"].items():
            size += field(f"StatisticValues.{k}", repr(float(v)))
    for j, v in enumerate(datum.get("Values", ()), 1):
        size += field(f"Values.member.{j}", repr(float(v)))
    for j, c in enumerate(datum.get("Counts", ()), 1):
        size += field(f"Counts.member.{j}", repr(float(c)))
    return size


def plan_calls(datums: Sequence[MetricDatum]) -> list[tuple[list[dict[str, Any]], list[MetricDatum]]]:
    """Split data into compliant calls: ``[(MetricData, the source data), ...]``, order kept."""
    calls: list[tuple[list[dict[str, Any]], list[MetricDatum]]] = []
    current: list[dict[str, Any]] = []
    sources: list[MetricDatum] = []
    size = 0
    for d in datums:
        for part in api_data(d):
            part_size = estimate_size(part, len(current) + 1)
            if current and (len(current) >= MAX_DATA_PER_CALL or size + part_size > PAYLOAD_BUDGET):
                calls.append((current, sources))
                current, sources, size = [], [], 0
                part_size = estimate_size(part, 1)
            current.append(part)
            if not sources or sources[-1] is not d:
                sources.append(d)
            size += part_size
    if current:
        calls.append((current, sources))
    return calls


class PutMetricDataSink:
    """Metric data to CloudWatch with PutMetricData (``metrics.cloudwatch.mode: api``)."""

    name = "api"

    def __init__(self, cfg: Config, metrics: SelfMetrics, client: Any = None) -> None:
        cw = cfg.metrics.cloudwatch
        self.metrics = metrics
        self.namespace = cw.namespace
        self.region = cw.region
        self.endpoint_url = cw.endpoint_url
        self.timeout = cw.timeout
        self._client = client
        self._pid = os.getpid()

    def _get_client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            import boto3
            from botocore.config import Config as BotoConfig

            self._pid = os.getpid()
            self._client = boto3.session.Session().client(
                "cloudwatch",
                region_name=self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                or None,
                endpoint_url=self.endpoint_url or None,
                config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                                  connect_timeout=self.timeout, read_timeout=self.timeout,
                                  max_pool_connections=1, user_agent_extra="pulsetrace"),
            )
        return self._client

    def send(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]:
        calls = plan_calls(datums)
        for i, (metric_data, sources) in enumerate(calls):
            outcome = self._call(metric_data, deadline)
            if outcome == "sent":
                self.metrics.inc("metrics_published", len(sources), reason="api")
            elif outcome == "rejected":
                self.metrics.inc("metrics_dropped", len(sources), reason="rejected")
            else:
                # Not delivered for a passing reason: this call's data and the rest wait for the next flush.
                self.metrics.inc("metrics_send_failures", reason=outcome)
                rest: list[MetricDatum] = []
                for _, srcs in calls[i:]:
                    for s in srcs:
                        if not rest or rest[-1] is not s:
                            rest.append(s)
                return rest
        return []

    def _call(self, metric_data: list[dict[str, Any]], deadline: float) -> str:
        """``sent``, ``rejected`` or the passing reason it was not sent (``throttled``, ``unreachable`` ...)."""
        try:
            client = self._get_client()
        except Exception as exc:  # no region, a broken installation: keep the data, say why once per flush
            _log.debug("CloudWatch client unavailable: %s", type(exc).__name__)
            return "client_unavailable"
        from botocore.exceptions import BotoCoreError, ClientError

        delay = _BACKOFF_BASE
        for attempt in range(_MAX_ATTEMPTS):
            self.metrics.inc("metrics_api_calls")
            try:
                client.put_metric_data(Namespace=self.namespace, MetricData=metric_data)
                return "sent"
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if code in THROTTLE_CODES or status == 429:
                    reason = "throttled"
                elif status >= 500:
                    reason = "server_error"
                else:
                    _log.debug("PutMetricData rejected: %s", code)
                    return "rejected"
            except BotoCoreError as exc:
                # Endpoint down, timeouts, no credentials: retrying within this flush would only wait.
                _log.debug("PutMetricData failed: %s", type(exc).__name__)
                return "unreachable"
            except Exception as exc:
                _log.debug("PutMetricData failed: %s", type(exc).__name__)
                return "unreachable"
            sleep = random.uniform(delay / 2, delay)  # full-ish jitter
            if attempt + 1 >= _MAX_ATTEMPTS or time.monotonic() + sleep >= deadline:
                return reason
            self.metrics.inc("metrics_retries", reason=reason)
            time.sleep(sleep)
            delay = min(_BACKOFF_CAP, delay * 2)
        return "throttled"

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def after_fork(self) -> None:
        self._client = None
