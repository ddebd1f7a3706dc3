"""The three dashboards: service, executive, dependencies and resources (``put-dashboard`` bodies).

- **service** ``<stem>``: overview (health status, health score, revenue at risk, error
  budget), operations (requests, errors and faults, p99 per operation through SEARCH, one
  graph per ``operations`` entry), business metrics (``dashboard_metrics`` by name and
  every other business metric through SEARCH), dependencies (probe latency, availability,
  status);
- **executive** ``<stem>-executive``: health score, SLA compliance per probe (30-day
  availability against its target), revenue at risk, the business operations per minute
  and their success rate, the ``dashboard_metrics`` (revenue);
- **dependencies** ``<stem>-dependencies``: the probes in detail (latency p50/p99,
  availability 1 h and 30 d, burn rates) and the AWS resources of ``metrics.aws_resources``.

Every metric row names a series the agent (or AWS, for the resources) emits. Bodies carry
:data:`~pulsetrace.metrics.plan.REGION_TOKEN` for the region. No I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulsetrace.metrics.business import RESERVED_NAMES
from pulsetrace.metrics.plan import Dashboard, text_widget, widget
from pulsetrace.metrics.resources import resource_widgets

if TYPE_CHECKING:
    from pulsetrace.config.schema import Config


class _Layout:
    def __init__(self) -> None:
        self.widgets: list[dict[str, Any]] = []
        self.y = 0

    def text(self, markdown: str, height: int = 1) -> None:
        self.widgets.append(text_widget(self.y, markdown, height))
        self.y += height

    def row(self, items: list[dict[str, Any]]) -> None:
        """Widgets 8 wide, three to a row (their x/y are set here)."""
        for i, w in enumerate(items):
            w["x"], w["y"] = (i % 3) * 8, self.y + (i // 3) * 6
        self.widgets.extend(items)
        self.y += ((len(items) + 2) // 3) * 6

    def body(self) -> dict[str, Any]:
        return {"start": "-PT6H", "periodOverride": "inherit", "widgets": self.widgets}


def _w(title: str, metrics: list[Any], **kw: Any) -> dict[str, Any]:
    return widget(0, 0, 8, 6, title, metrics, **kw)


class _Dashboards:
    def __init__(self, cfg: Config) -> None:
        cw = cfg.metrics.cloudwatch
        self.cfg = cfg
        self.ns = cw.namespace
        self.service, self.env = cfg.service.name, cfg.service.environment
        self.base = ["Service", self.service, "Environment", self.env]
        self.probes = [p.name for p in cfg.health.probes]

    def search(self, schema: str, metric: str, stat: str, ident: str, label: str, period: int = 60) -> dict[str, Any]:
        query = (f"{{{self.ns},{schema}}} MetricName=\"{metric}\" Service=\"{self.service}\" "
                 f"Environment=\"{self.env}\"")
        return {"expression": f"SEARCH('{query}', '{stat}', {period})", "id": ident, "label": label}

    def per_probe(self, metric: str, *extra: str) -> list[Any]:
        return [[self.ns, metric, *self.base, "Probe", p, *extra] for p in self.probes] or [
            [self.ns, metric, *self.base, "Probe", "none", *extra]]

    # -- the service dashboard --------------------------------------------------------------------------------

    def service_body(self) -> dict[str, Any]:
        lay = _Layout()
        ns, base = self.ns, self.base
        lay.text(f"# {self.service} ({self.env}): overview")
        lay.row([
            _w("Health status (0 UP, 1 DEGRADED, 2 DOWN)", [[ns, "HealthStatus", *base]], stat="Maximum",
               extra={"yAxis": {"left": {"min": 0, "max": 2}}}),
            _w("Revenue at risk", self.per_probe("RevenueAtRisk"), stat="Maximum"),
            _w("Error budget remaining, 30 days (%)", self.per_probe("ErrorBudgetRemaining", "Window", "30d"),
               stat="Minimum", extra={"yAxis": {"left": {"min": 0, "max": 100}}}),
        ])
        lay.text("## Operations")
        schema = "Environment,Operation,Service"
        lay.row([
            _w("Requests by operation", [[self.search(schema, "Requests", "Sum", "r", "")]], stat="Sum"),
            _w("Errors and faults by operation", [[self.search(schema, "Errors", "Sum", "e", "errors")],
                                                  [self.search(schema, "Faults", "Sum", "f", "faults")]], stat="Sum"),
            _w("Latency p99 by operation (ms)", [[self.search(schema, "Latency", "p99", "l", "")]], stat="p99"),
        ])
        ops = []
        for op in self.cfg.metrics.cloudwatch.operations:
            od = [*base, "Operation", op]
            ops.append(_w(op, [
                [ns, "Requests", *od, {"stat": "Sum"}],
                [ns, "Errors", *od, {"stat": "Sum"}],
                [ns, "Faults", *od, {"stat": "Sum"}],
                [ns, "Latency", *od, {"stat": "p50", "yAxis": "right"}],
                [ns, "Latency", *od, {"stat": "p99", "yAxis": "right"}],
            ], stat="Sum"))
        lay.row(ops)
        lay.text("## Business metrics")
        lay.row([*self.business_widgets(), self.other_business_widget()])
        lay.text("## Dependencies")
        self.probe_row(lay)
        return lay.body()

    def business_widgets(self) -> list[dict[str, Any]]:
        out = []
        for name in self.cfg.metrics.cloudwatch.dashboard_metrics:
            # by outcome for a business_operation(value=...) metric, else all its series
            query = f"{{{self.ns}}} MetricName=\"{name}\" Service=\"{self.service}\" Environment=\"{self.env}\""
            out.append(_w(f"{name} (sum per 5 minutes)", [[{"expression": f"SEARCH('{query}', 'Sum', 300)",
                                                            "id": "b", "label": ""}]], stat="Sum", period=300))
        return out

    def other_business_widget(self) -> dict[str, Any]:
        agent = " OR ".join(f'"{n}"' for n in sorted(RESERVED_NAMES))
        query = (f"{{{self.ns}}} Service=\"{self.service}\" Environment=\"{self.env}\" "
                 f"NOT MetricName=({agent})")
        return _w("Business metrics (pulsetrace.metric, sum per 5 minutes)",
                  [[{"expression": f"SEARCH('{query}', 'Sum', 300)", "id": "m", "label": ""}]], stat="Sum",
                  period=300)

    def probe_row(self, lay: _Layout) -> None:
        if not self.probes:
            lay.text("No probes are configured (`health.probes`).", height=2)
            return
        lay.row([
            _w("Probe latency p99 (ms)", self.per_probe("ProbeLatency"), stat="p99"),
            _w("Availability, 1 hour (%)", self.per_probe("Availability", "Window", "1h"), stat="Minimum"),
            _w("Probe status (0 UP, 1 DEGRADED, 2 DOWN)", self.per_probe("ProbeStatus"), stat="Maximum"),
        ])

    # -- the executive dashboard ------------------------------------------------------------------------------

    def executive_body(self) -> dict[str, Any]:
        lay = _Layout()
        ns, base = self.ns, self.base
        cw = self.cfg.metrics.cloudwatch
        lay.text(f"# {self.service} ({self.env}): executive view")
        score = [ns, "HealthScore", *base]
        lay.row([
            _w("Health score (0-100)", [score], stat="Minimum", view="singleValue"),
            _w("Health score", [[*score, {"label": "HealthScore"}]], stat="Minimum",
               extra={"yAxis": {"left": {"min": 0, "max": 100}},
                      "annotations": {"horizontal": [{"label": "alarm", "value": cw.health_score_alarm}]}}),
            _w("Revenue at risk (now)", self.per_probe("RevenueAtRisk"), stat="Maximum", view="singleValue"),
        ])
        lay.text("## SLA compliance (30-day availability against each target)")
        sla = []
        for probe in self.cfg.health.probes:
            sla.append(_w(f"{probe.name}: target {probe.sla:g} %",
                          [[ns, "Availability", *base, "Probe", probe.name, "Window", "30d"]], stat="Minimum",
                          view="singleValue"))
        if sla:
            lay.row(sla)
        else:
            lay.text("No probes are configured (`health.probes`).", height=2)
        lay.text("## Business operations")
        rate_rows: list[Any] = []
        per_min: list[Any] = []
        for i, op in enumerate(cw.operations):
            od = [*base, "Operation", op]
            per_min.append([ns, "Requests", *od, {"label": op}])
            rate_rows += [[ns, "Requests", *od, {"id": f"r{i}", "visible": False}],
                          [ns, "Errors", *od, {"id": f"e{i}", "visible": False}],
                          [ns, "Faults", *od, {"id": f"f{i}", "visible": False}],
                          [{"expression": f"IF(r{i} > 0, 100 * (1 - (FILL(e{i}, 0) + FILL(f{i}, 0)) / r{i}), 100)",
                            "label": f"{op} success %", "id": f"s{i}"}]]
        lay.row([
            _w("Business operations per minute", per_min or [[ns, "Requests", *base]], stat="Sum"),
            _w("Business operations success rate (%)", rate_rows or [[ns, "Requests", *base]], stat="Sum",
               extra={"yAxis": {"left": {"min": 0, "max": 100}}}),
            *self.business_widgets(),
        ])
        return lay.body()

    # -- the dependencies and resources dashboard -------------------------------------------------------------

    def dependencies_body(self) -> dict[str, Any]:
        lay = _Layout()
        lay.text(f"# {self.service} ({self.env}): dependencies and AWS resources")
        lay.text("## Probes")
        self.probe_row(lay)
        if self.probes:
            lay.row([
                _w("Probe latency p50 (ms)", self.per_probe("ProbeLatency"), stat="p50"),
                _w("Availability, 30 days (%)", self.per_probe("Availability", "Window", "30d"), stat="Minimum"),
                _w("Burn rate, 1 hour", self.per_probe("BurnRate", "Window", "1h"), stat="Maximum"),
            ])
        widgets, y = resource_widgets(self.cfg.metrics.aws_resources, lay.y + 1)
        if widgets:
            lay.text("## AWS resources")
            lay.widgets.extend(widgets)
            lay.y = y
        return lay.body()


def build_dashboards(cfg: Config, stem: str) -> list[Dashboard]:
    d = _Dashboards(cfg)
    return [Dashboard(stem[:255], d.service_body()),
            Dashboard(f"{stem}-executive"[:255], d.executive_body()),
            Dashboard(f"{stem}-dependencies"[:255], d.dependencies_body())]
