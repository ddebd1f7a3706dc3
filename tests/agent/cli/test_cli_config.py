"""``pulsetrace config validate``: effective config with secrets masked (exit 0) or one line per problem (exit 2).

Hostile inputs run as real subprocesses (``python -m pulsetrace.cli.main``) so that what reaches
the terminal is checked, tracebacks and crashes included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pulsetrace.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
#: ``key: problem ...``: a key path (or a file path) then a colon and a space.
PROBLEM_LINE = re.compile(r"^\S[^\n]*?: \S")


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_", "AWS_"))}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "pulsetrace.cli.main", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], lines: int | None = 1) -> list[str]:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout == ""
    out = proc.stderr.splitlines()
    if lines is not None:
        assert len(out) == lines, out
    for line in out:
        assert PROBLEM_LINE.match(line), line
    return out


GOOD = """
service: {name: shop-api, environment: uat}
store: {retention: 2d}
tracing:
  exporters: [local, otlp]
  otlp: {endpoint: "http://collector-user:otlp-pw@127.0.0.1:4318", headers: {Authorization: "Bearer hdr-tok"}}
  sampling: {slow_ms: "${SLOW_MS:-1500}"}
health:
  token: ${HEALTH_TOKEN}
  probes:
    - {name: db, type: postgres, dsn: "postgresql://app:${DB_PASSWORD}@127.0.0.1:5432/shop", timeout: 500ms}
