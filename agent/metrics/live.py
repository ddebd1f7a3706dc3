"""Request and business metrics for ``/metrics`` (Prometheus), across the processes of one container.

Under ``pulsetrace run`` the health server (and so ``/metrics``) lives in the supervisor while
the requests are served by the application's processes (uvicorn/gunicorn workers). Each of them
runs a :class:`LiveTotalsWriter`: every ``PERIOD`` seconds, on a background worker, it writes its
cumulative totals (the request recorder's per operation and tier, the business metrics' per
series) as one small JSON file, atomically (write, then rename), into
``<store>/live-metrics/``. The supervisor's ``/metrics`` reads every file written for it
(named with its pid) and adds them up: :func:`render_live`. A process that exits leaves its
last totals behind, so the sums never go backwards while the container runs; files of an
earlier supervisor are removed by the next one.

Names and labels follow the CloudWatch metrics: ``pulsetrace_requests_total``,
``pulsetrace_errors_total``, ``pulsetrace_faults_total`` and the histogram
``pulsetrace_latency_seconds`` with labels ``operation`` and ``tier`` (the same canonical,
budgeted operation names); a business metric ``Name`` recorded with ``count`` is the counter
``pulsetrace_business_<name>_total``, one recorded with ``metric`` the summary
``pulsetrace_business_<name>`` (``_sum``, ``_count``), labelled with its dimensions after the
same PII, id and cardinality rules. Latency buckets are the edges of the agent's own latency
histogram nearest to the usual Prometheus bounds (5 ms … 10 s), so every count is exact.

The writer never raises into the application and never writes on the request path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulsetrace.background import start_worker
from pulsetrace.forking import on_fork_in_child
from pulsetrace.metrics.datum import bucket_index, bucket_upper_ms

if TYPE_CHECKING:
    from pulsetrace.metrics.business import BusinessMetrics
    from pulsetrace.metrics.request_metrics import Recorder

_log = logging.getLogger("pulsetrace.metrics")

PERIOD = 2.0
DIRECTORY = "live-metrics"
#: The usual Prometheus latency bounds (seconds); each is replaced by the nearest edge of our histogram.
_WANTED_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: (bucket index, upper bound in seconds): a le bucket holds every bucket up to its index.


def _le_buckets() -> tuple[tuple[int, float], ...]:
    """(bucket index, upper bound in seconds) nearest to each wanted bound: exact cumulative counts."""
    out = set()
    for seconds in _WANTED_S:
        ms = seconds * 1000.0
        i = bucket_index(ms)
        best = min((i - 1, i), key=lambda k: abs(bucket_upper_ms(k) - ms))
        # rounded up, so every value of the bucket stays at or below the label
        out.add((best, math.ceil(bucket_upper_ms(best) * 1000.0) / 1e6))
    return tuple(sorted(out))


#: (bucket index, upper bound in seconds): a ``le`` bucket holds every bucket up to its index.
LE_BUCKETS = _le_buckets()
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def live_dir(store_path: str | os.PathLike[str]) -> Path:
    return Path(store_path) / DIRECTORY


def supervisor_id() -> str:
    """The pid of the ``pulsetrace run`` supervisor of this process (or this process itself)."""
    return os.environ.get("PULSETRACE_SUPERVISOR_PID") or str(os.getpid())


class LiveTotalsWriter:
    """Writes this process's cumulative totals for the supervisor's ``/metrics`` (see the module docstring)."""

    def __init__(self, directory: Path, recorder: Recorder | None, business: BusinessMetrics | None,
                 period: float = PERIOD) -> None:
        self.directory = directory
        self.recorder = recorder
        self.business = business
        self.period = period
        self._stop = threading.Event()
        self._started = False
        self._file = self._name()
        on_fork_in_child(self._after_fork)

    def _name(self) -> Path:
        return self.directory / f"{supervisor_id()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"

    def snapshot(self) -> dict[str, Any]:
        requests = []
        if self.recorder is not None:
            for (op, tier), (n, errors, faults, total_ms, buckets) in sorted(self.recorder.totals().items()):
                requests.append([op, tier, n, errors, faults, total_ms, {str(k): v for k, v in buckets.items()}])
        business = []
        if self.business is not None:
            for (name, unit, kind, dims), (calls, total) in sorted(self.business.totals().items()):
                business.append([name, unit, kind, [list(d) for d in dims], calls, total])
        return {"v": 1, "pid": os.getpid(), "written": time.time(), "requests": requests, "business": business}

    def write(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.snapshot(), separators=(",", ":")))
            os.replace(tmp, self._file)
            return True
        except Exception:  # a full or read-only disk costs /metrics freshness, never the application
            _log.debug("live metrics not written", exc_info=True)
            return False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stop = threading.Event()
        start_worker("pulsetrace-live-metrics", self._run)

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.period):
            self.write()

    def shutdown(self) -> None:
        self._stop.set()
        if self._started:
            self.write()  # the last totals stay for the supervisor

    def _after_fork(self) -> None:
        # A worker forked from a process that ran the agent: its own file, its own thread.
        self._file = self._name()
        if self._started:
            self._started = False
            self.start()


# -- the supervisor's side ----------------------------------------------------------------------------------------


def read_totals(directory: Path, supervisor: str) -> dict[str, Any]:
    """Every process's totals written for ``supervisor``, added up; files of other supervisors are removed."""
    requests: dict[tuple[str, str], list[Any]] = {}
    business: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], list[float]] = {}
    try:
        files = list(directory.glob("*.json"))
    except OSError:
        files = []
    for path in files:
        if not path.name.startswith(f"{supervisor}-"):
            _remove_stale(path)
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now, or damaged: the next scrape reads it
        for op, tier, n, errors, faults, total_ms, buckets in doc.get("requests", []):
            agg = requests.setdefault((op, tier), [0, 0, 0, 0.0, {}])
            agg[0] += n
            agg[1] += errors
            agg[2] += faults
            agg[3] += total_ms
            for k, c in buckets.items():
                agg[4][int(k)] = agg[4].get(int(k), 0) + c
        for name, unit, kind, dims, calls, total in doc.get("business", []):
            key = (name, unit, kind, tuple((str(a), str(b)) for a, b in dims))
            acc = business.setdefault(key, [0.0, 0.0])
            acc[0] += calls
            acc[1] += total
    return {"requests": requests, "business": business}


