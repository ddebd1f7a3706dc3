"""``pulsetrace ui`` in a real headless Chromium, over a store filled by a real run of the demo.

The demo runs for 30 s with PostgreSQL stopped for 10 s of it (``--db-outage``): the shop,
the payment gateway and the RFID readers under ``pulsetrace run``, real PostgreSQL and
Redis, real traffic. Then the console is started on that store and driven through Selenium
the way a developer would: the map, a click on the payment gateway, a filter expression,
a trace's waterfall and its exception, the health page with the database's DOWN period.
What each page shows is checked against the store itself, read independently here.

Screenshots of each page go to ``$PULSETRACE_UI_SCREENSHOTS`` when it is set (the README's
images in docs/images/ were taken that way).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from selenium.webdriver.common.by import By

from pulsetrace.demo.local_servers import postgres_available, redis_available
from tests.e2e.ui_support import ROOT, chromium, ui_server, wait_for

pytestmark = pytest.mark.timeout(600)

LIST_LIMIT = 50


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (postgres_available() and redis_available()):
        pytest.fail("the demo needs PostgreSQL and Redis binaries: run scripts/setup.sh")
    store = tmp_path_factory.mktemp("ui-demo") / "store"
    result = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "demo", "--duration", "30s",
                             "--db-outage", "10s", "--store", str(store)], cwd=store.parent, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopping PostgreSQL" in result.stdout and "PostgreSQL is back" in result.stdout, result.stdout[-3000:]
    return store


@pytest.fixture(scope="module")
def console(demo_store: Path) -> Iterator[str]:
    with ui_server("--config", str(demo_store / "demo.yaml"), "--store", str(demo_store)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def shot(browser: Any, name: str, tmp_path: Path) -> None:
    """A screenshot of the page as it is, kept in $PULSETRACE_UI_SCREENSHOTS when set."""
    target = Path(os.environ.get("PULSETRACE_UI_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"ui-{name}.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _db(store: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{store / 'spans.db'}?mode=ro", uri=True)


def newest_traces(store: Path, having: str, limit: int = LIST_LIMIT) -> list[str]:
    """Trace ids whose spans satisfy the aggregate ``having``, newest (by latest span start) first."""
    with _db(store) as conn:
        rows = conn.execute(f"SELECT trace_id FROM spans GROUP BY trace_id HAVING {having} "
                            "ORDER BY max(start) DESC LIMIT ?", (limit,)).fetchall()
    return [r[0] for r in rows]


THROUGH_GATEWAY = "sum(service = 'payment-gateway') > 0"
# fault, as X-Ray marks it: a span that failed, or answered 5xx
FAULT = ("sum(status = 'error' OR coalesce(json_extract(attributes, '$.\"http.response.status_code\"'), 0) >= 500 "
         "OR coalesce(json_extract(attributes, '$.\"http.status_code\"'), 0) >= 500) > 0")


def listed(browser: Any) -> list[str]:
    return [row.get_attribute("data-trace-id") for row in browser.find_elements(By.CSS_SELECTOR, "tr.trace")]


def test_map_renders_every_node_and_edge(browser: Any, console: str, tmp_path: Path) -> None:
    graph = httpx.get(f"{console}/api/servicemap?since=15m", timeout=60).json()
    assert {n["name"] for n in graph["nodes"]} >= {"client", "shop-api", "payment-gateway"}
    assert any(n["type"] == "database" for n in graph["nodes"]) and any(n["type"] == "cache" for n in graph["nodes"])
    browser.get(console + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#servicemap g.node"), what="the map")
    nodes = {g.get_attribute("data-id"): g for g in browser.find_elements(By.CSS_SELECTOR, "#servicemap g.node")}
    assert set(nodes) == {n["id"] for n in graph["nodes"]}
    for n in graph["nodes"]:
        g = nodes[n["id"]]
        assert g.is_displayed()
        assert int(g.get_attribute("data-requests")) == n["requests"]
        # coloured as the CLI's HTML map colours it: the worst share the node has
        want = "fault" if n["faults"] else "throttle" if n["throttles"] else "error" if n["errors"] else "ok"
        assert g.get_attribute("data-health") == want
    edges = {(g.get_attribute("data-source"), g.get_attribute("data-target"))
             for g in browser.find_elements(By.CSS_SELECTOR, "#servicemap g.edge")}
    assert edges == {(e["source"], e["target"]) for e in graph["edges"]}
    # hovering a node shows its rate, error and fault shares and latency
    from selenium.webdriver import ActionChains

    ActionChains(browser).move_to_element(nodes["service:shop-api"]).perform()
    card = wait_for(lambda: (c := browser.find_element(By.ID, "hovercard")).is_displayed() and c, what="hover card")
    assert "shop-api" in card.text and "faults" in card.text and "p99" in card.text
    shot(browser, "map", tmp_path)


def test_clicking_the_payment_gateway_lists_only_traces_through_it(browser: Any, console: str, demo_store: Path,
                                                                  tmp_path: Path) -> None:
    browser.get(console + "/")
    node = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#servicemap g.node[data-name='payment-gateway']"),
                    what="the gateway node")[0]
    node.click()
    wait_for(lambda: "/traces" in browser.current_url and browser.find_elements(By.CSS_SELECTOR, "tr.trace"),
             what="the trace list")
    assert browser.find_element(By.ID, "filter").get_attribute("value") == 'service("payment-gateway")'
    got = listed(browser)
    assert got == newest_traces(demo_store, THROUGH_GATEWAY)
    assert len(got) == LIST_LIMIT  # the demo made more than one page of them
    shot(browser, "traces", tmp_path)


def test_a_filter_expression_narrows_the_list(browser: Any, console: str, demo_store: Path) -> None:
    browser.get(console + "/traces?since=1h")
    everything = wait_for(lambda: listed(browser), what="the unfiltered list")
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys('service("payment-gateway") AND fault')
    browser.find_element(By.CSS_SELECTOR, "#filter-form button").click()
    wait_for(lambda: "filter=" in browser.current_url, what="the filtered list")
    got = listed(browser)
    expected = newest_traces(demo_store, f"{THROUGH_GATEWAY} AND {FAULT}")
    assert expected, "the demo's gateway failed no request: nothing to narrow to"
    assert got == expected
    assert len(got) < len(everything) or len(expected) < LIST_LIMIT
    for row in browser.find_elements(By.CSS_SELECTOR, "tr.trace"):
        assert "status-error" in row.get_attribute("class")
    # a typo is pointed at, not a traceback
    browser.get(console + "/traces?filter=" + quote('service("payment-gateway") AND faul'))
    error = browser.find_element(By.ID, "filter-error")
    assert error.get_attribute("data-column") == "32"
    assert "unknown keyword 'faul'" in error.text and "at column 32" in error.text


def test_three_clicks_from_the_failing_gateway_to_the_exception(browser: Any, console: str, tmp_path: Path) -> None:
    browser.get(console + "/")
    # 1: the payment gateway on the map
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#servicemap g.node[data-name='payment-gateway']"),
             what="the gateway node")[0].click()
    failing = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.trace.status-error a.open"),
                       what="a failing trace through the gateway")
    # 2: a failing trace
    failing[0].click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#waterfall a.row"), what="the waterfall")
    # 3: the span that raised
    browser.find_element(By.CSS_SELECTOR, "#waterfall a.row.has-exception").click()
    exc = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#details .exception"), what="the exception")[0]
    assert "UpstreamBankTimeout" in exc.text and "acquirer did not answer" in exc.text
    assert "Traceback" in exc.find_element(By.CSS_SELECTOR, "pre.stack").text
    assert "bank.authorize" in browser.find_element(By.CSS_SELECTOR, "#details h2").text
    assert "tier critical" in browser.find_element(By.ID, "sampling").text
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "trace", tmp_path)


def test_the_waterfall_bars_are_the_spans_start_and_duration(browser: Any, console: str, demo_store: Path) -> None:
    trace_id = newest_traces(demo_store, f"{THROUGH_GATEWAY} AND count(*) >= 4", limit=1)[0]
    spans = httpx.get(f"{console}/api/traces/{trace_id}", timeout=30).json()["spans"]
    browser.get(f"{console}/traces/{trace_id}")
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#waterfall a.row"), what="the waterfall")
    assert [r.get_attribute("data-span-id") for r in rows] == [s["span_id"] for s in spans]  # tree order
    t0 = min(s["start"] for s in spans)
    total = max(s["end"] for s in spans) - t0
    for row, span in zip(rows, spans):
        bar = row.find_element(By.CSS_SELECTOR, "rect.span-bar")
        assert float(bar.get_attribute("x")) == pytest.approx((span["start"] - t0) / total * 100, abs=0.01)
        assert float(bar.get_attribute("width")) == pytest.approx(
            max(0.15, (span["end"] - span["start"]) / total * 100), abs=0.01)
        assert f"kind-{span['kind']}" in row.get_attribute("class")
        assert f"status-{span['status']}" in row.get_attribute("class")
    # a bar drawn on screen sits where its share of the time axis says
    track = rows[-1].find_element(By.CSS_SELECTOR, "svg.track")
    bar = rows[-1].find_element(By.CSS_SELECTOR, "rect.span-bar")
    left = (bar.rect["x"] - track.rect["x"]) / track.rect["width"] * 100
    assert left == pytest.approx((spans[-1]["start"] - t0) / total * 100, abs=1.5)


def test_the_health_page_shows_the_database_down_period(browser: Any, console: str, tmp_path: Path) -> None:
    browser.get(console + "/probes")  # the automatic range: the run's history, not a sliver of an hour
    db = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "section.probe[data-probe='db']"), what="db")[0]
    down = db.find_elements(By.CSS_SELECTOR, "svg.timeline rect.seg.status-DOWN")
    assert down, "no DOWN period on the db timeline"
    assert any(float(r.get_attribute("width")) > 0.5 for r in down)
    length = sum(float(r.get_attribute("data-end")) - float(r.get_attribute("data-start")) for r in down)
    assert 3 <= length <= 40, length  # PostgreSQL was stopped for 10 s (flap damping shifts the edges)
    assert db.find_elements(By.CSS_SELECTOR, "svg.minutes rect.minute-DOWN")
    assert db.find_elements(By.CSS_SELECTOR, "tr.transition.to-DOWN")
    assert db.find_elements(By.CSS_SELECTOR, "tr.transition.to-UP")
    assert "availability" in db.text and "99.9%" in db.text
    assert db.find_elements(By.CSS_SELECTOR, "div.burn figure.chart polyline")
    assert browser.find_element(By.CSS_SELECTOR, "body").get_attribute("data-refresh") == "15"
    health = httpx.get(f"{console}/api/health", timeout=30).json()
    assert set(health) >= {"status", "stale", "generated_at", "probes"}
    w = health["probes"]["db"]["sla"]["windows"]["1h"]
    assert w["availability"] is not None and w["availability"] < 99.9
    shot(browser, "health", tmp_path)


def test_the_pages_load_no_script_and_log_no_error(browser: Any, console: str) -> None:
    browser.get_log("browser")  # what earlier tests left (their deliberate 400s)
    for path in ("/", "/traces", "/probes"):
        browser.get(console + path)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, json.dumps(errors)
        scripts = [s.get_attribute("src") for s in browser.find_elements(By.CSS_SELECTOR, "script")]
        assert scripts == [console + "/static/ui.js"]
