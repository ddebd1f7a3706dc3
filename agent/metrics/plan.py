"""The model of alarms and dashboards as code: what :func:`pulsetrace.metrics.render.build_plan` derives.

Pure data and small helpers shared by the builders (:mod:`~pulsetrace.metrics.alarms`,
:mod:`~pulsetrace.metrics.resources`, :mod:`~pulsetrace.metrics.dashboards`) and the
renderers (CloudFormation, Terraform, the API). No I/O; nothing here reads a secret.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ALERT_TIERS: tuple[str, ...] = ("critical", "warning", "business")
#: Where the region goes in a dashboard body until a renderer puts it in.
REGION_TOKEN = "__PULSETRACE_REGION__"
#: AlarmDescription's limit (PutMetricAlarm, CloudFormation, Terraform).
MAX_DESCRIPTION = 1024

Pairs = Sequence[tuple[str, str]]


@dataclass
class MetricAlarm:
    name: str
    description: str
    #: The topic tier notified, or ``None`` (a child of a composite alarm notifies no one itself).
    tier: str | None
    #: PutMetricAlarm parameters other than name, description and actions (same keys as CloudFormation).
    params: dict[str, Any]
    #: What the alarm is about (a probe, an operation, ``service``, an AWS resource): the composites' grouping.
    subject: str = ""


@dataclass
class CompositeAlarm:
    name: str
    description: str
    tier: str
    rule: str
    children: list[str]
    subject: str = ""


@dataclass
class Dashboard:
    name: str
    #: The body with :data:`REGION_TOKEN` where the region goes.
    body: dict[str, Any]


@dataclass
class Plan:
    namespace: str
    topics: dict[str, str] = field(default_factory=dict)
    metric_alarms: list[MetricAlarm] = field(default_factory=list)
    composite_alarms: list[CompositeAlarm] = field(default_factory=list)
    #: The service dashboard first, then the executive and the dependencies/resources dashboards.
    dashboards: list[Dashboard] = field(default_factory=list)

    @property
    def dashboard_name(self) -> str:
        """The service dashboard's name."""
        return self.dashboards[0].name if self.dashboards else ""

    @property
    def dashboard(self) -> dict[str, Any]:
        """The service dashboard's body."""
        return self.dashboards[0].body if self.dashboards else {}


def name_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]+", "-", text).strip("-") or "x"


def logical_id(prefix: str, name: str) -> str:
    """A template identifier for ``name``: letters and digits, unique through a short digest."""
    camel = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)
    digest = hashlib.sha1(name.encode()).hexdigest()[:6].upper()
    return f"{prefix}{camel[:200]}{digest}"


def dims(pairs: Pairs) -> list[dict[str, str]]:
    return [{"Name": n, "Value": v} for n, v in pairs]


def metric_stat(ns: str, name: str, pairs: Pairs, period: int, stat: str) -> dict[str, Any]:
    return {"Metric": {"Namespace": ns, "MetricName": name, "Dimensions": dims(pairs)}, "Period": period,
            "Stat": stat}


def fmt(x: float) -> str:
    return f"{x:.10g}"


def widget(x: int, y: int, w: int, h: int, title: str, metrics: list[Any], *, stat: str = "Average",
           view: str = "timeSeries", period: int = 60, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"title": title, "region": REGION_TOKEN, "view": view, "stat": stat, "period": period,
                             "metrics": metrics}
    if extra:
        props.update(extra)
    return {"type": "metric", "x": x, "y": y, "width": w, "height": h, "properties": props}


def text_widget(y: int, markdown: str, height: int = 1) -> dict[str, Any]:
    return {"type": "text", "x": 0, "y": y, "width": 24, "height": height, "properties": {"markdown": markdown}}
