"""CloudWatch Embedded Metric Format: documents from metric data, and the outputs that carry them.

:func:`emf_documents` turns :class:`~pulsetrace.metrics.publisher.MetricDatum` lists into EMF
documents: one per dimension set (and timestamp), at most 100 metrics each, every
declared metric present as a root member, dimension values as root members.
A distribution is written the way the CloudWatch agent reads one
(``{"Values", "Counts", "Max", "Min", "Count", "Sum"}``), a statistic set as
``{"Max", "Min", "Count", "Sum"}``.

:class:`EmfSink` writes one JSON document per line to stdout, a file, or the CloudWatch
agent's EMF endpoint over TCP (newline-delimited, one connection kept and re-opened
after an error) or UDP (one datagram per document). It runs on the flusher thread
only, with timeouts on every socket operation; it never raises.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pulsetrace.metrics.datum import MAX_DIMENSIONS, MetricDatum
from pulsetrace.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

_log = logging.getLogger("pulsetrace.emf")

MAX_METRICS_PER_DOCUMENT = 100
MAX_VALUES_PER_METRIC = 100
#: A UDP datagram must fit in one IP packet payload.
MAX_UDP_DOCUMENT = 65_000


def _member(d: MetricDatum) -> Any:
    if d.value is not None:
        return d.value
    stats: dict[str, Any] = {"Max": d.maximum, "Min": d.minimum, "Count": d.count, "Sum": d.total}
    if d.values:
        return {"Values": list(d.values), "Counts": list(d.counts), **stats}
    return stats


def _split_values(d: MetricDatum) -> list[MetricDatum]:
    """A distribution with more than 100 distinct values becomes several (each in its own document)."""
    if len(d.values) <= MAX_VALUES_PER_METRIC:
        return [d]
    out = []
    for i in range(0, len(d.values), MAX_VALUES_PER_METRIC):
        vals = d.values[i:i + MAX_VALUES_PER_METRIC]
        cnts = d.counts[i:i + MAX_VALUES_PER_METRIC]
        count = sum(cnts)
        total = sum(v * c for v, c in zip(vals, cnts))
        out.append(MetricDatum(d.name, d.unit, d.dimensions, d.timestamp, count=count, total=total,
                               minimum=max(d.minimum, min(vals)) if i else d.minimum,
                               maximum=min(d.maximum, max(vals)) if i + MAX_VALUES_PER_METRIC < len(d.values)
                               else d.maximum, values=vals, counts=cnts))
    return out


def emf_documents(datums: Sequence[MetricDatum], namespace: str, log_group: str = "") -> list[
        tuple[dict[str, Any], list[MetricDatum]]]:
    """EMF documents for ``datums``, each with the data it carries.

    Data that share a dimension set and a timestamp share a document; a metric name
    appears once per document (a repeated one opens another document).
    """
    groups: dict[tuple[tuple[tuple[str, str], ...], int], list[list[MetricDatum]]] = {}
    for d in datums:
        for part in _split_values(d):
            dims = part.dimensions[:MAX_DIMENSIONS]
            key = (dims, int(part.timestamp * 1000))
            docs = groups.setdefault(key, [[]])
            for bucket in docs:
                if len(bucket) < MAX_METRICS_PER_DOCUMENT and all(x.name != part.name for x in bucket):
                    bucket.append(part)
                    break
            else:
                docs.append([part])
    out: list[tuple[dict[str, Any], list[MetricDatum]]] = []
    for (dims, ts_ms), docs in groups.items():
        for members in docs:
            aws: dict[str, Any] = {
                "Timestamp": ts_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [[name for name, _ in dims]],
                    "Metrics": [{"Name": m.name, "Unit": m.unit} for m in members],
                }],
            }
            if log_group:
                aws["LogGroupName"] = log_group
            doc: dict[str, Any] = {"_aws": aws}
            for name, value in dims:
                doc[name] = value
            for m in members:
                doc[m.name] = _member(m)
            out.append((doc, members))
    return out


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


class EmfSink:
    """EMF documents to ``metrics.cloudwatch.emf_output``."""

    name = "emf"

    def __init__(self, cfg: Config, metrics: SelfMetrics) -> None:
        cw = cfg.metrics.cloudwatch
        self.metrics = metrics
        self.namespace = cw.namespace
        self.output = cw.emf_output
        self.timeout = cw.timeout
        self.scheme = "stdout"
        self.address: tuple[str, int] = ("", 0)
        self.path = ""
        if self.output.startswith("file:"):
            self.scheme, self.path = "file", self.output[5:]
        elif self.output.startswith(("tcp://", "udp://")):
            self.scheme = self.output[:3]
            host, _, port = self.output[6:].rpartition(":")
            self.address = (host.strip("[]"), int(port))
        # Only the CloudWatch agent reads LogGroupName; stdout (Lambda, awslogs) must not carry it.
        self.log_group = (cw.log_group or f"{cfg.service.name}-metrics") if self.scheme in ("tcp", "udp") else ""
        self._sock: socket.socket | None = None

    # -- Sink ------------------------------------------------------------------------------------------------------

    def send(self, datums: Sequence[MetricDatum], deadline: float) -> Sequence[MetricDatum]:
        docs = emf_documents(datums, self.namespace, self.log_group)
        for i, (doc, members) in enumerate(docs):
            try:
                line = encode(doc)
            except ValueError:  # NaN or infinity: CloudWatch would reject the document
                self.metrics.drop_metrics("invalid_value", len(members))
                continue
            ok = self._write(line, deadline)
            if ok is None:  # lost for good (UDP, a closed stdout): counted, not retried
                self.metrics.drop_metrics("emf_write_failed", len(members))
                continue
            if not ok:
                rest = [m for _, ms in docs[i:] for m in ms]
                self.metrics.inc("metrics_send_failures", reason=f"emf_{self.scheme}")
                return rest
            self.metrics.inc("metrics_published", len(members), reason="emf")
        return []

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def after_fork(self) -> None:
        # The parent's socket is shared after fork(); the child opens its own.
        self._sock = None

    # -- outputs ---------------------------------------------------------------------------------------------------

    def _write(self, line: bytes, deadline: float) -> bool | None:
        """``True`` written, ``False`` retry later, ``None`` lost."""
        if self.scheme == "stdout":
            return self._write_stdout(line)
        if self.scheme == "file":
            return self._write_file(line)
        if self.scheme == "udp":
            return self._write_udp(line)
        return self._write_tcp(line, deadline)

    @staticmethod
    def _write_stdout(line: bytes) -> bool | None:
        stream = sys.stdout
        if stream is None:
            return None
        try:
            # One write call per document under the stream's own lock, so a line is never split by
            # the application's prints from other threads.
            stream.write(line.decode("utf-8"))
            stream.flush()
            return True
        except (OSError, ValueError):
            return None

    def _write_file(self, line: bytes) -> bool | None:
        try:
            # Opened per document in append mode: log rotation (rename + new file) just works, and
            # O_APPEND keeps lines from several processes whole.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            return True
        except OSError:
            _log.debug("EMF file write failed", exc_info=True)
            return False

    def _write_udp(self, line: bytes) -> bool | None:
        if len(line) > MAX_UDP_DOCUMENT:
            return None
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET,
                                           socket.SOCK_DGRAM)
                self._sock.settimeout(self.timeout)
            self._sock.sendto(line, self.address)
            return True
        except OSError:
            self.close()
            return None

    def _peer_closed(self) -> bool:
        """Whether the CloudWatch agent closed our connection (a write would seem to succeed and be lost)."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.settimeout(0.0)  # with a timeout Python would wait for data before peeking
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            try:
                sock.settimeout(self.timeout)
            except OSError:
                pass

    def _write_tcp(self, line: bytes, deadline: float) -> bool:
        if self._peer_closed():
            self.close()
        for attempt in range(2):  # a connection the agent closed is found on the first write: reconnect once
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self.address, timeout=min(self.timeout, left))
                self._sock.settimeout(min(self.timeout, max(0.01, left)))
                self._sock.sendall(line)
                return True
            except OSError:
                self.close()
                if attempt:
                    return False
        return False
