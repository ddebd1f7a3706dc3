"""The ``pulsetrace ui`` web console: a read-only Starlette app over the local store.

Pages (server-rendered with Jinja2, autoescaped; a little plain JavaScript for hover cards
and auto-refresh only): ``/`` the service map, ``/traces`` the list with an X-Ray filter
expression, ``/traces/{id}`` one trace as a waterfall, ``/probes`` health and SLA. The JSON
API under ``/api/`` serves the same data in the CLI's shapes (docs/json.md).

Safety, in the order a request meets it (:mod:`pulsetrace.ui.guard`): only GET and HEAD
exist; on a loopback listener the Host header must name loopback (a DNS-rebinding page
cannot read the console); with a token, every request carries it (``Authorization:
Bearer``, or the cookie set by opening ``/?token=...`` once); every answer carries a
Content-Security-Policy that allows no inline script, no inline style and nothing from
another origin. Nothing here writes to the store: it is opened for reading and its tables
are never created.

Never raises into the server: a store that cannot be read is a 503 page, a bad filter a
400 with the position of the error, an unknown trace a 404.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from pulsetrace.healthchecks.sla import BURN_WINDOWS
from pulsetrace.store import LocalStore
from pulsetrace.ui import health_data
from pulsetrace.ui.charts import STATUS_COLOURS, bar, line_chart, minute_strip, swatch, timeline
from pulsetrace.ui.guard import Guard
from pulsetrace.ui.text import install_filters
from pulsetrace.ui.trace_view import ROWS_PER_PAGE, default_span, span_details, waterfall, xray_console_url
from pulsetrace.views.filter import FilterSyntaxError, edge_filter, node_filter
from pulsetrace.views.filter import parse as parse_filter
from pulsetrace.views.servicemap import ServiceGraph, graph_from_store
from pulsetrace.views.servicemap_html import COLOURS, render_svg
from pulsetrace.views.trace_facts import segment_documents
from pulsetrace.views.trace_search import search_traces
from pulsetrace.views.traces import parse_trace_id, summarize, summary_json, trace_json

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config

__all__ = ["UiSettings", "create_app", "MAP_RANGES", "TRACE_RANGES"]

#: The map's and the list's time-range selector (label → seconds).
MAP_RANGES: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
TRACE_RANGES: dict[str, int] = {**MAP_RANGES, "all": 0}
MAX_LIMIT = 500
STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class UiSettings:
    store: Path
    config: Config
    token: str | None = None
    #: The listener is on a loopback address: requests must name loopback in their Host header.
    loopback: bool = True
    #: AWS region of the X-Ray console links ("" for none).
    region: str = ""
    #: Seconds between refreshes of the health page.
    refresh_s: int = 15
    #: The map draws at most this many of the window's newest spans (and says so).
    map_max_spans: int = 20_000


class _Console:
    """The route handlers; one per app. Handlers are sync: Starlette runs them on its thread pool,
    and each thread gets its own SQLite connection from the store."""

    def __init__(self, settings: UiSettings) -> None:
        self.s = settings
        self.store = LocalStore(settings.store, create=False)
        self.env = Environment(loader=PackageLoader("pulsetrace.ui", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        install_filters(self.env)
        self.env.globals.update(status_colours=STATUS_COLOURS, swatch=swatch, map_ranges=list(MAP_RANGES),
                                trace_ranges=list(TRACE_RANGES), health_ranges=list(health_data.RANGES))

    # -- helpers ---------------------------------------------------------------------------------

    def page(self, template: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(request_path=request.url.path, store=str(self.s.store),
                                                      **context)
        return HTMLResponse(body, status_code=status_code)

    def problem(self, request: Request, status_code: int, title: str, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": title, "detail": detail}, status_code=status_code)
        return self.page("error.html", request, status_code=status_code, title=title, detail=detail)

    @staticmethod
    def _choice(request: Request, name: str, choices: dict[str, int], default: str) -> str:
        value = request.query_params.get(name, default)
        return value if value in choices else default

    def _graph(self, since_s: int) -> tuple[ServiceGraph, float | None]:
        """The graph of the window, and where it really starts when the window held more than
        ``map_max_spans`` spans (the newest ones are drawn; ``None`` when all were)."""
        now = time.time()
        start = now - since_s
        if not self.store.exists():
            return ServiceGraph(start=start, end=now), None
        # The start of the map_max_spans-th newest span, through the start index: a 7-day window on
        # a busy store draws its newest spans in bounded time instead of translating all of them.
        row = self.store.connect().execute("SELECT start FROM spans ORDER BY start DESC LIMIT 1 OFFSET ?",
                                           (self.s.map_max_spans,)).fetchone()
        cut = float(row[0]) if row is not None and float(row[0]) > start else None
        graph = graph_from_store(self.store, cut if cut is not None else start, now)
        return graph, cut

    # -- the service map ----------------------------------------------------------------------------

    def map_page(self, request: Request) -> Response:
        since = self._choice(request, "since", MAP_RANGES, "15m")
        graph, cut = self._graph(MAP_RANGES[since])

        def traces_url(expr: str) -> str:
            return "/traces?" + urlencode({"filter": expr, "since": since})

        svg = render_svg(graph, node_href=lambda n: traces_url(node_filter(n.name)),
                         edge_href=lambda e: traces_url(edge_filter(graph.nodes[e.source].name,
                                                                    graph.nodes[e.target].name)))
        return self.page("map.html", request, title="Service map", since=since, graph=graph, svg=svg, cut=cut,
                         colours=COLOURS, has_store=self.store.exists())

    def api_servicemap(self, request: Request) -> Response:
        from pulsetrace.config.problems import parse_duration

        text = request.query_params.get("since", "15m")
        try:
            seconds = parse_duration(text)
        except ValueError:
            return JSONResponse({"error": "bad since", "detail": f"not a duration: {text[:50]!r}"}, status_code=400)
        if not 0 < seconds <= 30 * 86400:
            return JSONResponse({"error": "bad since", "detail": "between 1s and 30d"}, status_code=400)
        graph, cut = self._graph(int(math.ceil(seconds)))
        return JSONResponse(graph.to_json(), headers={"X-Pulsetrace-Newest-Spans-From": repr(cut)} if cut else None)

    # -- the trace list -----------------------------------------------------------------------------

    def _search(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        expr = q.get("filter", "")
        since = self._choice(request, "since", TRACE_RANGES, "1h")
        try:
            limit = max(1, min(MAX_LIMIT, int(q.get("limit", "50"))))
        except ValueError:
            limit = 50
        try:
            before = float(q["before"]) if "before" in q else None
        except ValueError:
            before = None
        if before is not None and not math.isfinite(before):
            before = None
        flt = parse_filter(expr)  # FilterSyntaxError: the caller answers 400
        now = time.time()
        window = TRACE_RANGES[since]
        page = search_traces(self.store, flt, limit=limit, since=now - window if window else None,
                             before=before) if self.store.exists() else None
        return {"expr": expr, "since": since, "limit": limit, "page": page, "before": before}

    def traces_page(self, request: Request) -> Response:
        try:
            found = self._search(request)
        except FilterSyntaxError as exc:
            expr = request.query_params.get("filter", "")
            return self.page("traces.html", request, status_code=400, title="Traces", expr=expr, error=exc,
                             since=self._choice(request, "since", TRACE_RANGES, "1h"), page=None, next_url=None)
        page = found["page"]
        next_url = None
        if page is not None and page.next_before is not None:
            next_url = "/traces?" + urlencode({"filter": found["expr"], "since": found["since"],
                                               "limit": found["limit"], "before": repr(page.next_before)})
        return self.page("traces.html", request, title="Traces", error=None, next_url=next_url, **found)

    def api_traces(self, request: Request) -> Response:
        try:
            found = self._search(request)
        except FilterSyntaxError as exc:
            return JSONResponse({"error": "filter", "message": exc.message, "column": exc.column,
                                 "detail": f"filter: {exc}"}, status_code=400)
        page = found["page"]
        items = [] if page is None else [{**summary_json(h.summary), "annotations": h.annotations()}
                                         for h in page.hits]
        headers = {}
        if page is not None:
            headers["X-Pulsetrace-Scanned"] = str(page.scanned)
            if page.next_before is not None:
                nxt = "/api/traces?" + urlencode({"filter": found["expr"], "since": found["since"],
                                                  "limit": found["limit"], "before": repr(page.next_before)})
                headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(items, headers=headers)

    # -- one trace ----------------------------------------------------------------------------------

    def _trace_spans(self, text: str) -> tuple[str, list[Any]] | None:
        parsed = parse_trace_id(text)
        if parsed is None or not parsed[1] or not self.store.exists():
            return None
        spans = self.store.trace_spans(parsed[0])
        return (parsed[0], spans) if spans else None

    def trace_page(self, request: Request) -> Response:
        raw = request.path_params["trace_id"]
        found = self._trace_spans(raw)
        if found is None:
            return self.problem(request, 404, "Trace not found", f"no trace {raw[:80]!r} in the local store")
        trace_id, spans = found
        rows, t0, total = waterfall(spans)
        try:
            page_no = max(0, int(request.query_params.get("page", "0")))
        except ValueError:
            page_no = 0
        pages = max(1, math.ceil(len(rows) / ROWS_PER_PAGE))
        page_no = min(page_no, pages - 1)
        selected_id = request.query_params.get("span") or default_span(rows)
        selected = next((s for s in spans if s.span_id == selected_id), None)
        if selected is not None and request.query_params.get("span") is None:
            # open the page that holds the span shown by default
            index = next(i for i, r in enumerate(rows) if r.span.span_id == selected.span_id)
            if "page" not in request.query_params:
                page_no = index // ROWS_PER_PAGE
        details = None
        if selected is not None:
            # Only the selected span is translated: a 5,000-span trace costs one span's translation.
            details = span_details(selected, segment_documents([selected]), spans)
        summary = summarize(spans)
        console = xray_console_url(self.s.region, summary.xray_trace_id) if self.s.region else None
        return self.page("trace.html", request, title=f"Trace {trace_id}", summary=summary,
                         rows=rows[page_no * ROWS_PER_PAGE:(page_no + 1) * ROWS_PER_PAGE], t0=t0, total=total,
                         page_no=page_no, pages=pages, row_count=len(rows), details=details,
                         selected_id=selected.span_id if selected else None, console_url=console,
                         trace_id=trace_id)

    def api_trace(self, request: Request) -> Response:
        raw = request.path_params["trace_id"]
        found = self._trace_spans(raw)
        if found is None:
            return JSONResponse({"error": "not found", "detail": f"no trace {raw[:80]!r}"}, status_code=404)
        return JSONResponse(trace_json(found[0], found[1]))

    # -- health -------------------------------------------------------------------------------------

    def _health(self, range_name: str) -> health_data.HealthPage:
        return health_data.health_page(self.store, self.s.config, time.time(), range_name)

    def probes_page(self, request: Request) -> Response:
        from pulsetrace.ui.alerts import open_alerts

        range_name = self._choice(request, "range", health_data.RANGES, "auto")
        page = self._health(range_name)
        start, end = page.start, page.now

        def timeline_for(p: health_data.ProbeHistory) -> Markup:
            return timeline([(s.start, s.end, s.status) for s in p.timeline], start, end)

        def burn_chart(p: health_data.ProbeHistory, pair: str, factor: float) -> Markup:
            points = p.burn_series.get(pair, [])
            return line_chart([("long window", "#3e4c59", [(t, a) for t, a, _ in points]),
                               ("short window", "#e07b00", [(t, b) for t, _, b in points])],
                              start, end, threshold=factor, unit="×")

        def impact_chart(p: health_data.ProbeHistory) -> Markup:
            revenue = line_chart([("revenue at risk in this range, cumulative", "#d13212",
                                    [(t, r) for t, r, _ in p.impact_series])], start, end, height=60)
            users = line_chart([("users affected", "#8a4fd6", [(t, float(u)) for t, _, u in p.impact_series])],
                               start, end, height=40)
            return Markup(revenue + users)

        return self.page("probes.html", request, title="Health", health=page, refresh_s=self.s.refresh_s,
                         alerts=open_alerts(self.store, self.s.config), timeline_for=timeline_for,
                         minute_strip=minute_strip,
                         burn_chart=burn_chart, impact_chart=impact_chart, bar=bar,
                         burn_windows=BURN_WINDOWS)

    def api_health(self, request: Request) -> Response:
        return JSONResponse(health_data.check_document(self._health("1h")))


def create_app(settings: UiSettings) -> ASGIApp:
    """The console as an ASGI app, behind its guard."""
    console = _Console(settings)

    def guarded(handler: Any) -> Any:
        def endpoint(request: Request) -> Response:
            try:
                response: Response = handler(request)
                return response
            except sqlite3.Error as exc:
                return console.problem(request, 503, "The local store cannot be read",
                                       f"{settings.store}: {exc}")
        return endpoint

    routes = [
        Route("/", guarded(console.map_page), methods=["GET", "HEAD"]),
        Route("/traces", guarded(console.traces_page), methods=["GET", "HEAD"]),
        Route("/traces/{trace_id}", guarded(console.trace_page), methods=["GET", "HEAD"]),
        Route("/probes", guarded(console.probes_page), methods=["GET", "HEAD"]),
        Route("/api/servicemap", guarded(console.api_servicemap), methods=["GET", "HEAD"]),
        Route("/api/traces", guarded(console.api_traces), methods=["GET", "HEAD"]),
        Route("/api/traces/{trace_id}", guarded(console.api_trace), methods=["GET", "HEAD"]),
        Route("/api/health", guarded(console.api_health), methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return console.problem(request, 404, "Not found", "no such page")

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    return Guard(app, token=settings.token, loopback=settings.loopback)
