"""Loopback stand-ins for Discord, Slack, PagerDuty and a webhook that check every request as the service would.

Each :class:`Receiver` is a real HTTP server on 127.0.0.1 (``http.server`` on a thread). Every
request is validated against what the service documents; a request the service would refuse is
answered as the service answers it (400) and recorded in ``errors``, so a test that sends one
fails on ``assert receiver.errors == []``. The tests script the answers: ``ok``, ``429`` with
``Retry-After``, ``500``, or ``hang`` (no answer until released or a time passes).

Limits checked (from the services' documentation):

- Discord execute webhook: ``embeds`` ≤ 10; per embed title ≤ 256, description ≤ 4,096, ≤ 25
  fields with name ≤ 256 and value ≤ 1,024 (both non-empty), footer ≤ 2,048, author ≤ 256,
  all of those ≤ 6,000 together; ``color`` an integer 0..0xFFFFFF; ``timestamp`` ISO 8601;
  ``content`` ≤ 2,000; ``username`` ≤ 80; path ``/api/webhooks/ID/TOKEN``.
- Slack incoming webhook: ``text`` or ``blocks``/``attachments``; ≤ 50 blocks; header
  ``plain_text`` ≤ 150; section ``text`` ≤ 3,000 and ≤ 10 ``fields`` of ≤ 2,000; context ≤ 10
  elements; attachment ``color`` ``#RRGGBB`` (or good/warning/danger); mrkdwn with no bare
  ``<``/``>``/``&`` outside ``<http…|…>`` links and ``&amp;``-style escapes.
- PagerDuty Events API v2: ``routing_key`` 32 characters; ``event_action`` trigger/acknowledge/
  resolve; ``dedup_key`` ≤ 255 (required to resolve); trigger ``payload`` with ``summary``
  ≤ 1,024, ``source`` ≤ 255, ``severity`` critical/error/warning/info, optional ``timestamp``
  (ISO 8601), ``component``/``group``/``class`` strings, ``custom_details`` an object; 202 answer.
- Webhook: the JSON schema of docs/alerts-webhook.schema.json.
"""

from __future__ import annotations

import collections
import datetime
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SCHEMA = json.loads((ROOT / "docs" / "alerts-webhook.schema.json").read_text())
DISCORD_TOKEN = "dIsCoRd-T0ken_" + "x" * 54
SLACK_TOKEN = "sLaCkT0kenAbcdefGhijklmn"
PD_KEY = "R0utingKey0123456789abcdefABCDEF"
HOOK_TOKEN = "h00k-t0ken-Secret-9876"


