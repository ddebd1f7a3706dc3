"""Secrets are never echoed by the configuration: problem lines, effective config, errors.

Every command that loads a configuration (``config validate``, ``run``, ``serve``, ``traces``)
runs as a real subprocess on a file holding a secret in each form a user writes one: a
key/value DSN, a scheme-less Redis URL, a URL with credentials, an OAuth ``code=`` query
parameter. Stdout and stderr are scanned for the secret value; the line must still say what is
wrong and where (a masked line that hides the problem would be no help).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pulsetrace.config.load import MAX_INTERPOLATED_CHARS
from pulsetrace.config.secrets import MASK, mask_text
from tests.agent.cli.test_cli_config import run_cli

SECRET = "Zq7kvHunter2secret"


#: Invalid files: each holds the secret where the validator must quote the value back.
INVALID = {
    "key/value DSN": f'health: {{probes: [{{name: db, type: postgres, dsn: "host=db user=app password={SECRET} '
                     f'dbname=shop"}}]}}',
    "quoted key/value DSN": f"health: {{probes: [{{name: db, type: postgres, dsn: \"host=db password='{SECRET} x' "
                            f"dbname=shop\"}}]}}",
    "scheme-less redis URL": f'health: {{probes: [{{name: c, type: redis, url: ":{SECRET}@cache:6379/0"}}]}}',
    "scheme-less URL with user": f'health: {{probes: [{{name: c, type: redis, url: "app:{SECRET}@cache:6379/0"}}]}}',
    "OTLP endpoint with credentials": f'tracing: {{otlp: {{endpoint: "ftp://u:{SECRET}@collector:4318"}}}}',
    "OAuth code in a bad URL": f'health: {{probes: [{{name: p, type: http, url: "ftp://pay.test/cb?state=1&code={SECRET}"}}]}}',
}


@pytest.mark.parametrize("command", [["config", "validate", "c.yaml"], ["--config", "c.yaml", "traces"],
                                     ["serve", "--config", "c.yaml"], ["run", "--config", "c.yaml", "--", "true"]],
                         ids=["config validate", "traces", "serve", "run"])
@pytest.mark.parametrize("case", sorted(INVALID))
def test_a_problem_line_never_shows_the_secret(case: str, command: list[str], tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(INVALID[case] + "\n")
    if command[0] == "--config":  # traces takes --config after the command
        command = ["traces", "--config", "c.yaml"]
    proc = run_cli(command, tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # The line still names the key and what is wrong, and shows where the secret was.
    (line,) = proc.stderr.splitlines()
    assert line.startswith(("health.probes[0].", "tracing.otlp.endpoint")), line
    assert "not a" in line and MASK in line, line


VALID = f"""
tracing:
  exporters: [local, otlp]
  otlp: {{endpoint: "http://127.0.0.1:4318/v1/traces?code={SECRET}&region=x"}}
health:
  probes:
    - name: legacy
      type: custom
      target: "tests.healthchecks.probes_for_tests:AlwaysUp"
      options: {{conninfo: "host=db user=app password={SECRET} dbname=shop", cache: ":{SECRET}@cache:6379/0"}}
    - {{name: p, type: http, url: "https://pay.test/cb?state=1&code={SECRET}"}}
metrics:
  cloudwatch: {{runbook_url: "https://runbooks.test/{{alarm}}?sig={SECRET}"}}
"""


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["yaml", "json"])
def test_the_effective_configuration_masks_every_form_but_keeps_what_locates_it(fmt: list[str],
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(VALID)
    proc = run_cli(["config", "validate", "c.yaml", *fmt], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    # Hosts, users and harmless parameters stay readable.
    for kept in ("host=db user=app password=****", "cache:6379/0", "state=1&code=****", "region=x",
                 "https://runbooks.test/{alarm}?sig=****"):
        assert kept in proc.stdout, kept


@pytest.mark.parametrize("text, expected", [
    (f"host=db user=app password={SECRET} dbname=shop", "host=db user=app password=**** dbname=shop"),
    (f"host=db password='{SECRET} \\' x' dbname=shop", "host=db password=**** dbname=shop"),
    (f":{SECRET}@cache:6379/0", ":****@cache:6379/0"),
    (f"connect app:{SECRET}@db:5432/shop failed", "connect app:****@db:5432/shop failed"),
    (f"postgresql://app:{SECRET}@db/shop?sslpassword={SECRET}", "postgresql://app:****@db/shop?sslpassword=****"),
    (f"https://pay.test/cb?state=1&code={SECRET}", "https://pay.test/cb?state=1&code=****"),
    (f"state=1&code={SECRET}", "state=1&code=****"),
    (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ****"),
    (f'{{"api_key": "{SECRET}"}}', '{"api_key": ****}'),
    ("InvalidPasswordError: password authentication failed for user app",
     "InvalidPasswordError: password authentication failed for user app"),
    ("rfid:reader:* at redis://127.0.0.1:6379/0", "rfid:reader:* at redis://127.0.0.1:6379/0"),
    ("alice@example.com wrote x=1", "alice@example.com wrote x=1"),
])
def test_mask_text_masks_each_form_and_keeps_plain_text(text: str, expected: str) -> None:
    assert mask_text(text) == expected


def test_mask_text_is_linear_on_hostile_input() -> None:
    hostile = ["a=" * 50_000, ":" * 100_000, "a:b@" * 25_000, "password=" * 10_000, "x" * 99_999 + "@",
               "=a:" + "b" * 100_000 + "@"]
    for text in hostile:
        started = time.process_time()
        mask_text(text)
        # Generous: a quadratic pattern takes minutes here, a linear one milliseconds.
        assert time.process_time() - started < 2.0, text[:20]


def test_interpolating_a_large_variable_many_times_is_a_clear_error_quickly(tmp_path: Path) -> None:
    lines = ["resource_attributes:"] + [f'  k{i}: "${{BIG}}"' for i in range(2000)]
    (tmp_path / "c.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    proc = run_cli(["config", "validate", "c.yaml"], tmp_path, env={"BIG": "a" * 100_000}, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("resource_attributes.k")
    assert "interpolating ${BIG} makes the configuration too large" in line
    assert f"{MAX_INTERPOLATED_CHARS // 1024} KiB" in line
    assert elapsed < 30  # it once ran for over 60 s; the bound makes it one pass over the file


def test_interpolation_under_the_limit_is_unchanged(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text('service: {name: "${NAME}"}\nresource_attributes: {team: "${TEAM:-core}"}\n')
    proc = run_cli(["config", "validate", "c.yaml", "--json"], tmp_path, env={"NAME": "shop-api"})
    assert proc.returncode == 0, proc.stderr
    assert '"shop-api"' in proc.stdout and '"core"' in proc.stdout
