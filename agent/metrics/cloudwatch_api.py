"""PutMetricData: metric data to CloudWatch through boto3, within the API's limits.

One call carries at most 1,000 metric data and stays under 1 MB (the size is
estimated for the most verbose wire protocol, the query protocol, so it holds for
JSON and CBOR too); a datum has at most 30 dimensions and 150 values. A throttled
call (or a 5xx) is retried with exponential backoff and jitter while the flush's
deadline allows; data that still could not be sent (throttled, endpoint down, no
credentials) go back to the publisher's bounded buffer for the next interval;
data CloudWatch rejects as invalid are dropped and counted. botocore's own retries
are off so that every retry is ours, bounded and counted.

Runs on the flusher thread only; each call runs on a helper thread (started with
instrumentation suppressed, so the call is never traced) that the flusher waits for
no longer than the flush's deadline (an endpoint that accepts and never answers
cannot hold a shutdown past its budget). The client is created on first use, lazily
(importing boto3 takes a while), and again after ``fork()``. Never raises.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pulsetrace.background import start_worker
from pulsetrace.metrics.datum import MAX_DIMENSIONS, MetricDatum
from pulsetrace.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

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
        #: A call abandoned at a deadline and maybe still running: (its thread, its outcome when it
        #: ends, the data it carries). See :meth:`_attempt` and :meth:`_settle`.
        self._abandoned: tuple[threading.Thread, list[str], list[MetricDatum]] | None = None

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
        datums = self._settle(datums, deadline)
        if self._abandoned is not None:  # the last call is still out: never two at once
            self.metrics.inc("metrics_send_failures", reason="timeout")
            return datums
        calls = plan_calls(datums)
        for i, (metric_data, sources) in enumerate(calls):
            outcome = self._call(metric_data, sources, deadline)
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

    def _settle(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]:
        """Learn how a call abandoned at an earlier deadline ended, before its data are sent again.

        Its data came back to the publisher as undelivered; if the call went through after
        all, sending them again would count every request twice, so they are left out.
        """
        abandoned = self._abandoned
        if abandoned is None:
            return datums
        helper, result, sources = abandoned
        helper.join(max(0.0, deadline - time.monotonic()))
        if helper.is_alive():
            return datums
        self._abandoned = None
        if result != ["sent"]:
            return datums
        self.metrics.inc("metrics_published", len(sources), reason="api")
        delivered = {id(d) for d in sources}
        return [d for d in datums if id(d) not in delivered]

    def _call(self, metric_data: list[dict[str, Any]], sources: list[MetricDatum], deadline: float) -> str:
        """``sent``, ``rejected`` or the passing reason it was not sent (``throttled``, ``unreachable`` ...)."""
        delay = _BACKOFF_BASE
        reason = "throttled"
        for attempt in range(_MAX_ATTEMPTS):
            outcome = self._attempt(metric_data, sources, deadline)
            if outcome == "timeout" and attempt:
                return reason  # a retry cut short by the deadline: the cause is what the server said before
            if outcome in ("sent", "rejected", "unreachable", "client_unavailable", "timeout"):
                # Endpoint down, timeouts, no credentials: retrying within this flush would only wait.
                return outcome
            reason = outcome
            sleep = random.uniform(delay / 2, delay)  # full-ish jitter
            if attempt + 1 >= _MAX_ATTEMPTS or time.monotonic() + sleep >= deadline:
                return reason
            self.metrics.inc("metrics_retries", reason=reason)
            time.sleep(sleep)
            delay = min(_BACKOFF_CAP, delay * 2)
        return reason

    def _attempt(self, metric_data: list[dict[str, Any]], sources: list[MetricDatum], deadline: float) -> str:
        """One PutMetricData call, bounded by ``deadline`` whatever the endpoint does.

        botocore's timeouts bound each socket operation, not the call, and are fixed when the
        client is made: an endpoint that accepts and never answers holds a call for the whole
        read timeout. So the call (and the lazy client creation, which imports boto3) runs on a
        helper thread joined for what is left of the deadline and abandoned after it (``timeout``);
        the helper ends on its own when botocore's timeout fires, and :meth:`_settle` learns
        its outcome before the data go out again. At most one call is in flight.
        """
        if deadline - time.monotonic() <= 0:
            return "timeout"
        result: list[str] = []
        helper = start_worker("pulsetrace-cloudwatch-call", self._put, metric_data, result)
        helper.join(max(0.0, deadline - time.monotonic()))
        if not result:
            _log.debug("PutMetricData abandoned at the flush deadline")
            self._abandoned = (helper, result, sources)
            return "timeout"
        return result[0]

    def _put(self, metric_data: list[dict[str, Any]], result: list[str]) -> None:
        """On the helper thread: one call; appends its outcome to ``result``. Never raises."""
        try:
            client = self._get_client()
        except Exception as exc:  # no region, a broken installation: keep the data, say why once per flush
            _log.debug("CloudWatch client unavailable: %s", type(exc).__name__)
            result.append("client_unavailable")
            return
        try:
            from botocore.exceptions import ClientError

            self.metrics.inc("metrics_api_calls")
            client.put_metric_data(Namespace=self.namespace, MetricData=metric_data)
            result.append("sent")
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in THROTTLE_CODES or status == 429:
                result.append("throttled")
            elif status >= 500:
                result.append("server_error")
            else:
                _log.debug("PutMetricData rejected: %s", code)
                result.append("rejected")
        except Exception as exc:  # BotoCoreError (endpoint down, timeouts, no credentials) and anything else
            _log.debug("PutMetricData failed: %s", type(exc).__name__)
            result.append("unreachable")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def after_fork(self) -> None:
        self._client = None
        self._abandoned = None  # the parent's helper thread does not exist in the child
