"""Auto-instrumentation: activation on first import, config switches, and a full undo (in subprocesses,
so each test starts from a fresh interpreter with nothing imported yet)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_"))}
    full_env = {**base, "PYTHONPATH": str(ROOT), "PULSETRACE_STORE": str(tmp_path / "store"), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def test_library_is_instrumented_when_first_imported_and_undone_on_shutdown(tmp_path: Path) -> None:
    done = run_py("""
        import sys
        import pulsetrace
        from pulsetrace.instrumentation import auto
        pulsetrace.start()
        assert "httpx" not in sys.modules          # nothing imported eagerly
        assert "httpx" not in auto.active()
        import httpx
        assert "httpx" in auto.active()
        from pulsetrace.instrumentation.clients import httpx_hook   # the lean hook, preferred to contrib's
        assert httpx_hook.is_instrumented()
        assert "opentelemetry.instrumentation.httpx" not in sys.modules
        import uvicorn.config
        patched = uvicorn.config.Config.load
        pulsetrace.shutdown(1.0)
        assert not httpx_hook.is_instrumented()
        assert uvicorn.config.Config.load is not patched
        assert auto.active() == []
        assert not any(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path)
        print("ok")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_disabled_instrumentations_from_config_and_otel_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracing:\n  instrumentations:\n    disabled: [redis]\n")
    done = run_py("""
        import pulsetrace
        from pulsetrace.instrumentation import auto
        a = pulsetrace.start()
        import httpx, redis
        print(sorted(auto.active()))
        pulsetrace.shutdown(1.0)
    """, tmp_path, env={"PULSETRACE_CONFIG": str(cfg)})
    assert done.returncode == 0, done.stderr
    assert "'redis'" not in done.stdout and "'httpx'" in done.stdout
    done = run_py("""
        import pulsetrace
        from pulsetrace.instrumentation import auto
        pulsetrace.start()
        import httpx, redis
        print(sorted(auto.active()))
        pulsetrace.shutdown(1.0)
    """, tmp_path, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx,redis"})
    assert done.returncode == 0, done.stderr
    assert "'httpx'" not in done.stdout and "'redis'" not in done.stdout


def test_required_but_missing_library_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracing:\n  instrumentations:\n    required: [httpx]\n")
    # a sitecustomize-free interpreter where httpx cannot be found: hide it with a meta-path blocker
    done = run_py("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "httpx":
                    raise ModuleNotFoundError(name)
                return None
        sys.meta_path.insert(0, Block())
        from pulsetrace.validation import load_config
        from pulsetrace.config.problems import ConfigError
        from pulsetrace.instrumentation.auto import required_problems
        problems = required_problems(load_config())
        print(problems[0])
    """, tmp_path, env={"PULSETRACE_CONFIG": str(cfg)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tracing.instrumentations.required[0]: library httpx is not installed")


def test_a_failing_instrumentor_does_not_break_the_application_import(tmp_path: Path) -> None:
    done = run_py("""
        import pulsetrace
        from pulsetrace.instrumentation import auto
        def broken(module, agent):
            raise RuntimeError("instrumentor exploded")
        import dataclasses
        real_catalog = auto.catalog
        auto.catalog = lambda warn: [dataclasses.replace(i, activate=broken) if i.name == "httpx" else i
                                     for i in real_catalog(warn)]
        pulsetrace.start()
        import httpx
        assert httpx.Client is not None
        assert "httpx" not in auto.active()
        pulsetrace.shutdown(1.0)
        print("ok")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "instrumentor exploded" in done.stderr


def test_libraries_imported_before_start_are_instrumented_at_once_without_deadlock(tmp_path: Path) -> None:
    done = run_py("""
        import httpx, redis, botocore, uvicorn.config
        import pulsetrace
        from pulsetrace.instrumentation import auto
        pulsetrace.start()
        print(sorted(auto.active()))
        pulsetrace.shutdown(1.0)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"asgi", "botocore", "httpx", "redis"} <= set(eval(done.stdout.strip()))


def test_lean_clients_off_falls_back_to_contribs_instrumentors(tmp_path: Path) -> None:
    done = run_py("""
        import pulsetrace
        from pulsetrace.instrumentation import auto
        from pulsetrace.instrumentation.clients import httpx_hook, redis_hook
        pulsetrace.start()
        import httpx, redis
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        assert RedisInstrumentor().is_instrumented_by_opentelemetry
        assert not httpx_hook.is_instrumented() and not redis_hook.is_instrumented()
        pulsetrace.shutdown(1.0)
        assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        print("ok")
    """, tmp_path, env={"PULSETRACE_LEAN_CLIENTS": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
