"""The service graph as one self-contained HTML page with an inline SVG map.

No scripts, no fonts, no images, no network: the page opens anywhere, including from
an air-gapped bastion. Nodes are laid out in columns by call depth (clients, then
the services they call, then what those call), sized by request count and ringed the
way the X-Ray console rings them: green for OK, yellow for errors (4xx), red for
faults (5xx), purple for throttles (429), each arc in proportion. Edges carry the
request rate and p99 latency; every node and edge has a tooltip with its numbers.
Names are escaped: a hostile span name cannot inject markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from pulsetrace.views.servicemap import CLIENT_ID, Edge, Node, ServiceGraph

COLOURS = {"ok": "#2e9f4f", "error": "#e0b100", "fault": "#d13212", "throttle": "#8a4fd6"}
#: Plain-text glyphs: a page must not depend on an emoji font being installed.
_TYPE_GLYPH = {"client": "USER", "service": "SVC", "database": "DB", "cache": "KV", "http": "HTTP", "aws": "AWS"}
_COL_W = 260
_ROW_H = 130
_MARGIN = 80


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _radius(node: Node) -> float:
    return max(18.0, min(42.0, 18.0 + 8.0 * math.log10(1 + node.stats.requests)))


def _depths(graph: ServiceGraph) -> dict[str, int]:
    """Column of each node: the longest call chain from the clients (so a service called both by
    the clients and by another service sits right of its caller). Services nobody calls start
    at 1; edges closing a cycle are ignored for the layout."""
    out_edges: dict[str, list[str]] = {}
    incoming: set[str] = set()
    for (src, dst) in graph.edges:
        out_edges.setdefault(src, []).append(dst)
        incoming.add(dst)
    roots = [n.id for n in graph.sorted_nodes() if n.id == CLIENT_ID or n.id not in incoming]
    # Depth-first from the roots, dropping back edges, leaves a DAG.
    dag: list[tuple[str, str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in roots + [n.id for n in graph.sorted_nodes()]:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            targets = out_edges.get(node, [])
            if i < len(targets):
                stack[-1] = (node, i + 1)
                nxt = targets[i]
                if state.get(nxt) == 1:
                    continue  # closes a cycle
                dag.append((node, nxt))
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                stack.pop()
    depth = {r: (0 if r == CLIENT_ID else 1) for r in roots}
    for _ in range(len(graph.nodes)):
        changed = False
        for src, dst in dag:
            if src in depth and depth[src] + 1 > depth.get(dst, -1):
                depth[dst] = depth[src] + 1
                changed = True
        if not changed:
            break
    for nid in graph.nodes:
        depth.setdefault(nid, 1)
    return depth


#: A call depth with more nodes than this is laid out as several columns side by side, so a map of
#: ~50 nodes (a service with dozens of downstream tables, queues and APIs) stays wide, not a tower.
_MAX_ROWS = 8


def _layout(graph: ServiceGraph) -> tuple[dict[str, tuple[float, float]], int, int]:
    depth = _depths(graph)
    by_depth: dict[int, list[Node]] = {}
    for node in graph.sorted_nodes():
        by_depth.setdefault(depth[node.id], []).append(node)
    columns: list[list[Node]] = []
    for d in sorted(by_depth):
        nodes = by_depth[d]
        per = -(-len(nodes) // -(-len(nodes) // _MAX_ROWS))  # evenly: 10 nodes → 5 + 5, not 8 + 2
        columns.extend(nodes[i:i + per] for i in range(0, len(nodes), per))
    tallest = max((len(c) for c in columns), default=1)
    height = _MARGIN * 2 + max(1, tallest) * _ROW_H
    width = _MARGIN * 2 + max(1, len(columns)) * _COL_W
    pos: dict[str, tuple[float, float]] = {}
    for col_index, nodes in enumerate(columns):
        top = (height - len(nodes) * _ROW_H) / 2 + _ROW_H / 2
        for i, node in enumerate(nodes):
            pos[node.id] = (_MARGIN + col_index * _COL_W + _COL_W / 2, top + i * _ROW_H)
    return pos, width, height


def health(node: Node) -> str:
    """``ok``, ``error``, ``fault`` or ``throttle``: the worst share the node has."""
    s = node.stats
    if s.faults:
        return "fault"
    if s.throttles:
        return "throttle"
    if s.errors:
        return "error"
    return "ok"


def _ring(node: Node, x: float, y: float, r: float) -> str:
    """Arcs of the ring in proportion to ok / error / fault / throttle requests."""
    s = node.stats
    total = max(1, s.requests)
    errors_only = max(0, s.errors - s.throttles)
    shares = [("fault", s.faults), ("throttle", s.throttles), ("error", errors_only),
              ("ok", max(0, total - s.faults - s.throttles - errors_only))]
    circumference = 2 * math.pi * r
    out: list[str] = []
    offset = 0.0
    for kind, count in shares:
        if count <= 0:
            continue
        length = circumference * count / total
        out.append(f'<circle class="arc arc-{kind}" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="none" '
                   f'stroke="{COLOURS[kind]}" stroke-width="7" stroke-dasharray="{length:.2f} '
                   f'{circumference - length:.2f}" stroke-dashoffset="{-offset:.2f}" '
                   f'transform="rotate(-90 {x:.1f} {y:.1f})"/>')
        offset += length
    if not out:
        out.append(f'<circle class="arc arc-ok" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="none" '
                   f'stroke="#9aa5b1" stroke-width="7"/>')
    return "".join(out)


def _fmt_ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}" if whole else "0.0"


def render_svg(graph: ServiceGraph, *, node_href: Callable[[Node], str] | None = None,
               edge_href: Callable[[Edge], str] | None = None) -> str:
    """The map as one ``<svg>`` element (every name escaped). With ``node_href``/``edge_href``
    each node and edge is a link there; each carries its numbers as ``data-`` attributes."""
    pos, width, height = _layout(graph)
    window = graph.window_s()
    parts: list[str] = []
    parts.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                 'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6b7a"/>'
                 '</marker></defs>')
    for edge in graph.sorted_edges():
        if edge.source not in pos or edge.target not in pos:
            continue
        (x1, y1), (x2, y2) = pos[edge.source], pos[edge.target]
        r1, r2 = _radius(graph.nodes[edge.source]), _radius(graph.nodes[edge.target])
        dx, dy = x2 - x1, y2 - y1
        dist = math.hypot(dx, dy) or 1.0
        sx, sy = x1 + dx / dist * (r1 + 6), y1 + dy / dist * (r1 + 6)
        ex, ey = x2 - dx / dist * (r2 + 8), y2 - dy / dist * (r2 + 8)
        s = edge.stats
        lat = s.latency()
        rate = f"{s.requests / (window / 60.0):.1f}/min" if window else f"{s.requests} req"
        label = f"{rate} · p99 {_fmt_ms(lat['p99'])}"
        colour = COLOURS["fault"] if s.faults else COLOURS["error"] if s.errors else "#5f6b7a"
        tip = (f"{graph.nodes[edge.source].name} → {graph.nodes[edge.target].name}\n{s.requests} requests, "
               f"{s.errors} errors, {s.faults} faults, {s.throttles} throttles\n"
               f"p50 {_fmt_ms(lat['p50'])}, p90 {_fmt_ms(lat['p90'])}, p99 {_fmt_ms(lat['p99'])}")
        group = (
            f'<g class="edge" data-source="{_esc(edge.source)}" data-target="{_esc(edge.target)}" '
            f'data-requests="{s.requests}" data-faults="{s.faults}" data-rate="{_esc(rate)}" '
            f'data-error-pct="{_pct(s.errors, s.requests)}" data-fault-pct="{_pct(s.faults, s.requests)}" '
            f'data-p50="{lat["p50"]}" data-p99="{lat["p99"]}"><title>{_esc(tip)}</title>'
            f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="{colour}" stroke-width="2" '
            f'marker-end="url(#arrow)"/>'
            f'<line class="hit" x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="transparent" '
            f'stroke-width="12"/>'
            f'<text class="edge-label" x="{sx + (ex - sx) * 0.5:.1f}" y="{sy + (ey - sy) * 0.5 - 6:.1f}" '
            f'text-anchor="middle">{_esc(label)}</text></g>')
        parts.append(f'<a class="edge-link" href="{_esc(edge_href(edge))}">{group}</a>' if edge_href else group)
    for node in graph.sorted_nodes():
        x, y = pos[node.id]
        r = _radius(node)
        s = node.stats
        lat = s.latency()
        state = health(node)
        rate = f"{s.requests / (window / 60.0):.1f}/min" if window else f"{s.requests} req"
        tip = (f"{node.name} ({node.type})\n{s.requests} requests, {s.errors} errors, {s.faults} faults, "
               f"{s.throttles} throttles\np50 {_fmt_ms(lat['p50'])}, p90 {_fmt_ms(lat['p90'])}, "
               f"p99 {_fmt_ms(lat['p99'])}")
        name = node.name if len(node.name) <= 34 else node.name[:33] + "…"
        group = (
            f'<g class="node node-{_esc(node.type)} health-{state}" data-id="{_esc(node.id)}" '
            f'data-type="{_esc(node.type)}" data-health="{state}" data-name="{_esc(node.name)}" '
            f'data-requests="{s.requests}" data-rate="{_esc(rate)}" data-error-pct="{_pct(s.errors, s.requests)}" '
            f'data-fault-pct="{_pct(s.faults, s.requests)}" data-p50="{lat["p50"]}" data-p99="{lat["p99"]}">'
            f'<title>{_esc(tip)}</title>'
            f'<circle class="body" cx="{x:.1f}" cy="{y:.1f}" r="{r - 4:.1f}" fill="#ffffff"/>'
            f'{_ring(node, x, y, r)}'
            f'<text class="glyph" x="{x:.1f}" y="{y + 5:.1f}" text-anchor="middle">'
            f'{_esc(_TYPE_GLYPH.get(node.type, "?"))}</text>'
            f'<text class="name" x="{x:.1f}" y="{y + r + 18:.1f}" text-anchor="middle">{_esc(name)}</text>'
            f'<text class="stats" x="{x:.1f}" y="{y + r + 34:.1f}" text-anchor="middle">'
            f'{s.requests} req · p99 {_esc(_fmt_ms(lat["p99"]))}</text></g>')
        parts.append(f'<a class="node-link" href="{_esc(node_href(node))}">{group}</a>' if node_href else group)
    summary = f"{len(graph.nodes)} nodes, {len(graph.edges)} edges, {graph.traces} traces"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" id="servicemap" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(summary)}">' + "".join(parts) + "</svg>")


def render_html(graph: ServiceGraph, title: str = "pulsetrace service map", subtitle: str = "") -> str:
    legend = "".join(f'<span class="key"><i style="background:{c}"></i>{k}</span>' for k, c in COLOURS.items())
    summary = f"{len(graph.nodes)} nodes, {len(graph.edges)} edges, {graph.traces} traces"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_esc(title)}</title><style>"
        "body{font:14px system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1f2933;background:#f5f7fa}"
        "h1{font-size:20px;margin:0 0 4px}p.sub{margin:0 0 12px;color:#52606d}"
        ".legend .key{margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;border-radius:6px;"
        "margin-right:5px;vertical-align:-1px}svg{background:#fff;border:1px solid #d9e2ec;border-radius:8px}"
        "text.name{font-weight:600;font-size:13px}text.stats,text.edge-label{font-size:11px;fill:#52606d}"
        "text{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}"
        "text.glyph{font-size:11px;font-weight:700;fill:#323f4b}"
        "</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class=\"sub\">{_esc(subtitle or summary)}</p>"
        f"<p class=\"legend\">{legend}</p>"
        + render_svg(graph) + "</body></html>\n"
    )
