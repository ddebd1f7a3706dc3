"""Fuzz ``pulsetrace config validate`` over random YAML: exit 0 or 2, never a traceback.

Documents are built from hypothesis recursive strategies whose mapping keys mix the
schema's real key names (and near misses of them) with arbitrary text, and whose
values mix valid-looking ones (durations, exporter names, probe types, ``${VAR}``)
with anything YAML can hold. Every run checks: exit code 0 or 2, nothing on stderr
that is not a ``key: problem`` line (the CLI's catch-all for unexpected exceptions
prints ``pulsetrace: ExceptionName: ...``, which fails the test), and a valid
document's printed effective config validates again.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsetrace.cli.main import main
from pulsetrace.config.load import ConfigError
from pulsetrace.validation import config_from_mapping
from pulsetrace.config.schema import Config

PROBLEM_LINE = re.compile(r"^\S[^\n]*?: \S")


def _schema_keys(cls: type, seen: set[str]) -> None:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        seen.add(f.name)
        tp = hints[f.name]
        for candidate in (tp, *get_args(tp)):
            if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
                _schema_keys(candidate, seen)
        if get_origin(tp) in (list, dict):
            for arg in get_args(tp):
                if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                    _schema_keys(arg, seen)


def schema_keys() -> list[str]:
    seen: set[str] = {"critical", "business", "general", "health", "redis_url", "key_pattern"}
    _schema_keys(Config, seen)
    return sorted(seen)


KEYS = schema_keys()
real_key = st.sampled_from(KEYS)
near_miss = real_key.filter(lambda k: len(k) > 3).map(lambda k: k[:-1] + ("x" if k[-1] != "x" else "y"))
any_key = st.one_of(real_key, real_key, near_miss, st.text(max_size=12), st.integers(-5, 5), st.booleans())

interesting_text = st.sampled_from([
    "local", "otlp", "console", "xray-udp", "postgres", "redis", "http", "rfid", "custom", "passive", "grpc",
    "http/protobuf", "emf", "api", "off", "500ms", "15s", "2m", "1h", "7d", "-1s", "forever", "${HOME}",
    "${UNSET_FUZZ_VAR}", "${UNSET_FUZZ_VAR:-3s}", "${", "127.0.0.1:8081", "http://u:p@127.0.0.1:4318",
    "postgresql://app:pw@127.0.0.1:5432/shop", "redis://127.0.0.1:6379/0", "/payments*", "", "true", "1e3",
    "critical", "general",
])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), interesting_text, st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(any_key, children, max_size=5),
    ),
    max_leaves=40,
)
sections = st.dictionaries(any_key, values, max_size=6)
documents = st.one_of(
    st.fixed_dictionaries({}, optional={k: values for k in ("service", "store", "tracing", "health", "metrics")}),
    st.fixed_dictionaries({}, optional={
        "tracing": st.fixed_dictionaries({}, optional={k: values for k in ("exporters", "otlp", "sampling",
                                                                           "instrumentations", "pii")}),
        "health": st.fixed_dictionaries({}, optional={"probes": st.lists(sections, max_size=3),
                                                      "listen": values, "token": values}),
        "store": sections,
    }),
    sections,
    values,
)

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["config", "validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def check_cli(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="pt-fuzz-") as tmp:
        path = Path(tmp) / "pulsetrace.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        code, out, err = validate(path)
        assert code in (0, 2), (code, err)
        if code == 2:
            assert out == ""
            lines = err.splitlines()
            assert lines, "exit 2 without a problem line"
            for line in lines:
                assert PROBLEM_LINE.match(line), line
                assert not line.startswith("pulsetrace: "), line  # the CLI's catch-all: an unexpected exception
        else:
            assert err == ""
            again = Path(tmp) / "effective.yaml"
            again.write_text(out)
            code2, _, err2 = validate(again)
            assert code2 == 0, err2


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PULSETRACE_CONFIG", "PULSETRACE_STORE", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "UNSET_FUZZ_VAR"):
        monkeypatch.delenv(name, raising=False)


@SETTINGS
@given(documents)
def test_random_yaml_structures_exit_0_or_2_never_a_traceback(doc: Any) -> None:
    check_cli(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_text_and_bytes_exit_0_or_2(text: str | bytes) -> None:
    check_cli(text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["service:", "  name: x", "tracing:", "  exporters: [local", "- a", "&a b", "*a",
                                 "? x", ": y", "{", "}", "!!binary aGk=", "---", "...", "  ", "\t", "'", '"',
                                 "key: |", "  block", "%YAML 1.1", "!!set {a, b}", "<<: *a"]),
                max_size=12))
def test_yaml_syntax_fragments_exit_0_or_2(lines: list[str]) -> None:
    check_cli("\n".join(lines) + "\n")


@SETTINGS
@given(documents, st.dictionaries(st.sampled_from(["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
                                                   "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                                                   "AWS_XRAY_DAEMON_ADDRESS", "AWS_REGION", "AWS_ENDPOINT_URL",
                                                   "PULSETRACE_STORE", "OTEL_EXPORTER_OTLP_PROTOCOL"]),
                                  st.text(max_size=20), max_size=4))
def test_validator_raises_only_config_error(doc: Any, env: dict[str, str]) -> None:
    try:
        config_from_mapping(doc, env)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert PROBLEM_LINE.match(str(problem)) and "\n" not in str(problem), str(problem)
