"""The ``xray-udp`` exporter: segment documents to the X-Ray daemon (or an ADOT collector's
``awsxray`` receiver) over UDP.

Address from ``tracing.xray.daemon_address`` (``AWS_XRAY_DAEMON_ADDRESS`` wins, as the
configuration loader already arranges), ``HOST:PORT`` or the daemon's two-address form
``tcp:HOST:PORT udp:HOST:PORT`` (the UDP one is used). Each document goes in one
datagram: the daemon header ``{"format":"json","version":1}`` and a newline, then the
document (at most 64,000 bytes, so a datagram is never fragmented beyond what IPv4 can
carry). Encoding and sending happen on the exporter's own thread. The socket is
non-blocking and connected, so a closed port (ICMP "port unreachable") comes back as
an error on a later send: it is counted (``xray_send_errors{reason=refused}``), never
raised. Nothing here blocks for more than a few milliseconds.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from pulsetrace.exporters.base import ExporterContext, ExportOutcome
from pulsetrace.xray.segments import UDP_HEADER, XRayTranslator

_log = logging.getLogger("pulsetrace.exporters.xray_udp")

DEFAULT_DAEMON_ADDRESS = ("127.0.0.1", 2000)
#: How long one send may wait for the socket buffer to drain before the document is dropped.
_WRITABLE_WAIT_S = 0.05


def parse_daemon_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:2000`` or ``tcp:127.0.0.1:2000 udp:127.0.0.2:2001`` → the UDP ``(host, port)``.

    The same conventions as the X-Ray SDKs (whose parser reads the process environment
    itself, so it cannot be given the configured value alone). ``ValueError`` if malformed.
    """
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"invalid X-Ray daemon address {text!r}")
    chosen = parts[0]
    if len(parts) == 2:
        tagged = {p.split(":", 1)[0]: p.split(":", 1)[1] for p in parts if ":" in p}
        if "udp" not in tagged or "tcp" not in tagged:
            raise ValueError(f"invalid X-Ray daemon address {text!r}: expected 'tcp:HOST:PORT udp:HOST:PORT'")
        chosen = tagged["udp"]
    elif chosen.startswith("udp:") and chosen.count(":") >= 2:
        chosen = chosen.split(":", 1)[1]
    elif chosen.startswith("tcp:") and chosen.count(":") >= 2:
        raise ValueError(f"invalid X-Ray daemon address {text!r}: no udp: address")
    host, sep, port = chosen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid X-Ray daemon address {text!r}")
    return host, int(port)


class XRayUdpExporter:
    """Sends each X-Ray document as one UDP datagram. Called from one thread at a time."""

    name = "xray-udp"

    def __init__(self, ctx: ExporterContext) -> None:
        self.metrics = ctx.metrics
        self.address = parse_daemon_address(ctx.config.tracing.xray.daemon_address)
        self.translator = XRayTranslator.from_config(ctx.config, ctx.metrics)
        self._sock: socket.socket | None = None
        self._refusals = 0

    def _socket(self) -> socket.socket:
        if self._sock is None:
            host, port = self.address
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            # Connected: the kernel then reports ICMP "port unreachable" back to us.
            sock.connect(addr)
            self._sock = sock
        return self._sock

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def export(self, spans: Sequence[ReadableSpan]) -> ExportOutcome:
        try:
            documents = self.translator.encode_spans(spans)
        except Exception:  # the translator guards each span; this is the last line of defence
            _log.debug("X-Ray encoding failed", exc_info=True)
            self.metrics.inc("xray_send_errors", reason="encode")
            return ExportOutcome.FAILURE
        if not documents:
            return ExportOutcome.SUCCESS
        try:
            sock = self._socket()
        except OSError as exc:
            _log.debug("X-Ray daemon address %s unusable: %s", self.address, exc)
            self.metrics.inc("xray_send_errors", len(documents), reason="address")
            return ExportOutcome.FAILURE
        sent = 0
        refusals = self._refusals
        for doc in documents:
            outcome = self._send(sock, UDP_HEADER + doc.encode("utf-8", "surrogatepass"))
            if outcome == "ok":
                sent += 1
            else:
                self.metrics.inc("xray_send_errors", reason=outcome)
        self.metrics.inc("xray_documents_sent", sent, reason="udp")
        # Nobody listening, or nothing left the process: the pipeline counts the batch as lost.
        if self._refusals != refusals or sent == 0:
            return ExportOutcome.FAILURE
        return ExportOutcome.SUCCESS

    def _send(self, sock: socket.socket, datagram: bytes) -> str:
        for attempt in range(2):
            try:
                sock.send(datagram)
                return "ok"
            except ConnectionRefusedError:
                # The error belongs to an earlier datagram (ICMP arrives after the send); the
                # kernel has cleared it now, so this one may be retried once.
                self._refusals += 1
                if attempt:
                    return "refused"
                self.metrics.inc("xray_send_errors", reason="refused")
            except BlockingIOError:
                if attempt:
                    return "buffer_full"
                select.select([], [sock], [], _WRITABLE_WAIT_S)
            except OSError as exc:
                _log.debug("X-Ray datagram not sent: %s", exc)
                return "oserror"
        return "refused"

    def after_fork(self) -> None:
        # A socket shared with the parent would interleave both processes' datagrams: start anew.
        self._sock = None

    def shutdown(self, timeout: float) -> None:
        self._close()
