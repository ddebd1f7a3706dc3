"""A service whose own modules are named like pulsetrace's (``agent``, ``instrumentation``,
``healthchecks``, ``sitecustomize``) runs under ``pulsetrace run`` with its modules, not ours, and
is traced as usual."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.compat.support import BIN, check_one_trace, get, request_trace, start_app, stop_app
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)

APP = """
from flask import Flask

import agent
import healthchecks
import instrumentation
import sitecustomize

app = Flask(__name__)


@app.get("/whoami/<name>")
def whoami(name):
    return {"agent": agent.OWNER, "healthchecks": healthchecks.OWNER, "instrumentation": instrumentation.OWNER,
            "sitecustomize": sitecustomize.OWNER}
"""


def test_the_services_own_agent_instrumentation_healthchecks_and_sitecustomize_are_its_own(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(textwrap.dedent(APP))
    (tmp_path / "agent.py").write_text("OWNER = 'service agent'\n")
    (tmp_path / "instrumentation.py").write_text("OWNER = 'service instrumentation'\n")
    (tmp_path / "healthchecks").mkdir()
    (tmp_path / "healthchecks" / "__init__.py").write_text("OWNER = 'service healthchecks'\n")
    (tmp_path / "sitecustomize.py").write_text("OWNER = 'service sitecustomize'\n")
    port = free_port()
    running = start_app(tmp_path, "own-names", [str(BIN / "flask"), "--app", "svc", "run", "--port", str(port)],
                        port=port, cwd=tmp_path)
    try:
        status, body = get(running.url + "/whoami/ada")
        assert status == 200, running.output()
        assert json.loads(body) == {"agent": "service agent", "healthchecks": "service healthchecks",
                                    "instrumentation": "service instrumentation",
                                    "sitecustomize": "service sitecustomize"}
        spans = request_trace(running.store, "/whoami/ada")
        check_one_trace(spans, name="GET /whoami/<name>", route="/whoami/<name>")
    finally:
        stop_app(running)
