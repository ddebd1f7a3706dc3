"""Every installed instrumentor entry point is activated like opentelemetry-instrument's, but lazily:
a third-party plug-in (a real distribution on the path, with its metadata and entry point, written by
the test) is activated when its library is first imported, skipped with one line when the library's
version is outside what it declares, and turned off by name. Each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTRUMENTOR = '''
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

import fakelib  # like contrib's botocore package: the instrumentor imports its library at the top

_instruments = ("fakelib {spec}",)


class FakeInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return _instruments

    def _instrument(self, **kwargs):
        fakelib.instrumented = kwargs.get("tracer_provider") is not None

    def _uninstrument(self, **kwargs):
        fakelib.instrumented = False
'''


def make_site(tmp: Path, *, library_version: str, spec: str) -> Path:
    site = tmp / "site"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("instrumented = False\n")
    info = site / f"fakelib-{library_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakelib\nVersion: {library_version}\n")
    (info / "top_level.txt").write_text("fakelib\n")
    (site / "fakeinst").mkdir()
    (site / "fakeinst" / "__init__.py").write_text(textwrap.dedent(INSTRUMENTOR).replace("{spec}", spec))
    info = site / "opentelemetry_instrumentation_fakelib-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: opentelemetry-instrumentation-fakelib\nVersion: 0.1\n"
        "Provides-Extra: instruments\n"
        f"Requires-Dist: fakelib {spec} ; extra == \"instruments\"\n")
    (info / "entry_points.txt").write_text("[opentelemetry_instrumentor]\nfakelib = fakeinst:FakeInstrumentor\n")
    return site


def run_py(code: str, tmp: Path, site: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULSETRACE_", "OTEL_"))}
    # PULSETRACE_QUIET: without the start-up line, stderr holds only what activation warns about.
    full_env = {**base, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
                "PULSETRACE_STORE": str(tmp / "store"), "PULSETRACE_QUIET": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=60, cwd=tmp)


ACTIVATION = """
    import sys
    import pulsetrace
    from pulsetrace.instrumentation import auto
    pulsetrace.start()
    assert "fakelib" not in sys.modules and "fakeinst" not in sys.modules   # nothing imported eagerly
    import fakelib
    print(fakelib.instrumented, "fakelib" in auto.active())
    pulsetrace.shutdown(1.0)
    print(fakelib.instrumented)
"""


def test_a_third_party_instrumentor_is_activated_when_its_library_is_first_imported(tmp_path: Path) -> None:
    site = make_site(tmp_path, library_version="1.4", spec=">=1.0,<2")
    done = run_py(ACTIVATION, tmp_path, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False"]  # activated, then undone at shutdown
    assert done.stderr == ""


def test_a_version_outside_the_declared_range_is_one_warning_line_and_no_activation(tmp_path: Path) -> None:
    site = make_site(tmp_path, library_version="2.3", spec=">=1.0,<2")
    done = run_py(ACTIVATION, tmp_path, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "fakelib instrumentation not activated" in lines[0] and "2.3" in lines[0] and "<2" in lines[0]


def test_any_instrumentation_is_turned_off_by_name(tmp_path: Path) -> None:
    site = make_site(tmp_path, library_version="1.4", spec=">=1.0,<2")
    done = run_py(ACTIVATION, tmp_path, site, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fakelib"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracing:\n  instrumentations:\n    disabled: [fakelib]\n")
    done = run_py(ACTIVATION, tmp_path, site, env={"PULSETRACE_CONFIG": str(cfg)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]


def test_an_instrumentor_importing_its_own_library_first_is_activated_once_it_has_finished(tmp_path: Path) -> None:
    # What opentelemetry-instrument's loader (or the application) does: import the instrumentor package,
    # which imports the library, whose post-import hook must not use the half-imported package.
    site = make_site(tmp_path, library_version="1.4", spec=">=1.0,<2")
    done = run_py("""
        import pulsetrace
        from pulsetrace.instrumentation import auto
        pulsetrace.start()
        import fakeinst
        import colorsys  # the next fresh import lets the deferred activation run
        import fakelib
        print(fakelib.instrumented, "fakelib" in auto.active())
        pulsetrace.shutdown(1.0)
    """, tmp_path, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert "partially initialized" not in done.stderr and "not activated" not in done.stderr, done.stderr


def test_config_validation_accepts_any_known_instrumentation_name_and_rejects_a_typo(tmp_path: Path) -> None:
    site = make_site(tmp_path, library_version="1.4", spec=">=1.0,<2")
    for names, code in (("[django, urllib3, aiohttp-client, fakelib, pymongo]", 0), ("[djnago]", 2)):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"tracing:\n  instrumentations:\n    disabled: {names}\n")
        done = run_py(f"""
            import sys
            from pulsetrace.cli.main import main
            sys.exit(main(["config", "validate", {str(cfg)!r}]))
        """, tmp_path, site)
        assert done.returncode == code, (names, done.stdout, done.stderr)
        if code:
            assert "tracing.instrumentations.disabled" in done.stderr and "djnago" in done.stderr