def _iso(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def check_discord(path: str, body: Any) -> list[str]:
    errs: list[str] = []
    if not re.fullmatch(r"/api/webhooks/\d+/[A-Za-z0-9_\-]+(\?wait=true)?", path):
        errs.append(f"path {path!r}")
    if not isinstance(body, dict):
        return ["body is not an object"]
    embeds = body.get("embeds", [])
    if not body.get("content") and not embeds:
        errs.append("neither content nor embeds")
    if len(body.get("content", "")) > 2000:
        errs.append("content > 2000")
    if "username" in body and not 1 <= len(body["username"]) <= 80:
        errs.append("username length")
    if len(embeds) > 10:
        errs.append("more than 10 embeds")
    total = 0
    for e in embeds:
        title, desc = e.get("title", ""), e.get("description", "")
        if len(title) > 256:
            errs.append(f"title {len(title)} > 256")
        if len(desc) > 4096:
            errs.append(f"description {len(desc)} > 4096")
        fields = e.get("fields", [])
        if len(fields) > 25:
            errs.append(f"{len(fields)} fields > 25")
        for f in fields:
            if not f.get("name") or len(f["name"]) > 256:
                errs.append(f"field name {f.get('name')!r}")
            if not f.get("value") or len(f["value"]) > 1024:
                errs.append("field value empty or > 1024")
            total += len(f.get("name", "")) + len(f.get("value", ""))
        footer = (e.get("footer") or {}).get("text", "")
        if len(footer) > 2048:
            errs.append("footer > 2048")
        author = (e.get("author") or {}).get("name", "")
        if len(author) > 256:
            errs.append("author > 256")
        total += len(title) + len(desc) + len(footer) + len(author)
        color = e.get("color")
        if color is not None and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            errs.append(f"color {color!r}")
        if "timestamp" in e and not _iso(e["timestamp"]):
            errs.append("timestamp not ISO 8601")
        if "url" in e and not str(e["url"]).startswith(("http://", "https://")):
            errs.append("embed url")
        for text in (title, desc, footer):
            if any("\ud800" <= ch <= "\udfff" for ch in text):
                errs.append("lone surrogate")
    if total > 6000:
        errs.append(f"embeds total {total} > 6000")
    return errs


def _mrkdwn_ok(text: str) -> bool:
    stripped = re.sub(r"<(?:https?://|mailto:)[^<>|]+(?:\|[^<>]*)?>", "", text)
    return "<" not in stripped and ">" not in stripped and not re.search(r"&(?!amp;|lt;|gt;)", stripped)


def check_slack(path: str, body: Any) -> list[str]:
    errs: list[str] = []
    if not re.fullmatch(r"/services/T\w+/B\w+/\w+", path):
        errs.append(f"path {path!r}")
    if not isinstance(body, dict):
        return ["body is not an object"]
    if not (body.get("text") or body.get("blocks") or body.get("attachments")):
        errs.append("no text, blocks or attachments")
    block_lists = [body.get("blocks", [])] + [a.get("blocks", []) for a in body.get("attachments", [])]
    for a in body.get("attachments", []):
        colour = a.get("color", "")
        if colour and colour not in ("good", "warning", "danger") and not re.fullmatch(r"#[0-9A-Fa-f]{6}", colour):
            errs.append(f"attachment color {colour!r}")
    for blocks in block_lists:
        if len(blocks) > 50:
            errs.append("more than 50 blocks")
        for b in blocks:
            kind = b.get("type")
            if kind == "header":
                t = b.get("text", {})
                if t.get("type") != "plain_text" or not 1 <= len(t.get("text", "")) <= 150:
                    errs.append("header text")
            elif kind == "section":
                if "text" not in b and "fields" not in b:
                    errs.append("section without text or fields")
                if "text" in b:
                    t = b["text"]
                    if not 1 <= len(t.get("text", "")) <= 3000:
                        errs.append(f"section text length {len(t.get('text', ''))}")
                    if t.get("type") == "mrkdwn" and not _mrkdwn_ok(t["text"]):
                        errs.append(f"unescaped mrkdwn {t['text'][:60]!r}")
                fields = b.get("fields", [])
                if len(fields) > 10:
                    errs.append(f"{len(fields)} fields > 10")
                for f in fields:
                    if not 1 <= len(f.get("text", "")) <= 2000:
                        errs.append("field text length")
                    if f.get("type") == "mrkdwn" and not _mrkdwn_ok(f["text"]):
                        errs.append(f"unescaped mrkdwn field {f['text'][:60]!r}")
            elif kind == "context":
                elements = b.get("elements", [])
                if not 1 <= len(elements) <= 10:
                    errs.append("context elements")
                for el in elements:
                    if el.get("type") == "mrkdwn" and not _mrkdwn_ok(el.get("text", "")):
                        errs.append(f"unescaped mrkdwn context {el.get('text', '')[:60]!r}")
            else:
                errs.append(f"unexpected block type {kind!r}")
    return errs


def check_pagerduty(path: str, body: Any) -> list[str]:
    errs: list[str] = []
    if path != "/v2/enqueue":
        errs.append(f"path {path!r}")
    if not isinstance(body, dict):
        return ["body is not an object"]
    if not (isinstance(body.get("routing_key"), str) and len(body["routing_key"]) == 32):
        errs.append("routing_key must be 32 characters")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errs.append(f"event_action {action!r}")
    dedup = body.get("dedup_key")
    if dedup is not None and not (isinstance(dedup, str) and 1 <= len(dedup) <= 255):
        errs.append("dedup_key length")
    if action in ("acknowledge", "resolve") and not dedup:
        errs.append("dedup_key required to resolve")
    if action == "trigger":
        p = body.get("payload")
        if not isinstance(p, dict):
            return errs + ["payload missing"]
        if not (isinstance(p.get("summary"), str) and 1 <= len(p["summary"]) <= 1024):
            errs.append("payload.summary length")
        if not (isinstance(p.get("source"), str) and 1 <= len(p["source"]) <= 255):
            errs.append("payload.source length")
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            errs.append(f"payload.severity {p.get('severity')!r}")
        if "timestamp" in p and not _iso(p["timestamp"]):
            errs.append("payload.timestamp")
        for k in ("component", "group", "class"):
            if k in p and not (isinstance(p[k], str) and len(p[k]) <= 255):
                errs.append(f"payload.{k}")
        if "custom_details" in p and not isinstance(p["custom_details"], dict):
            errs.append("custom_details not an object")
    return errs


def check_webhook(path: str, body: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(WEBHOOK_SCHEMA)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]


CHECKS = {"discord": check_discord, "slack": check_slack, "pagerduty": check_pagerduty, "webhook": check_webhook}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Mode:
    """How to answer: ``ok``, ``429`` (with ``retry_after`` seconds), ``500`` or ``hang`` (for ``seconds``)."""

    kind: str = "ok"
    retry_after: float = 1.0
    seconds: float = 30.0


@dataclass
class Receiver:
    kind: str
    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answered: collections.Counter[str] = field(default_factory=collections.Counter)
    script: collections.deque[Mode] = field(default_factory=collections.deque)
    default: Mode = field(default_factory=Mode)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    expect_headers: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return {"discord": f"{base}/api/webhooks/112233445566778899/{DISCORD_TOKEN}",
                "slack": f"{base}/services/T0001/B0001/{SLACK_TOKEN}",
                "pagerduty": f"{base}/v2/enqueue", "webhook": f"{base}/hook"}[self.kind]

    def next_mode(self) -> Mode:
        with self.lock:
            return self.script.popleft() if self.script else self.default

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.body for r in self.requests]

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.requests) >= n:
                return self.bodies()
            time.sleep(0.05)
        raise AssertionError(f"{self.kind}: {len(self.requests)} requests, expected {n}; errors {self.errors}")

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def start_receiver(kind: str) -> Receiver:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            rec = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            mode = rec.next_mode()
            rec.answered[mode.kind] += 1
            if mode.kind == "hang":
                rec.released.wait(mode.seconds)
                try:
                    self._answer(504, b"{}")
                except OSError:
                    pass
                return
            if mode.kind == "429":
                self._answer(429, json.dumps({"message": "You are being rate limited.", "retry_after": mode.retry_after,
                                              "global": False}).encode(),
                             {"Retry-After": f"{mode.retry_after:g}", "Content-Type": "application/json"})
                return
            if mode.kind == "500":
                self._answer(500, b'{"message": "internal error"}', {"Content-Type": "application/json"})
                return
            problems: list[str] = []
            if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                problems.append("content type")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body, problems = None, problems + ["not JSON"]
            if body is not None:
                problems += CHECKS[kind](self.path, body)
            for k, v in rec.expect_headers.items():
                if self.headers.get(k) != v:
                    problems.append(f"header {k}")
            if problems:
                with rec.lock:
                    rec.errors.extend(problems)
                self._answer(400, json.dumps({"message": "Invalid request", "errors": problems}).encode())
                return
            with rec.lock:
                rec.requests.append(Received(self.path, dict(self.headers.items()), body, time.time()))
            if kind == "pagerduty":
                self._answer(202, json.dumps({"status": "success", "message": "Event processed",
                                              "dedup_key": body.get("dedup_key")}).encode(),
                             {"Content-Type": "application/json"})
            elif kind == "discord":
                self._answer(200, json.dumps({"id": "1", "type": 0, "embeds": body.get("embeds", [])}).encode(),
                             {"Content-Type": "application/json"})
            elif kind == "slack":
                self._answer(200, b"ok", {"Content-Type": "text/plain"})
            else:
                self._answer(200, b"{}", {"Content-Type": "application/json"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"receiver-{kind}", daemon=True)
    rec = Receiver(kind=kind, server=server, thread=thread)
    holder.append(rec)
    thread.start()
    return rec
