"""Logs carry the request's trace: real applications under ``pulsetrace run``, their own output read back.

Three applications written as users write them, each logging inside its requests:

- Flask under gunicorn gthread (2 forked workers), the app's own ``basicConfig``, with
  ``logging.format: json`` and ``tracing.response_header: true``;
- FastAPI under uvicorn, standard ``logging`` and structlog (``pulsetrace.structlog_processor``
  before structlog's own ``JSONRenderer``), JSON format;
- the compatibility suite's Django project under gunicorn ``--preload -w 2``: the line Django's
  own ``django.request`` logger writes for a 500, with its traceback;
- Flask under ``flask run`` with the default plain format and the app's format string
  ``%(trace_id)s %(xray_trace_id)s %(service)s``.

Asserted for every request: the log line the request wrote names the trace id that
``pulsetrace traces show`` finds for that request's server span (and ``pulsetrace traces``
lists with the same X-Ray id); where configured, the response's ``X-Amzn-Trace-Id`` and
``traceresponse`` name the same trace; no e-mail, card number or password the app logged
reaches a JSON line.
"""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.support import BIN, RunningApp, get, request_trace, start_app, stop_app
from tests.compat.test_django import project as django_project  # noqa: F401 - the Django project fixture, reused
from tests.integration.service_runner import ROOT, wait_for
from tests.servers import free_port

pytestmark = pytest.mark.timeout(240)

#: What each app logs inside a request beside its marker: none of it may reach a JSON line.
LEAKS = ("alice@example.com", "4111 1111 1111 1111", "4111111111111111", "hunter2", "bob@example.org")

FLASK_APP = """
import logging

from flask import Flask

logging.basicConfig(level=logging.INFO)          # the application's own logging set-up
log = logging.getLogger("shop.orders")
app = Flask(__name__)


@app.get("/orders/<ref>")
def orders(ref):
    log.info("order %s placed by alice@example.com with card 4111 1111 1111 1111 password=hunter2", ref,
             extra={"order_ref": ref, "email": "bob@example.org"})
    return {"ref": ref}
"""

FASTAPI_APP = """
import logging
import sys

import structlog
from fastapi import FastAPI

import pulsetrace

logging.basicConfig(level=logging.INFO)
structlog.configure(processors=[structlog.processors.add_log_level, pulsetrace.structlog_processor,
                                structlog.processors.JSONRenderer()],
                    logger_factory=structlog.PrintLoggerFactory(sys.stdout))
log = logging.getLogger("shop.api")
slog = structlog.get_logger()
app = FastAPI()


@app.get("/carts/{ref}")
async def cart(ref: str):
    log.info("cart %s for alice@example.com", ref)
    slog.info("cart viewed", marker=f"structlog-{ref}")
    return {"ref": ref}
"""

PLAIN_APP = """
import logging

from flask import Flask

logging.basicConfig(level=logging.INFO, format="PLAIN %(trace_id)s %(xray_trace_id)s %(service)s %(message)s")
log = logging.getLogger("shop.plain")
app = Flask(__name__)


@app.get("/plain/<ref>")
def plain(ref):
    log.info("served %s", ref)
    return {"ref": ref}
"""


def unique_ref(prefix: str) -> str:
    """A request marker of letters only: long digit runs could be (Luhn-valid) card numbers, and scrubbed."""
    return prefix + "".join(random.choices(string.ascii_lowercase, k=12))


