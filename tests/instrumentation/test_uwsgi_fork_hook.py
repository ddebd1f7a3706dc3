"""Inside uWSGI without ``--py-call-osafterfork``, the agent's fork callbacks run from ``uwsgi.post_fork_hook``.

The ``uwsgi`` module exists only inside uWSGI's embedded interpreter, so these tests hand the hook a
module object with the same attributes; the real server runs in tests/compat/test_django.py (with the
option, the case the docs recommend)."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator

import pytest

from pulsetrace import forking
from pulsetrace.instrumentation.servers import hook_uwsgi_forks


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def after_fork(self) -> None:
        self.calls += 1


@pytest.fixture
def uwsgi_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("uwsgi")
    module.opt = {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", module)
    yield module


def test_workers_run_the_fork_callbacks_after_any_hook_of_the_application(
        uwsgi_module: types.ModuleType, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    uwsgi_module.post_fork_hook = lambda: order.append("application's")  # type: ignore[attr-defined]
    counter = Counter()
    # This process's own registered callbacks (other tests' agents) must not run: count the call instead.
    monkeypatch.setattr(forking, "run_in_child", counter.after_fork)
    with caplog.at_level(logging.WARNING, logger="pulsetrace.instrumentation"):
        undo = hook_uwsgi_forks()
    assert undo is not None
    assert [r.getMessage() for r in caplog.records if "py-call-osafterfork" in r.getMessage()]
    assert hook_uwsgi_forks() is None  # once per process
    uwsgi_module.post_fork_hook()  # type: ignore[attr-defined]
    assert order == ["application's"] and counter.calls == 1
    undo()
    uwsgi_module.post_fork_hook()  # type: ignore[attr-defined]
    assert counter.calls == 1 and order == ["application's", "application's"]


def test_with_python_at_fork_hooks_enabled_nothing_is_added(uwsgi_module: types.ModuleType) -> None:
    uwsgi_module.opt = {"py-call-osafterfork": True}  # type: ignore[attr-defined]
    assert hook_uwsgi_forks() is None
    assert not hasattr(uwsgi_module, "post_fork_hook")


def test_outside_uwsgi_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "uwsgi", raising=False)
    assert hook_uwsgi_forks() is None
