"""Test support for the health tests: configs, a loopback payment gateway, a silent TCP server, certificates.

The gateway is a real HTTP(S) server (``http.server`` on a thread) whose answers the test sets:
status, delay, body. The "blackhole" accepts TCP connections and never answers, like a hung
dependency. Certificates are made in the test with ``cryptography`` (expired, near expiry, valid).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import Config


_SCRATCH: list[str] = []


def _scratch() -> str:
    """One scratch directory per test process for default stores, removed at exit."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="pulsetrace-health-test-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def health_config(probes: list[dict[str, Any]], store: Path | str | None = None, *, listen: str = "127.0.0.1:0",
                  **health: Any) -> Config:
    """A validated Config with these probes; ``listen`` may use port 0 (set after validation).

    Without ``store`` the local store is a fresh temporary directory (never ``./.pulsetrace``).
    """
    if store is None:
        store = tempfile.mkdtemp(prefix="store-", dir=_scratch())
    data: dict[str, Any] = {"health": {"probes": probes, **health}, "store": {"path": str(store)}}
    cfg = config_from_mapping(data, env={})
    return dataclasses.replace(cfg, health=dataclasses.replace(cfg.health, listen=listen))


@dataclasses.dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    body: bytes = b'{"status": "ok"}'
    content_type: str = "application/json"


class Gateway:
    """A loopback HTTP(S) server answering every request with ``self.answer``; records requests."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.answer = Answer()
        self.requests: list[dict[str, Any]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                gateway.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                a = gateway.answer
                if a.delay:
                    time.sleep(a.delay)
                self.send_response(a.status)
                self.send_header("Content-Type", a.content_type)
                self.send_header("Content-Length", str(len(a.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(a.body)

            do_GET = do_POST = do_HEAD = _reply  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # e.g. a client refusing our cert
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-gateway", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def json(self, doc: Any, status: int = 200) -> None:
        self.answer = Answer(status=status, body=json.dumps(doc).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """Accepts TCP connections and never answers (a hung dependency)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, name="test-blackhole", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def make_cert(directory: Path, *, not_before_days: float, not_after_days: float) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid from/to now + the given days (negative: past)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=not_after_days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def probe_context(**kw: Any) -> Any:
    from pulsetrace.healthchecks.base import ProbeContext
    from pulsetrace.healthchecks.heartbeats import HeartbeatBook
    from pulsetrace.healthchecks.redact import Redactor

    kw.setdefault("redactor", Redactor())
    kw.setdefault("heartbeats", HeartbeatBook())
    return ProbeContext(**kw)


def probe_cfg(**fields: Any) -> Any:
    """One validated ProbeConfig."""
    return health_config([{"name": "p", **fields}]).health.probes[0]


async def hammer(port: int, path: str = "/health", clients: int = 50, per_client: int = 100) -> list[int]:
    """``clients`` keep-alive connections each sending ``per_client`` GETs in turn; returns the status codes."""
    import asyncio

    async def one() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        codes = []
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        try:
            for _ in range(per_client):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                codes.append(int(head.split(b" ", 2)[1]))
        finally:
            writer.close()
        return codes

    results = await asyncio.gather(*(one() for _ in range(clients)))
    return [c for r in results for c in r]
