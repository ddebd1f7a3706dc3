"""A local AWS Lambda Runtime API (2018-06-01), for running handlers through AWS's ``awslambdaric``.

A stand-in, and why: AWS's Runtime Interface Emulator is a Go program, and this machine has no Go
toolchain (nor may it fetch one), so this server implements the documented Runtime API itself:
``GET /2018-06-01/runtime/invocation/next`` (the event, with the ``Lambda-Runtime-Aws-Request-Id``,
``-Deadline-Ms``, ``-Invoked-Function-Arn`` and ``-Trace-Id`` headers), ``POST .../{id}/response``,
``POST .../{id}/error`` and ``POST /2018-06-01/runtime/init/error``. The runtime client, the handler
loading and the per-invocation environment (``_X_AMZN_TRACE_ID``) are AWS's own (awslambdaric).

Each ``next`` request first calls :attr:`RuntimeApi.on_next` (the tests drain the X-Ray UDP socket
and the function's stdout there), so what was sent before the runtime asked for the next event can
be told apart from what came later: that is the test of "flushed before the invocation ended".
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import free_port, wait_port

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    event: Any
    trace_header: str = ""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_s: float = 30.0
    #: Filled in by the server: the response or error the runtime posted.
    response: Any = None
    error: dict[str, Any] | None = None
    error_type_header: str = ""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class RuntimeApi:
    function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:orders"
    port: int = field(default_factory=free_port)
    on_next: Callable[[int], None] | None = None
    init_errors: list[Any] = field(default_factory=list)
    #: How many times the runtime asked for an event.
    nexts: int = 0
    _pending: queue.Queue[Invocation] = field(default_factory=queue.Queue)
    _by_id: dict[str, Invocation] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def invoke(self, invocation: Invocation) -> Invocation:
        self._by_id[invocation.request_id] = invocation
        self._pending.put(invocation)
        return invocation

    def start(self) -> RuntimeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._reply(404, b'{"errorType":"NotFound"}')
                    return
                if api.on_next is not None:
                    api.on_next(api.nexts)
                api.nexts += 1
                while True:
                    try:
                        inv = api._pending.get(timeout=0.5)
                        break
                    except queue.Empty:
                        if api._server is None:
                            return
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int((time.time() + inv.timeout_s) * 1000)),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Content-Type": "application/json",
                }
                if inv.trace_header:
                    headers["Lambda-Runtime-Trace-Id"] = inv.trace_header
                self._reply(200, json.dumps(inv.event).encode(), headers)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.append(json.loads(body or b"null"))
                    self._reply(202, b'{"status":"OK"}')
                    return
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    inv = api._by_id.get(parts[1])
                    if inv is None:
                        self._reply(400, b'{"errorType":"InvalidRequestID"}')
                        return
                    if parts[2] == "response":
                        inv.response = json.loads(body) if body else None
                    else:
                        inv.error = json.loads(body) if body else {}
                        inv.error_type_header = self.headers.get("Lambda-Runtime-Function-Error-Type", "")
                    self._reply(202, b'{"status":"OK"}')
                    inv.done.set()
                    return
                self._reply(404, b'{"errorType":"NotFound"}')

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="lambda-runtime-api", daemon=True).start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
