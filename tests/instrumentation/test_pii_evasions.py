"""Every scrubber evasion a red-team pass found, as a test: none reaches an exporter.

Each row is an evasion class from the hardening issue: form-encoded cards and phones, an
invalid percent-escape that used to disable decoding of the whole query, e-mails with a
non-ASCII local part, JWTs, AWS key ids and secret keys, secret-looking header and JSON
keys, cards with dots, double spaces or full-width digits, and values broken by a cut. Each
is checked in free text, as an attribute value, in an exception message and as a span name
on a real SDK span; and the ordinary text next to it survives.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from pulsetrace.instrumentation._http import cut_query
from pulsetrace.instrumentation.pii import MAX_SCRUB_CHARS, TRUNCATED, PiiScrubber, scrub_text

#: (evasion class, text, what must not survive)
EVASIONS: list[tuple[str, str, str]] = [
    ("form-encoded card", "pan=4111+1111+1111+1111&x=1", "1111+1111"),
    ("form-encoded card, escaped plus", "pan=4111%2B1111%2B1111%2B1111", "4111"),
    ("form-encoded phone", "tel=%2B91+98765+43210&ok=1", "98765"),
    ("invalid escape elsewhere in the query", "email=alice%40example.com&x=%ff", "alice"),
    ("invalid escape, decoded e-mail", "to=bob%40example.org&bad=%E2%28%A1", "bob"),
    ("non-ASCII local part", "from josé.núñez@example.com today", "núñez"),
    ("non-ASCII domain", "mail 用户@例子.广告 now", "用户"),
    ("JWT in a query string", "/cb?state=1&id_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
     "eyJzdWIiOiIxIn0"),
    ("JWT in free text", "session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl rejected", "eyJzdWIiOiIxIn0"),
    ("JWT without a signature", "t=x eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok", "eyJzdWIiOiIxIn0"),
    ("AWS access key id", "using key AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
    ("AWS session key id", "creds ASIAY34FZKBOKMUTVV7A expired", "ASIAY34FZKBOKMUTVV7A"),
    ("AWS secret key", "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY set", "wJalrXUtnFEMI"),
    ("x-access-key header", "x-access-key: k3y-value-1", "k3y-value-1"),
    ("x-auth header", "x-auth: Zm9vOmJhcg", "Zm9vOmJhcg"),
    ("x-signature header", "X-Signature: 5d41402abc4b2a76", "5d41402abc4b2a76"),
    ("JSON pass", '{"pass": "open sesame", "ok": true}', "sesame"),
    ("JSON password with escapes", r'{"password": "a\"b c", "n": 1}', "b c"),
    ("card with dots", "card 4111.1111.1111.1111 ok", "4111.1111"),
    ("card with double spaces", "card 4111  1111  1111  1111 ok", "1111  1111"),
    ("card in full-width digits", "card ４１１１ １１１１ １１１１ １１１１ ok", "１１１１ １１１１"),
    ("card in full-width digits, no spaces", "card ４１１１１１１１１１１１１１１１ ok", "４１１１１１１１"),
    ("scheme-less credentials", "redis :s3cretpw@cache:6379/0 down", "s3cretpw"),
    ("key/value DSN", "host=db user=app password=s3cretpw dbname=shop", "s3cretpw"),
    ("quoted key/value DSN", "host=db password='s3cret pw' dbname=shop", "pw'"),
]


def _span(name: str, attributes: dict[str, object], message: str) -> ReadableSpan:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    span = tracer.start_span(name, attributes=attributes)  # type: ignore[arg-type]
    span.record_exception(ValueError(message))
    span.end()
    return span  # type: ignore[return-value]


@pytest.mark.parametrize(("case", "text", "leak"), EVASIONS, ids=[e[0] for e in EVASIONS])
def test_each_evasion_is_scrubbed_in_free_text(case: str, text: str, leak: str) -> None:
    assert leak not in scrub_text(text)


@pytest.mark.parametrize(("case", "text", "leak"), EVASIONS, ids=[e[0] for e in EVASIONS])
def test_each_evasion_is_scrubbed_from_every_part_of_a_span(case: str, text: str, leak: str) -> None:
    out = PiiScrubber()(_span(f"op {text}", {"url.query": text, "note": [text, "plain"]}, text))
    exported = repr((out.name, dict(out.attributes or {}), [dict(e.attributes or {}) for e in out.events]))
    assert leak not in exported
    assert "plain" in exported  # ordinary values survive next to the scrubbed ones


@pytest.mark.parametrize("key", ["http.request.header.x-access-key", "http.request.header.x-auth",
                                 "http.request.header.x-signature", "pass", "x-auth-token"])
def test_secret_looking_header_keys_are_redacted_whole(key: str) -> None:
    out = PiiScrubber()(_span("op", {key: "opaque-value-123"}, "m"))
    assert "opaque-value-123" not in repr(dict(out.attributes or {}))


@pytest.mark.parametrize("text", [
    "ip 192.168.100.200 port 8080 pid 12345",
    "scores 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0",
    "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
    "trace 1-5759e988-bd862e3fe1be46a994272793 span 53995c3f42cd8ad8",
    "version 10.20.30 build 2024.01.15",
    "eyJ is how base64 of {\" starts",
    "an AKIA prefix alone: AKIA",
    "a+b=c and 1+1=2",
])
def test_ordinary_text_near_the_new_rules_survives(text: str) -> None:
    assert scrub_text(text) == text


@pytest.mark.parametrize("secret", ["alice.smith@example.com", "4111 1111 1111 1111", "+91 98765 43210",
                                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"])
@pytest.mark.parametrize("shift", range(0, 40, 3))
def test_no_partial_value_is_left_at_the_16kb_cut(secret: str, shift: int) -> None:
    # The value straddles the cut: scrubbed whole before it, and nothing of it is left after it.
    text = "z" * (MAX_SCRUB_CHARS - shift) + " " + secret + " tail" + "z" * 600
    out = scrub_text(text)
    assert out.endswith(TRUNCATED) and len(out) <= MAX_SCRUB_CHARS + len(TRUNCATED)
    for piece in (secret[:6], secret[-6:], "alice", "98765", "eyJzdWIi"):
        if piece in secret:
            assert piece not in out


@pytest.mark.parametrize("secret", ["email=alice.smith@example.com", "card=4111+1111+1111+1111",
                                    "tel=%2B91+98765+43210"])
@pytest.mark.parametrize("shift", range(0, 30, 4))
def test_a_long_query_is_cut_between_parameters_never_inside_one(secret: str, shift: int) -> None:
    query = "a=" + "b" * (2048 - 2 - shift - 6) + "&" + secret + "&c=" + "d" * 100
    cut = cut_query(query)
    assert len(cut) <= 2048
    assert not cut.endswith(secret[: len(secret) // 2]) or cut.endswith(secret)
    scrubbed = scrub_text(cut)
    for piece in ("alice", "1111", "98765"):
        assert piece not in scrubbed


HOSTILE = {
    "eyJ runs": "eyJ" * 20_000,
    "eyJ dotted": "eyJa." * 12_000,
    "base64 run": "Ab1/" * 16_000,
    "AKIA runs": "AKIA" * 16_000,
    "digits and dots": "123." * 16_000,
    "digits and double spaces": "12  " * 16_000,
    "full-width digits": "１" * 60_000,
    "percent escapes": "%ff%4" * 12_000,
    "unicode local parts": "é" * 60_000 + "@x",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_new_rules_stay_linear(name: str) -> None:
    text = HOSTILE[name]
    started = time.process_time()
    scrub_text(text)
    # Generous for a busy 2-core machine: a quadratic rule takes seconds to minutes here.
    assert time.process_time() - started < 1.0


CHILD = """
import json, sys
from opentelemetry import trace
evasions = json.loads(sys.argv[1])
tracer = trace.get_tracer("evasions")
with tracer.start_as_current_span("evasions root") as root:
    for i, text in enumerate(evasions):
        root.set_attribute(f"evasion.{i}", text)
        with tracer.start_as_current_span(f"op {text}"):
            pass
    root.add_event("note", {"detail": " | ".join(evasions)})
    print(format(root.get_span_context().trace_id, "032x"), flush=True)
