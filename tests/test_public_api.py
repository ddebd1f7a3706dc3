"""The public API is the `pulsetrace` namespace only, and importing it does no work."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pulsetrace


def test_the_facade_exports_exactly_the_documented_names() -> None:
    assert sorted(pulsetrace.__all__) == ["JsonFormatter", "business_operation", "business_span", "check", "count",
                                          "lambda_handler", "metric", "record_outcome", "set_business_attributes",
                                          "shutdown", "start", "structlog_processor"]
    for name in pulsetrace.__all__:
        assert callable(getattr(pulsetrace, name))
    with pytest.raises(AttributeError):
        getattr(pulsetrace, "nope")


def test_importing_pulsetrace_loads_nothing_until_a_name_is_used() -> None:
    code = ("import sys, pulsetrace; "
            "assert not [m for m in sys.modules if m.startswith(('opentelemetry', 'pulsetrace.'))], sorted(sys.modules); "
            "from pulsetrace import business_span; "
            "assert 'pulsetrace.instrumentation.business' in sys.modules; "
            "from pulsetrace.healthchecks import Probe, ProbeResult, Status; "
            "assert Status.UP.value == 'UP'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_the_old_top_level_packages_are_gone() -> None:
    code = ("import importlib.util as u; "
            "assert [n for n in ('agent', 'instrumentation', 'healthchecks') if u.find_spec(n)] == []")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
