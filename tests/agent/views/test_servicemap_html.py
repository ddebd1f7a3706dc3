"""The HTML service map rendered by headless Chromium: nodes and edges in the DOM, colours on screen.

Chromium comes from the Debian packages ``chromium`` / ``chromium-driver`` (scripts/setup.sh).
It runs with no network features and a fresh profile; the page must need nothing outside itself.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from pulsetrace.views.servicemap import ServiceGraph, build_graph
from pulsetrace.views.servicemap_html import COLOURS, render_html
from tests.agent.xray.test_xray_corpus import documents, make_tracer, server_attrs, shop_request

WIDTH, HEIGHT = 1100, 760


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run scripts/setup.sh (Debian packages chromium, chromium-driver)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def demo_graph() -> ServiceGraph:
    tracer, collect = make_tracer()
    for i in range(6):
        fail = i < 2
        shop_request(tracer, status=502 if fail else 200, gateway_status=500 if fail else 200)
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes=server_attrs("GET", "/orders", 429)):
        pass
    return build_graph(documents(collect.spans), start=0.0, end=600.0)


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw pixels) of an 8-bit RGB/RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def count_colour(pixels: bytes, bpp: int, hex_colour: str, tolerance: int = 24) -> int:
    target = bytes.fromhex(hex_colour.lstrip("#"))
    count = 0
    for i in range(0, len(pixels), bpp):
        if all(abs(pixels[i + k] - target[k]) <= tolerance for k in range(3)):
            count += 1
    return count


def test_chromium_renders_every_node_and_edge_of_the_map(tmp_path: Path) -> None:
    graph = demo_graph()
    page = tmp_path / "map.html"
    page.write_text(render_html(graph), encoding="utf-8")
    result = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<svg" in dom
    rendered_nodes = set(re.findall(r'<g class="node[^"]*" data-id="([^"]+)"', dom))
    assert rendered_nodes == set(graph.nodes)
    rendered_edges = set(re.findall(r'<g class="edge" data-source="([^"]+)" data-target="([^"]+)"', dom))
    assert rendered_edges == set(graph.edges)
    # every edge is labelled with a rate and its p99
    assert len(re.findall(r'class="edge-label"[^>]*>[0-9.]+/min · p99 [0-9.]+ ms<', dom)) == len(graph.edges)
    health = dict(re.findall(r'data-id="([^"]+)" data-type="[^"]+" data-health="([^"]+)"', dom))
    assert health["http:127.0.0.1:9000"] == "fault" and health["aws:DynamoDB"] == "ok"
    assert health["service:shop-api"] == "fault"


def test_chromium_screenshot_shows_the_health_colours(tmp_path: Path) -> None:
    graph = demo_graph()
    page = tmp_path / "map.html"
    page.write_text(render_html(graph), encoding="utf-8")
    shot = tmp_path / "map.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
                          "--hide-scrollbars", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, bpp, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    # rings: healthy arcs green, the gateway's 500s red, the 429 purple
    assert count_colour(pixels, bpp, COLOURS["ok"]) > 500
    assert count_colour(pixels, bpp, COLOURS["fault"]) > 200
    assert count_colour(pixels, bpp, COLOURS["throttle"]) > 50


def test_hostile_names_are_escaped_not_injected(tmp_path: Path) -> None:
    docs = [{"trace_id": "1-5f000000-000000000000000000000001", "id": "0000000000000001",
             "name": '<script>alert(1)</script>"', "start_time": 1.0, "end_time": 1.5,
             "subsegments": [{"id": "0000000000000002", "name": "<img src=x onerror=alert(2)>",
                              "namespace": "remote", "start_time": 1.1, "end_time": 1.2}]}]
    text = render_html(build_graph(docs))
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from anywhere


def _centres(text: str) -> dict[str, float]:
    return {nid: float(cx) for nid, cx in re.findall(
        r'data-id="([^"]+)"[^>]*>.*?<circle class="body" cx="([0-9.]+)"', text, re.S)}


def test_nodes_sit_right_of_every_caller_and_cycles_do_not_break_the_layout() -> None:
    def doc(trace: int, sid: str, name: str, parent: str | None = None,
            calls: tuple[str, ...] = ()) -> dict[str, object]:
        out: dict[str, object] = {"trace_id": f"1-5f000000-{trace:024x}", "id": sid.rjust(16, "0"), "name": name,
                                  "start_time": 1.0, "end_time": 1.1,
                                  "subsegments": [{"id": c.rjust(16, "0"), "name": "call", "namespace": "remote",
                                                   "start_time": 1.0, "end_time": 1.05} for c in calls]}
        if parent:
            out["parent_id"] = parent.rjust(16, "0")
        return out

    docs = [
        doc(1, "a1", "shop-api", calls=("c1",)), doc(1, "a2", "gateway", parent="c1"),  # client → shop → gateway
        doc(2, "b1", "gateway"),  # the clients call the gateway directly too
        doc(3, "d1", "a", calls=("c3",)), doc(3, "d2", "b", parent="c3", calls=("c4",)),
        doc(3, "d3", "a", parent="c4"),  # a → b → a: a cycle
    ]
    graph = build_graph(docs)
    assert {("service:shop-api", "service:gateway"), ("client", "service:gateway"), ("service:a", "service:b"),
            ("service:b", "service:a")} <= set(graph.edges)
    x = _centres(render_html(graph))
    assert set(x) == set(graph.nodes)
    assert x["client"] < x["service:shop-api"] < x["service:gateway"]
    assert x["service:a"] != x["service:b"]


def test_a_fifty_node_map_is_laid_out_in_bounded_columns_without_overlap() -> None:
    def doc(trace: int, sid: str, name: str, parent: str | None = None, calls: tuple[str, ...] = (),
            db: str = "") -> dict[str, object]:
        subs = [{"id": c.rjust(16, "0"), "name": f"{db}{c}@db", "namespace": "remote", "sql": {"url": "x"},
                 "start_time": 1.0, "end_time": 1.05} for c in calls]
        out: dict[str, object] = {"trace_id": f"1-5f000000-{trace:024x}", "id": sid.rjust(16, "0"), "name": name,
                                  "start_time": 1.0, "end_time": 1.1, "subsegments": subs}
        if parent:
            out["parent_id"] = parent.rjust(16, "0")
        return out

    # one service calling 45 databases, plus the client and a few services
    docs = [doc(1, "a1", "api", calls=tuple(f"t{i:02d}" for i in range(45)))]
    docs += [doc(2 + i, f"s{i}", f"svc-{i}") for i in range(3)]
    graph = build_graph(docs)
    assert len(graph.nodes) == 50
    svg = render_html(graph)
    centres = re.findall(r'<circle class="body" cx="([0-9.]+)" cy="([0-9.]+)"', svg)
    assert len(centres) == 50 and len(set(centres)) == 50  # every node has a place of its own
    height = int(re.search(r'<svg[^>]* height="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert height <= 2 * 80 + 8 * 130  # at most eight rows, whatever the fan-out
    x = _centres(svg)
    assert all(x[f"database:t{i:02d}@db"] > x["service:api"] for i in range(45))
