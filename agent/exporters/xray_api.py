"""The ``xray-api`` exporter: segment documents to X-Ray's ``PutTraceSegments`` API through boto3.

For hosts with no daemon or collector beside them. Documents are encoded on this
exporter's thread and sent in calls of at most 50 documents (the API's limit) and
:data:`MAX_CALL_BYTES`. Throttling, 5xx answers, connection errors and
``UnprocessedTraceSegments`` entries that say "try again" are retried with
exponential backoff and full jitter, at most ``max_attempts`` times per call and
never past ``deadline_s`` per export; ``shutdown`` cuts a backoff short. Documents
X-Ray refuses for good (a malformed one) are counted, not retried. The region and
endpoint come from ``tracing.xray.region`` / ``tracing.xray.endpoint_url``
(``AWS_REGION`` and ``AWS_ENDPOINT_URL`` fill them). Our own API calls are never
traced: the pipeline's export threads run with instrumentation suppressed
(:mod:`pulsetrace.background`). Never raises.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.xray.segments import XRayTranslator

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

_log = logging.getLogger("pulsetrace.exporters.xray_api")

#: PutTraceSegments takes at most 50 documents per call.
MAX_DOCS_PER_CALL = 50
#: Our bound on one call's documents, well under any request-size limit.
MAX_CALL_BYTES = 1_000_000
_RETRYABLE_HINTS = ("thrott", "toomany", "limitexceeded", "internal", "unavailable", "timeout", "slowdown")
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def make_xray_client(cfg: Config, *, read_timeout: float = 5.0) -> Any:
    """A boto3 X-Ray client for ``cfg`` (region and endpoint), with botocore's own retries off."""
    import boto3
    from botocore.config import Config as BotoConfig

    xray = cfg.tracing.xray
    session = boto3.session.Session()
    return session.client(
        "xray",
        region_name=xray.region or None,
        endpoint_url=xray.endpoint_url or None,
        config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2.0,
                          read_timeout=read_timeout, user_agent_extra="pulsetrace"),
    )


def _retryable(code: str, status: int | None = None) -> bool:
    if status in _RETRYABLE_STATUS:
        return True
    lowered = code.lower()
    return any(hint in lowered for hint in _RETRYABLE_HINTS)


def _chunks(documents: Sequence[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for doc in documents:
        n = len(doc.encode("utf-8", "surrogatepass")) if not doc.isascii() else len(doc)
        if chunk and (len(chunk) >= MAX_DOCS_PER_CALL or size + n > MAX_CALL_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(doc)
        size += n
    if chunk:
        yield chunk


def _doc_id(doc: str) -> str:
    try:
        return str(json.loads(doc).get("id", ""))
    except ValueError:
        return ""


class XRayApiExporter:
    """PutTraceSegments in batches, bounded retries. Called from one thread at a time."""

    name = "xray-api"

    def __init__(self, ctx: ExporterContext, *, max_attempts: int = 5, deadline_s: float = 10.0,
                 base_backoff_s: float = 0.1, max_backoff_s: float = 2.0) -> None:
        self.config = ctx.config
        self.metrics = ctx.metrics
        self.translator = XRayTranslator.from_config(ctx.config, ctx.metrics)
        self.max_attempts = max_attempts
        self.deadline_s = deadline_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._client: Any = None
        self._stop = threading.Event()

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = make_xray_client(self.config)
        return self._client

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            documents = self.translator.encode_spans(spans)
        except Exception:
            _log.debug("X-Ray encoding failed", exc_info=True)
            self.metrics.inc("xray_send_errors", reason="encode")
            return ExportOutcome.FAILURE
        if not documents:
            return ExportOutcome.SUCCESS
        deadline = time.monotonic() + self.deadline_s
        sent = 0
        try:
            client = self._get_client()
            for chunk in _chunks(documents):
                sent += self._put(client, chunk, deadline)
        except Exception as exc:  # no region, bad endpoint, botocore surprises: count, never raise
            _log.debug("X-Ray PutTraceSegments failed: %s", exc)
            self.metrics.inc("xray_send_errors", len(documents) - sent, reason="client")
        self.metrics.inc("xray_documents_sent", sent, reason="api")
        return ExportOutcome.SUCCESS if sent else ExportOutcome.FAILURE

    def _put(self, client: Any, chunk: list[str], deadline: float) -> int:
        """Send one chunk with bounded retries; returns how many documents X-Ray took."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = chunk
        sent = 0
        attempt = 0
        while pending:
            attempt += 1
            retry: list[str] = []
            reason = ""
            try:
                response = client.put_trace_segments(TraceSegmentDocuments=pending)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = str(err.get("Code", ""))
                if _retryable(code, status):
                    retry, reason = pending, "throttled" if "thrott" in code.lower() or status == 429 else "server"
                else:
                    self.metrics.inc("xray_send_errors", len(pending), reason=f"rejected:{code or status}")
                    return sent
            except (BotoCoreError, OSError) as exc:
                _log.debug("X-Ray API unreachable: %s", exc)
                retry, reason = pending, "connection"
            else:
                unprocessed = response.get("UnprocessedTraceSegments") or []
                sent += len(pending) - len(unprocessed)
                if unprocessed:
                    by_id = {_doc_id(doc): doc for doc in pending}
                    for entry in unprocessed:
                        code = str(entry.get("ErrorCode", ""))
                        doc = by_id.get(str(entry.get("Id", "")))
                        if doc is not None and _retryable(code):
                            retry.append(doc)
                        else:
                            self.metrics.inc("xray_send_errors", reason=f"unprocessed:{code or 'unknown'}")
                    reason = "unprocessed"
            if not retry:
                return sent
            if attempt >= self.max_attempts or self._stop.is_set():
                self.metrics.inc("xray_send_errors", len(retry), reason=f"gave_up:{reason}")
                return sent
            delay = random.uniform(0, min(self.max_backoff_s, self.base_backoff_s * (2 ** (attempt - 1))))
            if time.monotonic() + delay > deadline:
                self.metrics.inc("xray_send_errors", len(retry), reason=f"gave_up:{reason}")
                return sent
            self.metrics.inc("xray_api_retries", reason=reason)
            if self._stop.wait(delay):
                self.metrics.inc("xray_send_errors", len(retry), reason="shutdown")
                return sent
            pending = retry
        return sent

    def after_fork(self) -> None:
        # boto3 clients hold connection pools that must not be shared across fork().
        self._client = None
        self._stop = threading.Event()

    def shutdown(self, timeout: float) -> None:
        self._stop.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
