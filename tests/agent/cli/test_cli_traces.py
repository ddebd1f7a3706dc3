"""``pulsetrace traces`` / ``traces show`` / ``status`` over a real local store, and the trace views they print."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pulsetrace.cli.main import main
from pulsetrace.store import LocalStore, StoredSpan
from pulsetrace.views.traces import build_tree, parse_trace_id, render_tree, summarize, trace_json
from tests.agent.span_factory import make_trace, provider

ROOT = Path(__file__).resolve().parents[3]
XRAY_ID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")


def two_service_trace(store: LocalStore, *, fail_downstream: bool = False) -> str:
    """shop-api (server → client call) → payment-gateway (server → db), joined by a traceparent header."""
    shop, shop_spans = provider("shop-api")
    gateway, gw_spans = provider("payment-gateway")
    shop_t, gw_t = shop.get_tracer("t"), gateway.get_tracer("t")
    with shop_t.start_as_current_span("POST /payments", kind=SpanKind.SERVER,
                                      attributes={"sampling.tier": "critical", "url.path": "/payments"}) as root:
        with shop_t.start_as_current_span("POST", kind=SpanKind.CLIENT) as client:
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers, context=set_span_in_context(client))
            ctx = TraceContextTextMapPropagator().extract(headers)
            with gw_t.start_as_current_span("POST /charge", context=ctx, kind=SpanKind.SERVER) as server:
                with gw_t.start_as_current_span("INSERT payments", kind=SpanKind.CLIENT):
                    time.sleep(0.002)
                if fail_downstream:
                    server.set_status(Status(StatusCode.ERROR, "declined"))
                    server.set_attribute("sampling.kept_by", "error")
    store.write_spans(shop_spans.spans + gw_spans.spans)
    return f"{root.get_span_context().trace_id:032x}"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    path = tmp_path / "store"
    monkeypatch.setenv("PULSETRACE_STORE", str(path))
    monkeypatch.delenv("PULSETRACE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return LocalStore(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- traces --------------------------------------------------------------------------------------


def test_traces_json_shape_and_values(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    plain = make_trace(children=1)
    store.write_spans(plain)
    time.sleep(0.01)
    paid = two_service_trace(store, fail_downstream=True)
    code, out, err = run(["traces", "--json"], capsys)
    assert code == 0 and err == ""
    items = json.loads(out)
    assert [i["trace_id"] for i in items] == [paid, f"{plain[0].context.trace_id:032x}"]  # newest first
    first = items[0]
    assert set(first) == {"trace_id", "xray_trace_id", "root", "service", "start", "duration_ms", "status", "spans",
                          "tier", "kept_by"}
    assert re.fullmatch(r"[0-9a-f]{32}", first["trace_id"])
    assert XRAY_ID.match(first["xray_trace_id"])
    assert first["xray_trace_id"].replace("1-", "", 1).replace("-", "") == first["trace_id"]
    assert first["root"] == "POST /payments" and first["service"] == "shop-api"
    assert first["spans"] == 4 and first["status"] == "error"
    assert first["tier"] == "critical" and first["kept_by"] == "error"
    assert isinstance(first["start"], float) and abs(first["start"] - time.time()) < 60
    assert first["duration_ms"] >= 2.0
    second = items[1]
    assert second["status"] == "ok" and second["tier"] is None and second["kept_by"] is None


def test_traces_limit(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(5):
        store.write_spans(make_trace(children=0))
    code, out, _ = run(["traces", "--limit", "3", "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 3


def test_traces_text_table_and_dropped_line(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    trace_id = two_service_trace(store)
    code, out, _ = run(["traces"], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["TRACE", "ID", "START", "DURATION", "SPANS", "STATUS", "TIER", "KEPT", "SERVICE",
                                "ROOT"]
    assert lines[1].startswith(trace_id) and "critical" in lines[1] and lines[1].endswith("POST /payments")
    assert not any(line.startswith("dropped spans") for line in lines)
    store.write_counters(11, {("spans_dropped", "queue_full"): 7, ("spans_exported", "local"): 4})
    LocalStore(store.dir).write_counters(12, {("spans_dropped", "export_failed:otlp"): 3})  # another process
    _, out, _ = run(["traces"], capsys)
    assert out.splitlines()[-1] == "dropped spans: 10 (queue_full 7, export_failed:otlp 3)"


def test_traces_without_a_store_is_a_message_and_exit_0(store: LocalStore,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["traces"], capsys)
    assert code == 0 and out == ""
    assert err == f"pulsetrace: no local store at {store.dir} yet: nothing recorded\n"
    code, out, _ = run(["traces", "--json"], capsys)
    assert code == 0 and json.loads(out) == []
    assert not store.dir.exists()  # reading never creates it


def test_store_location_from_flag_env_and_config(store: LocalStore, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    other = LocalStore(tmp_path / "other")
    other.write_spans(make_trace(children=0))
    _, out, _ = run(["traces", "--store", str(other.dir), "--json"], capsys)
    assert len(json.loads(out)) == 1
    monkeypatch.delenv("PULSETRACE_STORE")
    (tmp_path / "cfg.yaml").write_text(f"store: {{path: '{other.dir}'}}\n")
    _, out, _ = run(["traces", "--config", str(tmp_path / "cfg.yaml"), "--json"], capsys)
    assert len(json.loads(out)) == 1


def test_bad_config_is_one_line_per_problem_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSETRACE_STORE", raising=False)
    (tmp_path / "cfg.yaml").write_text("store: {pth: x}\n")
    code, _, err = run(["traces", "--config", str(tmp_path / "cfg.yaml")], capsys)
    assert code == 2 and err.startswith("store.pth: unknown key, did you mean 'path'?")


# -- traces show -----------------------------------------------------------------------------------


def test_show_json_shape_tree_order_and_every_id_form(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    trace_id = two_service_trace(store)
    xray = f"1-{trace_id[:8]}-{trace_id[8:]}"
    outputs = []
    for form in (trace_id, trace_id.upper(), xray, f"Root={xray};Parent=53995c3f42cd8ad8;Sampled=1", trace_id[:12]):
        code, out, err = run(["traces", "show", form, "--json"], capsys)
        assert code == 0, (form, err)
        outputs.append(json.loads(out))
    assert all(o == outputs[0] for o in outputs)
    doc = outputs[0]
    assert set(doc) == {"trace_id", "spans"} and doc["trace_id"] == trace_id
    spans = doc["spans"]
    assert [s["name"] for s in spans] == ["POST /payments", "POST", "POST /charge", "INSERT payments"]
    for s in spans:
        assert set(s) == {"span_id", "parent_span_id", "name", "kind", "service", "start", "end", "status",
                          "status_message", "attributes", "events"}
    assert spans[0]["parent_span_id"] is None
    assert [s["parent_span_id"] for s in spans[1:]] == [s["span_id"] for s in spans[:-1]]
    assert [s["service"] for s in spans] == ["shop-api", "shop-api", "payment-gateway", "payment-gateway"]
    assert spans[2]["kind"] == "server" and spans[3]["end"] >= spans[3]["start"]
    assert spans[0]["attributes"]["sampling.tier"] == "critical"


def test_show_text_is_an_indented_tree_with_durations(store: LocalStore,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    trace_id = two_service_trace(store, fail_downstream=True)
    code, out, _ = run(["traces", "show", trace_id], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {trace_id} (1-{trace_id[:8]}-{trace_id[8:]})  4 spans")
    assert "tier critical" in lines[0] and "kept by error" in lines[0]
    assert "services shop-api → payment-gateway" in lines[0]
    tree = lines[2:]
    assert tree[0].startswith("POST /payments ")
    assert tree[1].startswith("└─ POST ")
    assert tree[2].startswith("   └─ POST /charge ")
    assert tree[3].startswith("      └─ INSERT payments ")
    assert "ERROR declined" in tree[2] and "[payment-gateway]" in tree[2]
    assert re.search(r"\d+(\.\d)? (ms|µs)", tree[3])


def test_show_not_found_and_bad_ids_exit_1_with_one_line(store: LocalStore,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["traces", "show", "0" * 32], capsys)
    assert code == 1 and out == "" and err == f"pulsetrace: trace {'0' * 32} not found: no local store at {store.dir}\n"
    store.write_spans(make_trace(children=0))
    code, _, err = run(["traces", "show", "f" * 32], capsys)
    assert code == 1 and err == f"pulsetrace: trace {'f' * 32} not found in {store.dir}\n"
    code, _, err = run(["traces", "show", "not-an-id"], capsys)
    assert code == 1 and err.startswith("pulsetrace: not a trace id: 'not-an-id'") and err.count("\n") == 1
    code, _, err = run(["traces", "show", "abc"], capsys)
    assert code == 1 and "too short" in err


def test_show_ambiguous_prefix(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        store.write_spans(make_trace(children=0))
    prefix = store.recent_trace_ids(1)[0][:6]  # X-Ray ids made in the same second share 8 digits
    code, _, err = run(["traces", "show", prefix], capsys)
    assert code == 1 and "ambiguous" in err


# -- status --------------------------------------------------------------------------------------------


def test_status_sums_counters_over_processes(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.write_spans(make_trace(children=2))
    store.write_counters(1, {("spans_exported", "local"): 3, ("spans_dropped", "queue_full"): 2})
    LocalStore(store.dir).write_counters(2, {("spans_exported", "local"): 5, ("spans_dropped", "queue_full"): 1,
                                             ("spans_exported", "otlp"): 8})
    code, out, _ = run(["status", "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["exists"] is True and info["spans"] == 3 and info["processes"] == 2
    assert info["exported"] == {"local": 8, "otlp": 8} and info["dropped"] == {"queue_full": 3}
    assert info["store"] == str(store.dir.resolve()) and info["size_bytes"] > 0
    assert info["oldest"] <= info["newest"]
    code, out, _ = run(["status"], capsys)
    assert "dropped    queue_full 3" in out and "processes  2 reported" in out


def test_status_without_a_store(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["status", "--json"], capsys)
    assert code == 0 and json.loads(out)["exists"] is False
    code, out, _ = run(["status"], capsys)
    assert code == 0 and "not created yet" in out


def test_corrupt_store_is_one_line_exit_1(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.dir.mkdir(parents=True)
    store.db_path.write_bytes(b"garbage" * 1000)
    for argv in (["traces"], ["traces", "show", "a" * 32]):
        code, out, err = run(argv, capsys)
        assert code == 1 and err.startswith("pulsetrace: cannot read the local store") and err.count("\n") == 1
    # status reports it (the agent moves it aside at its next write) rather than failing
    code, out, err = run(["status", "--json"], capsys)
    health = json.loads(out)["store_health"]
    assert code == 0 and health["status"] == "unwritable" and health["detail"].startswith("corrupt:")
    assert store.db_path.read_bytes() == b"garbage" * 1000  # a reader never moves anything


def test_cli_in_a_subprocess_reads_while_a_service_writes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PULSETRACE_STORE": str(store.dir)}
    env.pop("PULSETRACE_CONFIG", None)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r)\n"
        "from pulsetrace.store import LocalStore\n"
        "from tests.agent.span_factory import make_trace\n"
        "s = LocalStore(%r)\n"
        "for _ in range(300): s.write_spans(make_trace(children=3))\n") % (str(ROOT), str(store.dir))], env=env)
    try:
        for _ in range(3):
            proc = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "traces", "--json", "--limit", "5"], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr
            assert len(json.loads(proc.stdout)) <= 5
    finally:
        assert writer.wait(60) == 0
    proc = subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", "status", "--json"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert json.loads(proc.stdout)["spans"] == 1200


# -- the views ----------------------------------------------------------------------------------------


def stored(span_id: str, parent: str | None, start: float, end: float, name: str = "",
           status: str = "ok", attrs: dict[str, object] | None = None) -> StoredSpan:
    return StoredSpan(trace_id="a" * 32, span_id=span_id, parent_span_id=parent, name=name or span_id,
                      kind="internal", service="svc", start=start, end=end, status=status, status_message=None,
                      attributes=attrs or {}, events=[], resource={})


def test_parse_trace_id_forms() -> None:
    tid = "6b0429fe63cd2b7fe77a552d3473b011"
    assert parse_trace_id(tid.upper()) == (tid, True)
    assert parse_trace_id("1-6b0429fe-63cd2b7fe77a552d3473b011") == (tid, True)
    assert parse_trace_id("Root=1-6b0429fe-63cd2b7fe77a552d3473b011;Parent=1;Sampled=0") == (tid, True)
    assert parse_trace_id("6b0429") == ("6b0429", False)
    assert parse_trace_id("1-6b0429fe-63cd") is None and parse_trace_id("xyz") is None
    assert parse_trace_id(tid + "0") is None


def test_summary_root_is_the_parentless_span_or_the_earliest_orphan() -> None:
    spans = [stored("b", "a", 1.1, 1.5), stored("a", None, 1.0, 2.0, name="root"), stored("c", "b", 1.2, 1.3)]
    assert summarize(spans).root == "root"
    continued = [stored("x", "remote", 5.0, 6.0, name="continued"), stored("y", "x", 5.5, 5.6)]
    s = summarize(continued)
    assert s.root == "continued" and s.duration_ms == pytest.approx(1000.0) and s.spans == 2


def test_summary_tier_from_root_and_kept_by_from_any_span() -> None:
    spans = [stored("a", None, 0, 1, attrs={"sampling.tier": "business"}),
             stored("b", "a", 0, 1, attrs={"sampling.tier": "general", "sampling.kept_by": "slow"})]
    s = summarize(spans)
    assert s.tier == "business" and s.kept_by == "slow"
    odd = summarize([stored("a", None, 0, 1, attrs={"sampling.kept_by": "whim"})])
    assert odd.kept_by is None and odd.tier is None


def test_tree_survives_orphans_cycles_and_deep_chains() -> None:
    orphan = [stored("a", None, 0, 3), stored("b", "a", 1, 2), stored("z", "missing", 0.5, 0.6)]
    assert [n.span.span_id for n in build_tree(orphan)] == ["a", "z"]
    cycle = [stored("p", "q", 0, 1), stored("q", "p", 0.1, 0.5)]
    lines = render_tree(cycle)
    assert len(lines) == 2  # each span exactly once
    assert len(trace_json("a" * 32, cycle)["spans"]) == 2
    deep = [stored(f"s{i}", f"s{i - 1}" if i else None, i, 10_000) for i in range(5000)]
    lines = render_tree(deep, bars=False)
    assert len(lines) == 5000 and lines[0].startswith("s0") and "└─ s4999" in lines[-1]


def test_tree_bars_place_spans_on_the_trace_timeline() -> None:
    lines = render_tree([stored("a", None, 0.0, 1.0), stored("b", "a", 0.5, 1.0)], bar_width=10)
    assert "|██████████|" in lines[0]
    assert "|     █████|" in lines[1]

