"""The per-process totals behind ``/metrics``: written by each worker, added up by the supervisor."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pulsetrace.metrics.business import BusinessMetrics
from pulsetrace.metrics.live import LE_BUCKETS, LiveTotalsWriter, read_totals, render_live
from pulsetrace.metrics.request_metrics import Recorder
from pulsetrace.selfmetrics import SelfMetrics
from pulsetrace.validation import config_from_mapping

CFG = config_from_mapping({"service": {"name": "shop", "environment": "uat"},
                           "metrics": {"cloudwatch": {"mode": "emf"}}}, {})


def worker(directory: Path, latencies: list[float], revenue: float) -> LiveTotalsWriter:
    rec = Recorder(CFG, SelfMetrics())
    biz = BusinessMetrics(CFG, SelfMetrics())
    for ms in latencies:
        rec.record("GET /a", "", ms, False, ms > 1000)
    rec.collect(time.time())  # a CloudWatch flush in between must not lose the totals
    rec.record("GET /a", "", 1.0, True, False)
    biz.record("Revenue", revenue, "None", {"method": "upi"})
    writer = LiveTotalsWriter(directory, rec, biz)
    assert writer.write()
    return writer


def test_the_supervisor_adds_up_every_worker_and_the_page_parses(tmp_path: Path) -> None:
    me = str(os.getpid())
    worker(tmp_path, [3.0, 40.0, 2000.0], 10.0)
    worker(tmp_path, [7.0, 7.0], 5.5)
    (tmp_path / f"{me}-999-broken.json").write_text("{not json")
    stale = tmp_path / "1-2-old.json"
    stale.write_text("{}")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    text = render_live(read_totals(tmp_path, me))
    assert not stale.exists()  # an earlier supervisor's file
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    op = (("operation", "GET /a"), ("tier", "general"))
    assert samples[("pulsetrace_requests_total", op)] == 7
    assert samples[("pulsetrace_errors_total", op)] == 2
    assert samples[("pulsetrace_faults_total", op)] == 1
    assert samples[("pulsetrace_latency_seconds_count", op)] == 7
    assert samples[("pulsetrace_latency_seconds_sum", op)] == round((3 + 40 + 2000 + 1 + 7 + 7 + 1) / 1000, 9)
    le = {float(dict(k[1])["le"]): v for k, v in samples.items() if k[0] == "pulsetrace_latency_seconds_bucket"}
    assert le[float("inf")] == 7
    # exact cumulative counts of 1, 1, 3 | 7, 7 | 40 | 2000 ms
    bounds = sorted(le)
    assert [le[b] for b in bounds[:3]] == [3, 5, 5] and le[bounds[3]] == 6  # 5.2 ms, 9.6 ms, 24 ms, 51 ms
    assert le[bounds[8]] == 7  # 2.68 s
    assert samples[("pulsetrace_business_revenue_sum", (("method", "upi"),))] == 15.5
    assert samples[("pulsetrace_business_revenue_count", (("method", "upi"),))] == 2
    assert len(LE_BUCKETS) == 11


def test_nothing_recorded_is_an_empty_page_part(tmp_path: Path) -> None:
    assert render_live(read_totals(tmp_path / "missing", "1")) == ""