"""


def test_valid_file_prints_effective_config_masked_exit_0(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    proc = run_cli(["config", "validate", "p.yaml"], tmp_path,
                   env={"DB_PASSWORD": "db-pw-77", "HEALTH_TOKEN": "health-tok-9", "OTEL_SERVICE_NAME": "env-svc"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for secret in ("db-pw-77", "health-tok-9", "otlp-pw", "hdr-tok"):
        assert secret not in proc.stdout
    effective = yaml.safe_load(proc.stdout)
    assert effective["service"]["name"] == "env-svc"  # env wins over the file
    assert effective["store"]["retention"] == "2d"
    assert effective["tracing"]["sampling"]["slow_ms"] == 1500.0
    assert effective["health"]["probes"][0]["dsn"] == "postgresql://app:****@127.0.0.1:5432/shop"
    assert effective["health"]["probes"][0]["timeout"] == "500ms"
    assert effective["tracing"]["otlp"]["endpoint"] == "http://collector-user:****@127.0.0.1:4318"
    assert proc.stdout.startswith("# pulsetrace: configuration is valid (from p.yaml)")


def test_effective_output_is_itself_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "x")
    monkeypatch.setenv("HEALTH_TOKEN", "y")
    (tmp_path / "p.yaml").write_text(GOOD)
    assert main(["config", "validate", str(tmp_path / "p.yaml")]) == 0
    (tmp_path / "effective.yaml").write_text(capsys.readouterr().out)
    assert main(["config", "validate", str(tmp_path / "effective.yaml")]) == 0
    assert capsys.readouterr().err == ""


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSETRACE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["config", "validate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tracing"]["exporters"] == ["local"]
    assert data["store"]["retention"] == 604800.0


def test_discovery_flag_env_and_cwd(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PULSETRACE_CONFIG", raising=False)
    (tmp_path / "pulsetrace.yaml").write_text("service: {name: cwd}\n")
    (tmp_path / "a.yaml").write_text("service: {name: flag}\n")
    (tmp_path / "b.yaml").write_text("service: {name: envvar}\n")

    def name(argv: list[str]) -> str:
        assert main(argv) == 0
        return str(yaml.safe_load(capsys.readouterr().out)["service"]["name"])

    assert name(["config", "validate"]) == "cwd"
    assert name(["config", "validate", "--config", "a.yaml"]) == "flag"
    assert name(["--config", "a.yaml", "config", "validate"]) == "flag"
    monkeypatch.setenv("PULSETRACE_CONFIG", "b.yaml")
    assert name(["config", "validate"]) == "envvar"
    assert name(["config", "validate", "a.yaml"]) == "flag"


def test_no_config_at_all_is_valid_defaults(tmp_path: Path) -> None:
    proc = run_cli(["config", "validate"], tmp_path)
    assert proc.returncode == 0
    assert "no configuration file found: all defaults" in proc.stdout.splitlines()[0]


def test_invalid_file_one_line_per_problem_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "servce: {name: x}\ntracing:\n  exporters: [lcoal]\n  sampling: {slow_ms: abc}\nstore: {retention: forever}\n"
        "health: {probes: [{name: db, type: postgres, dsn: '${NOPE}'}]}\n")
    lines = assert_clean_failure(run_cli(["config", "validate", "bad.yaml"], tmp_path), lines=5)
    assert set(line.split(":", 1)[0] for line in lines) == {
        "servce", "tracing.exporters[0]", "tracing.sampling.slow_ms", "store.retention", "health.probes[0].dsn"}
    assert "servce: unknown key, did you mean 'service'?" in "\n".join(lines)


def test_config_without_action_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli(["config"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "config validate" in proc.stderr


# -- hostile inputs: exit 2, one line, no traceback -------------------------------------------

def _billion_laughs() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("health: {probes: [{name: x, type: custom, target: t, options: {bomb: *j}}]}")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, bytes] = {
    "not_yaml": b"service: {name: [unclosed\n  - : :\n",
    "tab_indent": b"service:\n\tname: x\n",
    "binary": bytes(range(256)) * 4,
    "latin1": "service: {name: caf\u00e9}\n".encode("latin-1"),
    "huge": b"service: {name: x}\n" + b"# padding\n" * 60_000,
    "deep_flow": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep_block": ("".join("  " * i + f"k{i}:\n" for i in range(400)) + "  " * 400 + "v: 1\n").encode(),
    "unset_var": b"health: {token: '${UNSET_VAR_FOR_TEST}'}\n",
    "billion_laughs": _billion_laughs().encode(),
    "recursive_alias": b"tracing: &t {sampling: {rules: [*t]}}\n",
    "list_doc": b"- service\n- tracing\n",
    "scalar_doc": b"just a string\n",
    "number_doc": b"42\n",
    "multi_doc": b"service: {name: a}\n---\nservice: {name: b}\n",
    "python_tag": b"service: !!python/object/apply:os.system ['echo pwned']\n",
    "unhashable_key": b"? [a, b]\n: c\n",
    "unknown_tag": b"service: !vault secret\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_exits_2_with_one_line_no_traceback(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(HOSTILE[case])
    started = time.monotonic()
    proc = run_cli(["config", "validate", str(path)], tmp_path)
    assert time.monotonic() - started < 30
    lines = assert_clean_failure(proc)
    assert "pwned" not in proc.stdout + proc.stderr


def test_unset_variable_line_names_key_and_variable(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(HOSTILE["unset_var"])
    (line,) = assert_clean_failure(run_cli(["config", "validate", "p.yaml"], tmp_path))
    assert line.startswith("health.token: environment variable UNSET_VAR_FOR_TEST is not set")


def test_billion_laughs_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.yaml").write_text(_billion_laughs())
    started = time.monotonic()
    assert main(["config", "validate", str(tmp_path / "b.yaml")]) == 2
    assert time.monotonic() - started < 5
    assert "expands too much" in capsys.readouterr().err


def test_directory(tmp_path: Path) -> None:
    (line,) = assert_clean_failure(run_cli(["config", "validate", str(tmp_path)], tmp_path))
    assert line == f"{tmp_path}: is a directory (expected a YAML file)"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    (line,) = assert_clean_failure(run_cli(["config", "validate", str(fifo)], tmp_path, timeout=20))
    assert "is not a regular file" in line


def test_path_under_a_file_is_unreadable_even_as_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (line,) = assert_clean_failure(run_cli(["config", "validate", str(tmp_path / "file" / "p.yaml")], tmp_path))
    assert line.startswith(f"{tmp_path / 'file' / 'p.yaml'}: config file cannot be read")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway; the FIFO and path-under-a-file "
                                              "cases cover unreadable files as root")
def test_chmod_000_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("service: {name: x}\n")
    path.chmod(0)
    (line,) = assert_clean_failure(run_cli(["config", "validate", str(path)], tmp_path))
    assert "permission denied" in line


def test_missing_file(tmp_path: Path) -> None:
    (line,) = assert_clean_failure(run_cli(["config", "validate", "missing.yaml"], tmp_path))
    assert line == "missing.yaml: config file not found"


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("# nothing\n")
    proc = run_cli(["config", "validate", "p.yaml"], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr


def test_bad_value_in_environment_is_reported_by_validate(tmp_path: Path) -> None:
    (line,) = assert_clean_failure(run_cli(["config", "validate"], tmp_path,
                                           env={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}))
    assert line.startswith("tracing.otlp.endpoint: not an http(s) URL, from $OTEL_EXPORTER_OTLP_ENDPOINT")