"""


def test_no_evasion_reaches_the_output_of_run_traces_or_traces_show(tmp_path: Path) -> None:
    """``pulsetrace run`` a real child that records every evasion, then read it back with the CLI."""
    from tests.agent.cli.test_cli_config import run_cli
    from tests.integration.service_runner import write_config

    store = tmp_path / "store"
    write_config(tmp_path / "c.yaml", store)
    values = [text for _, text, _ in EVASIONS]
    ran = run_cli(["run", "--config", "c.yaml", "--", sys.executable, "-c", CHILD, json.dumps(values)], tmp_path,
                  timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    trace_id = ran.stdout.strip().splitlines()[-1]
    listed = run_cli(["traces", "--config", "c.yaml", "--json"], tmp_path)
    shown = run_cli(["traces", "show", trace_id, "--config", "c.yaml", "--json"], tmp_path)
    assert listed.returncode == 0 and shown.returncode == 0, (listed.stderr, shown.stderr)
    assert trace_id in listed.stdout and "evasion.0" in shown.stdout  # the data really went through
    outputs = {"run": ran.stderr, "traces": listed.stdout + listed.stderr, "traces show": shown.stdout + shown.stderr}
    for case, _, leak in EVASIONS:
        for name, text in outputs.items():
            # As written and as JSON escapes it (full-width digits, non-ASCII e-mails).
            for form in {leak, json.dumps(leak)[1:-1]}:
                assert form not in text, f"{case}: {leak!r} in the output of {name}"