def cli_json(store: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", *args, "--json", "--store", str(store)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert done.returncode == 0, (args, done.stderr[-2000:])
    return json.loads(done.stdout)


def get_with_headers(url: str) -> tuple[int, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines


def shown_trace_for(store: Path, path: str) -> str:
    """The trace id ``pulsetrace traces show`` confirms for ``path``'s server span (and ``traces`` lists)."""
    (server,) = [s for s in request_trace(store, path) if s.kind == "server"]
    shown = cli_json(store, "traces", "show", server.trace_id)
    assert any(s["kind"] == "server" and s["attributes"].get("url.path") == path for s in shown["spans"]), shown
    listed = {t["trace_id"]: t for t in cli_json(store, "traces", "--limit", "200")}
    tid = str(shown["trace_id"])
    assert listed[tid]["xray_trace_id"] == f"1-{tid[:8]}-{tid[8:]}"
    return tid


def wait_for_line(app: RunningApp, predicate: Any, what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def look() -> bool:
        found[:] = [line for line in json_lines(app.output()) if predicate(line)]
        return bool(found)

    assert wait_for(look, 20), f"no log line for {what}:\n{app.output()[-3000:]}"
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def flask_gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    root = tmp_path_factory.mktemp("logs-flask")
    (root / "shop.py").write_text(textwrap.dedent(FLASK_APP))
    port = free_port()
    app = start_app(root, "logs-flask", [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "4", "-w", "2",
                                         "-b", f"127.0.0.1:{port}", "shop:app"], port=port, cwd=root,
                    config_extra={"logging": {"format": "json"}, "tracing": {"response_header": True}})
    yield app
    stop_app(app)


@pytest.fixture(scope="module")
def fastapi_uvicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    root = tmp_path_factory.mktemp("logs-fastapi")
    (root / "api.py").write_text(textwrap.dedent(FASTAPI_APP))
    port = free_port()
    app = start_app(root, "logs-fastapi", [str(BIN / "uvicorn"), "api:app", "--port", str(port)], port=port,
                    cwd=root, config_extra={"logging": {"format": "json"}, "tracing": {"response_header": True}})
    yield app
    stop_app(app)


def test_flask_json_lines_carry_the_trace_pulsetrace_traces_shows(flask_gunicorn: RunningApp) -> None:
    for i in range(4):  # both forked workers, most likely
        ref = unique_ref(f"ref{'abcd'[i]}-")
        path = f"/orders/{ref}"
        status, headers = get_with_headers(flask_gunicorn.url + path)
        assert status == 200
        line = wait_for_line(flask_gunicorn, lambda l, ref=ref: l.get("order_ref") == ref, path)
        tid = shown_trace_for(flask_gunicorn.store, path)
        assert line["trace_id"] == tid
        assert line["xray_trace_id"] == f"1-{tid[:8]}-{tid[8:]}"
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["service"] == "logs-flask" and line["level"] == "INFO" and line["logger"] == "shop.orders"
        assert headers["x-amzn-trace-id"] == f"Root=1-{tid[:8]}-{tid[8:]};Sampled=1"
        assert headers["traceresponse"].startswith(f"00-{tid}-")
        assert headers["traceresponse"].split("-")[2] == line["span_id"]  # logged in the server span itself
        assert line["email"] == "[REDACTED]"
        dumped = json.dumps(line)
        assert not [leak for leak in LEAKS if leak in dumped], dumped


def test_no_pii_in_any_json_line_the_app_wrote(flask_gunicorn: RunningApp) -> None:
    lines = json_lines(flask_gunicorn.output())
    assert any(line.get("logger") == "shop.orders" for line in lines)
    text = "\n".join(json.dumps(line) for line in lines)
    assert not [leak for leak in LEAKS if leak in text]


def test_fastapi_logging_and_structlog_lines_carry_the_same_trace(fastapi_uvicorn: RunningApp) -> None:
    ref = unique_ref("c")
    path = f"/carts/{ref}"
    status, headers = get_with_headers(fastapi_uvicorn.url + path)
    assert status == 200
    std = wait_for_line(fastapi_uvicorn, lambda l: l.get("logger") == "shop.api" and ref in l.get("message", ""),
                        "logging")
    structured = wait_for_line(fastapi_uvicorn, lambda l: l.get("marker") == f"structlog-{ref}", "structlog")
    tid = shown_trace_for(fastapi_uvicorn.store, path)
    for line in (std, structured):
        assert line["trace_id"] == tid and line["xray_trace_id"] == f"1-{tid[:8]}-{tid[8:]}", line
        assert line["service"] == "logs-fastapi"
    assert std["span_id"] == structured["span_id"]
    assert "alice@example.com" not in json.dumps(std)
    assert headers["x-amzn-trace-id"].startswith(f"Root=1-{tid[:8]}-{tid[8:]};")


def test_plain_format_strings_name_the_trace(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(textwrap.dedent(PLAIN_APP))
    port = free_port()
    app = start_app(tmp_path, "logs-plain", [str(BIN / "flask"), "--app", "plain", "run", "--port", str(port)],
                    port=port, cwd=tmp_path)
    try:
        ref = unique_ref("p")
        path = f"/plain/{ref}"
        status, headers = get_with_headers(app.url + path)
        assert status == 200 and "x-amzn-trace-id" not in headers  # response_header is off by default
        tid = shown_trace_for(app.store, path)
        pattern = f"PLAIN {tid} 1-{tid[:8]}-{tid[8:]} logs-plain served {ref}"
        assert wait_for(lambda: pattern in app.output(), 20), app.output()[-3000:]
    finally:
        stop_app(app)


def test_django_500_line_carries_the_trace_and_the_exception(django_project: tuple[Path, dict[str, str]],  # noqa: F811 - the fixture
                                                             tmp_path: Path) -> None:
    root, env = django_project
    port = free_port()
    app = start_app(tmp_path, "logs-django", [str(BIN / "gunicorn"), "--preload", "-w", "2", "-b",
                                              f"127.0.0.1:{port}", "mysite.wsgi"], port=port, cwd=root, env=env,
                    config_extra={"logging": {"format": "json"}})
    try:
        status, _ = get(app.url + "/broken/")
        assert status == 500
        line = wait_for_line(app, lambda l: l.get("logger") == "django.request", "Django's 500")
        tid = shown_trace_for(app.store, "/broken/")
        assert line["trace_id"] == tid and line["level"] == "ERROR" and line["service"] == "logs-django"
        assert "Internal Server Error: /broken/" in line["message"]
        assert "ValueError: the ledger is inconsistent" in line["exception"]
    finally:
        stop_app(app)
