"""``pulsetrace ui`` is safe to leave running: read-only, loopback-only or behind a token, and every
stored string shown inert. A real ``pulsetrace ui`` process is driven over HTTP and in Chromium."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode
from selenium.webdriver.common.by import By

from pulsetrace.store import LocalStore
from tests.agent.span_factory import provider
from tests.e2e.ui_support import ROOT, chromium, ui_server, wait_for

pytestmark = pytest.mark.timeout(300)

SCRIPT_NAME = "<script>window.__pwned = 1</script>"
IMG_VALUE = '<img src=x onerror="window.__pwned = 2">"\'&'
RTL = "invoice\u202egnp.exe"
CONTROL = "red\x1b[31malert\x07\x00end"
LONG = "L" * 100_000
ARABIC = "مرحبا بالعالم"


def _hostile(store: LocalStore) -> str:
    prov, collect = provider("shop-<b>api</b>")
    tracer = prov.get_tracer("t")
    with tracer.start_as_current_span(SCRIPT_NAME, kind=SpanKind.SERVER, attributes={
            "http.request.method": "POST", "url.full": "http://shop.test/x?<script>", "http.response.status_code": 500,
            "evil": IMG_VALUE, "rtl": RTL, "ctl": CONTROL, "long": LONG, "ar": ARABIC,
            "note": ARABIC, "aws.xray.annotations": ["note"]}) as root:
        with tracer.start_as_current_span(RTL, kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span(LONG, kind=SpanKind.INTERNAL):
            pass
        with tracer.start_as_current_span(CONTROL, kind=SpanKind.INTERNAL) as bad:
            try:
                raise ValueError("<script>window.__pwned = 3</script> " + RTL)
            except ValueError as exc:
                bad.record_exception(exc)
                bad.set_status(Status(StatusCode.ERROR, IMG_VALUE))
        root.set_status(Status(StatusCode.ERROR, "boom"))
    store.write_spans(collect.spans)
    return f"{root.get_span_context().trace_id:032x}"


def _big_trace(store: LocalStore, n: int = 5000) -> str:
    prov, collect = provider("batch-worker")
    tracer = prov.get_tracer("t")
    t0 = time.time_ns() - 10_000_000_000
    root = tracer.start_span("nightly.settlement", kind=SpanKind.SERVER, start_time=t0)
    from opentelemetry.trace import set_span_in_context

    ctx = set_span_in_context(root)
    for i in range(n - 1):
        child = tracer.start_span(f"settle.batch-{i}", context=ctx, start_time=t0 + i * 1_000_000)
        child.end(end_time=t0 + i * 1_000_000 + 800_000)
    root.end(end_time=t0 + n * 1_000_000)
    for i in range(0, len(collect.spans), 1000):
        store.write_spans(collect.spans[i:i + 1000])
    return f"{root.get_span_context().trace_id:032x}"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("ui-safety") / "store"
    store = LocalStore(path)
    ids = {"hostile": _hostile(store), "big": _big_trace(store)}
    store.close()
    return {"store": path, **ids}


@pytest.fixture(scope="module")
def console(filled: dict[str, Any]) -> Iterator[str]:
    with ui_server("--store", str(filled["store"])) as url:
        yield url


def _digest(store: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(f"file:{store / 'spans.db'}?mode=ro", uri=True)
    try:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        rows = hashlib.sha256(repr(conn.execute("SELECT * FROM spans ORDER BY trace_id, span_id").fetchall())
                              .encode()).hexdigest()
    finally:
        conn.close()
    return rows, tables


def test_the_console_writes_nothing(console: str, filled: dict[str, Any]) -> None:
    before = _digest(filled["store"])
    for path in ("/", "/traces", f"/traces/{filled['hostile']}", "/probes", "/api/health", "/api/traces",
                 f"/api/traces/{filled['big']}", "/api/servicemap?since=1h"):
        assert httpx.get(console + path, timeout=60).status_code == 200, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = httpx.request(method, console + "/api/traces", timeout=30)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    # the health page found no health tables, and created none
    assert _digest(filled["store"]) == before
    assert "health_sla" not in before[1]


def test_a_foreign_host_header_is_refused_on_loopback(console: str) -> None:
    r = httpx.get(console + "/api/traces", headers={"Host": "attacker.example:8082"}, timeout=30)
    assert r.status_code == 421 and "traces" not in r.text
    assert httpx.get(console + "/api/traces", headers={"Host": "localhost"}, timeout=30).status_code == 200


def test_every_answer_forbids_inline_script_and_framing(console: str) -> None:
    for path in ("/", "/static/ui.js", "/api/health", "/nope"):
        r = httpx.get(console + path, timeout=30)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_bad_requests_are_4xx_with_a_reason(console: str) -> None:
    r = httpx.get(console + "/api/traces", params={"filter": "fault AND"}, timeout=30)
    assert r.status_code == 400
    assert r.json()["column"] == 10 and r.json()["detail"].startswith("filter: expected a keyword")
    assert httpx.get(console + "/traces", params={"filter": "(("}, timeout=30).status_code == 400
    assert httpx.get(console + "/api/traces/" + "0" * 32, timeout=30).status_code == 404
    assert httpx.get(console + "/traces/not-a-trace", timeout=30).status_code == 404
    assert httpx.get(console + "/api/servicemap", params={"since": "forever"}, timeout=30).status_code == 400
    assert httpx.get(console + "/traces", params={"limit": "x", "before": "nan"}, timeout=30).status_code == 200


def test_non_loopback_listen_needs_a_token(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "ui", "--listen", "0.0.0.0:0",
                             "--store", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == ("pulsetrace: ui: 0.0.0.0 is not a loopback address: a token is required (--token T or "
                             "health.token), or listen on 127.0.0.1\n")


def test_a_token_guards_every_page_and_the_api(filled: dict[str, Any]) -> None:
    with ui_server("--store", str(filled["store"]), "--token", "s3cret-token") as url:
        assert httpx.get(url + "/api/traces", timeout=30).status_code == 401
        assert httpx.get(url + "/static/ui.css", timeout=30).status_code == 401
        assert httpx.get(url + "/api/traces", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        ok = httpx.get(url + "/api/traces", headers={"Authorization": "Bearer s3cret-token"}, timeout=30)
        assert ok.status_code == 200 and isinstance(ok.json(), list)
        # opening the console with ?token= once sets a cookie and drops the token from the address
        first = httpx.get(url + "/traces?token=s3cret-token&since=1h", timeout=30)
        assert first.status_code == 303 and first.headers["location"] == "/traces?since=1h"
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        with httpx.Client(base_url=url, cookies=first.cookies, timeout=30) as client:
            assert client.get("/traces?since=1h").status_code == 200


def test_api_shapes_are_the_cli_shapes(console: str, filled: dict[str, Any]) -> None:
    traces = httpx.get(console + "/api/traces", params={"since": "all", "limit": 10}, timeout=30).json()
    assert {t["trace_id"] for t in traces} == {filled["hostile"], filled["big"]}
    for t in traces:
        assert set(t) >= {"trace_id", "xray_trace_id", "root", "service", "start", "duration_ms", "status", "spans",
                          "tier", "kept_by"}
    one = httpx.get(console + f"/api/traces/{filled['hostile']}", timeout=30).json()
    assert one["trace_id"] == filled["hostile"]
    assert set(one["spans"][0]) >= {"span_id", "parent_span_id", "name", "kind", "service", "start", "end", "status",
                                    "attributes", "events"}
    exc = [e for s in one["spans"] for e in s["events"] if e["name"] == "exception"]
    assert exc and exc[0]["attributes"]["exception.type"] == "ValueError"
    graph = httpx.get(console + "/api/servicemap", params={"since": "1h"}, timeout=30).json()
    assert set(graph) >= {"nodes", "edges"} and {n["name"] for n in graph["nodes"]} >= {"batch-worker"}
    health = httpx.get(console + "/api/health", timeout=30).json()
    # no probe configured and none in the store: UP with nothing in it, as `pulsetrace check` says
    assert health == {"status": "UP", "stale": False, "generated_at": health["generated_at"], "probes": {}}


def test_a_5000_span_trace_is_paged(console: str, filled: dict[str, Any]) -> None:
    first = httpx.get(console + f"/traces/{filled['big']}", timeout=60)
    assert first.status_code == 200
    assert first.text.count('class="row ') == 1000
    assert 'data-rows="5000"' in first.text and "Spans 1–1000 of 5000" in first.text
    last = httpx.get(console + f"/traces/{filled['big']}?page=4", timeout=60)
    assert last.text.count('class="row ') == 1000 and "settle.batch-4998" in last.text


def test_hostile_names_and_attributes_render_inert(console: str, filled: dict[str, Any], tmp_path: Path) -> None:
    trace = filled["hostile"]
    with chromium() as browser:
        for path in ("/?since=1h", "/traces?since=all", f"/traces/{trace}"):
            browser.get(console + path)
            wait_for(lambda: browser.execute_script("return document.readyState") == "complete", what=path)
            assert browser.execute_script("return window.__pwned") is None, path
            assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img"), path
            assert "api" not in [b.text for b in browser.find_elements(By.TAG_NAME, "b")], path  # shop-<b>api</b>
            assert "shop-<b>api</b>" in browser.find_element(By.TAG_NAME, "body").text or path == "/?since=1h"
        # the trace page: the names are shown as text, the controls made visible, the long name cut
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "<script>window.__pwned = 1</script>" in body
        assert "invoice\\u202egnp.exe" in body and "\u202e" not in body
        assert "red\\u001b[31malert\\u0007\\u0000end" in body
        assert "(100,000 characters)" in body and LONG not in body
        # the span with the exception opens first; its message is text, its status message too
        details = browser.find_element(By.ID, "details").text
        assert "ValueError: <script>window.__pwned = 3</script> invoice\\u202egnp.exe" in details
        browser.get(console + f"/traces/{trace}?span=" + _span_id(console, trace, "POST", kind="server"))
        attributes = browser.find_element(By.ID, "attributes").text
        assert IMG_VALUE in attributes and ARABIC in attributes  # right-to-left text is kept, isolated
        assert browser.execute_script("return window.__pwned") is None
        browser.save_screenshot(str(tmp_path / "hostile.png"))


def _span_id(console: str, trace: str, prefix: str, kind: str) -> str:
    spans = httpx.get(console + f"/api/traces/{trace}", timeout=30).json()["spans"]
    return next(s["span_id"] for s in spans if s["kind"] == kind)


def test_a_trace_links_to_the_xray_console_in_the_configured_region(filled: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "pulsetrace.yaml"
    config.write_text("tracing:\n  xray: {region: ap-south-1}\n")
    with ui_server("--config", str(config), "--store", str(filled["store"])) as url:
        page = httpx.get(f"{url}/traces/{filled['big']}", timeout=60).text
    with ui_server("--store", str(filled["store"])) as url:  # no region, no link
        assert 'id="xray-console"' not in httpx.get(f"{url}/traces/{filled['big']}", timeout=60).text
    xray_id = f"1-{filled['big'][:8]}-{filled['big'][8:]}"
    assert (f'href="https://ap-south-1.console.aws.amazon.com/cloudwatch/home?region=ap-south-1#xray:traces/{xray_id}"'
            ' id="xray-console"') in page


def test_open_alerts_from_the_store_are_on_the_health_page(tmp_path: Path) -> None:
    from pulsetrace.alerts.book import AlertBook
    from pulsetrace.alerts.engine import OpenAlert
    from pulsetrace.alerts.model import Alert

    store = LocalStore(tmp_path / "store")
    alert = Alert(key="probe:db:down", severity="critical", title="db is DOWN <script>window.__pwned=1</script>",
                  service="shop", environment="test", source="probe:db", started=time.time() - 90,
                  value="DOWN", threshold="UP")
    # written the way the delivering process keeps them (the book), not with the table's columns by hand
    assert AlertBook(store).save([OpenAlert(alert, first_seen=alert.started, sent_at=time.time(),
                                            sent_severity="critical", channels=("oncall", "team"))])
    store.close()
    with ui_server("--store", str(tmp_path / "store")) as url:
        page = httpx.get(url + "/probes", timeout=60).text
    assert 'id="alerts"' in page and 'data-key="probe:db:down"' in page
    assert "db is DOWN &lt;script&gt;window.__pwned=1&lt;/script&gt;" in page and "<script>window" not in page
    assert "oncall, team" in page and ">firing<" in page
    with ui_server("--store", str(tmp_path / "none")) as url:  # no alerts kept, none configured: no section
        assert 'id="alerts"' not in httpx.get(url + "/probes", timeout=60).text


async def test_a_crowded_window_draws_the_newest_spans_and_says_so(filled: dict[str, Any]) -> None:
    """In process (the same ASGI app over httpx's ASGI transport): the span cap is a setting, not a flag."""
    from pulsetrace.config.schema import Config
    from pulsetrace.ui.app import UiSettings, create_app

    def client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    async with client(create_app(UiSettings(store=filled["store"], config=Config(), map_max_spans=1000))) as c:
        r = await c.get("/api/servicemap", params={"since": "1h"})
        cut = float(r.headers["x-pulsetrace-newest-spans-from"])
        assert r.json()["window"]["start"] == cut
        assert sum(n["requests"] for n in r.json()["nodes"] if n["type"] == "database") <= 1000
        assert 'id="map-cut"' in (await c.get("/", params={"since": "1h"})).text
    async with client(create_app(UiSettings(store=filled["store"], config=Config()))) as c:
        assert "x-pulsetrace-newest-spans-from" not in (await c.get("/api/servicemap?since=1h")).headers
        assert 'id="map-cut"' not in (await c.get("/?since=1h")).text