def _remove_stale(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > 60:  # an earlier run's; a current one would be fresh
            path.unlink()
    except OSError:
        pass


def _snake(name: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-zA-Z0-9_]+", "_", text).strip("_").lower() or "metric"


def _label_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, object]]) -> str:
    text = ",".join(f'{_LABEL_NAME.sub("_", k)}="{_label_value(v)}"' for k, v in pairs)
    return f"{{{text}}}" if text else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def render_live(totals: Mapping[str, Any]) -> str:
    """The exposition lines (text format 0.0.4) of :func:`read_totals`' result."""
    lines: list[str] = []
    requests: Mapping[tuple[str, str], list[Any]] = totals.get("requests", {})

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    if requests:
        for metric, index, help_text in (("pulsetrace_requests_total", 0, "Requests and business operations."),
                                         ("pulsetrace_errors_total", 1, "Errors (4xx, failed outcomes)."),
                                         ("pulsetrace_faults_total", 2, "Faults (5xx, exceptions).")):
            family(metric, "counter", help_text)
            for (op, tier), agg in sorted(requests.items()):
                lines.append(f"{metric}{_labels([('operation', op), ('tier', tier)])} {_num(agg[index])}")
        family("pulsetrace_latency_seconds", "histogram", "Latency of requests and business operations.")
        for (op, tier), (n, _e, _f, total_ms, buckets) in sorted(requests.items()):
            base = [("operation", op), ("tier", tier)]
            for index, upper_s in LE_BUCKETS:
                count = sum(c for i, c in buckets.items() if i <= index)
                lines.append(f"pulsetrace_latency_seconds_bucket{_labels([*base, ('le', repr(upper_s))])} "
                             f"{_num(count)}")
            lines.append(f"pulsetrace_latency_seconds_bucket{_labels([*base, ('le', '+Inf')])} {_num(n)}")
            lines.append(f"pulsetrace_latency_seconds_sum{_labels(base)} {_num(round(total_ms / 1000.0, 9))}")
            lines.append(f"pulsetrace_latency_seconds_count{_labels(base)} {_num(n)}")
    by_family: dict[tuple[str, str], list[tuple[tuple[tuple[str, str], ...], list[float]]]] = {}
    for (name, _unit, kind, dims), acc in sorted(totals.get("business", {}).items()):
        by_family.setdefault((name, kind), []).append((dims, acc))
    for (name, kind), series in sorted(by_family.items()):
        stem = f"pulsetrace_business_{_snake(name)}"
        if kind == "count":
            family(f"{stem}_total", "counter", f"Business count {name} (pulsetrace.count).")
            for dims, (_calls, total) in series:
                lines.append(f"{stem}_total{_labels(dims)} {_num(total)}")
        else:
            family(stem, "summary", f"Business metric {name} (pulsetrace.metric): sum and number of values.")
            for dims, (calls, total) in series:
                lines.append(f"{stem}_sum{_labels(dims)} {_num(total)}")
                lines.append(f"{stem}_count{_labels(dims)} {_num(calls)}")
    return "\n".join(lines) + ("\n" if lines else "")


def live_exposition(store_path: str | os.PathLike[str]) -> Any:
    """The callable the health server's ``/metrics`` appends: this container's request and business metrics."""
    directory = live_dir(store_path)
    me = str(os.getpid())

    def render() -> str:
        return render_live(read_totals(directory, me))

    return render

