"""Hostile trace headers against the real service: never a 5xx, and the stored spans stay valid.

Requests are written byte for byte on a raw socket (an HTTP client would refuse to
send most of them), to ``/hello`` of a service under ``pulsetrace run`` with every
trace sampled. Each carries one to four trace headers: W3C ``traceparent`` /
``tracestate`` / ``baggage`` and ``X-Amzn-Trace-Id``, in any letter case, whose values
are near-valid ones with fields mutated, random printable text, arbitrary bytes
(binary, latin-1, UTF-8 outside latin-1), or oversized (up to 12 KB).

Promised and asserted: no answer is ever 5xx; a request whose header bytes are legal
HTTP (no control characters) and within uvicorn's header-size limit is answered 200
by the app (the agent ignores what it cannot parse and starts a fresh trace); every
one of those has exactly one server span stored, unless its headers carry a valid upstream
context whose sampled flag is off (that decision is honoured); and afterwards every stored span has
well-formed ids, translates into X-Ray documents that validate against AWS's schema,
and ``pulsetrace traces --json`` / ``traces show --json`` read them.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import parse_qs

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.fuzz.conftest import FuzzService, assert_store_valid
from tests.integration.service_runner import all_spans, wait_for

HEX = "0123456789abcdef"
NAMES = ["traceparent", "tracestate", "baggage", "x-amzn-trace-id", "Traceparent", "X-Amzn-Trace-Id",
         "TRACEPARENT", "x-amzn-trace-ID"]
#: Above this many header bytes uvicorn (h11) may refuse the request itself, before the app.
LEGAL_SIZE = 8000


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.one_of(st.text(HEX, min_size=n, max_size=n), st.text(HEX + "xyzXYZ-;=", min_size=0, max_size=n * 2))


traceparent = st.builds(lambda v, t, s, f, sep: sep.join([v, t, s, f]),
                        st.sampled_from(["00", "01", "ff", "0", "zz", ""]) | hexes(2), hexes(32), hexes(16),
                        st.sampled_from(["00", "01", "03", "ff", "", "0x"]) | hexes(2),
                        st.sampled_from(["-", "--", "_", " - ", ""]))
amzn = st.builds(lambda root, parent, sampled, extra, sep: sep.join(
    [f"Root=1-{root[:8]}-{root[8:]}", f"Parent={parent}", f"Sampled={sampled}", *extra]),
    hexes(32), hexes(16), st.sampled_from(["0", "1", "?", "", "2", "true"]),
    st.lists(st.sampled_from(["Lineage=a:1", "Self=1-2-3", "=", ";;", "Root=", "Parent"]), max_size=3),
    st.sampled_from([";", "; ", ",", ""]))
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
non_latin = st.text(st.characters(min_codepoint=0x100, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
                    min_size=1, max_size=60).map(lambda s: s.encode("utf-8"))
binary = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
oversized = st.builds(lambda n, unit: (unit * n)[:n], st.integers(2000, 12000),
                      st.sampled_from(["f", "00-", "Root=1-", "ä", "k=v,"]))
value = st.one_of(
    traceparent.map(str.encode), amzn.map(str.encode), printable.map(str.encode), non_latin, binary,
    oversized.map(lambda s: s.encode("utf-8")),
)
headers = st.lists(st.tuples(st.sampled_from(NAMES), value), min_size=1, max_size=4)


def legal(hdrs: list[tuple[str, bytes]]) -> bool:
    """Header values HTTP allows (VCHAR / obs-text / inner SP and HTAB), small enough for the server."""
    total = 0
    for _name, v in hdrs:
        total += len(v)
        if any(b < 0x20 and b != 0x09 or b == 0x7F for b in v):
            return False
    return total < LEGAL_SIZE


#: The propagators `pulsetrace run` installs (pulsetrace.runtime.install_propagators).
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), AwsXRayPropagator()])


def upstream_declined(hdrs: list[tuple[str, bytes]]) -> bool:
    """The headers carry a valid upstream trace context whose sampled flag is off.

    The agent honours that decision (W3C and X-Ray alike): the trace is recorded only to be kept
    if it fails, so a good request under it has no stored span, and that is right.
    """
    # The server's view: optional whitespace around a value is not part of it (RFC 9110), the last one wins.
    carrier = {name.lower(): v.strip(b" \t").decode("latin-1") for name, v in hdrs}
    ctx = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()  # propagators never raise
    return ctx.is_valid and not ctx.trace_flags.sampled


def raw_get(port: int, path: str, hdrs: list[tuple[str, bytes]]) -> int:
    head = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    head += [name.encode() + b": " + v for name, v in hdrs]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].split()
    assert len(status_line) >= 2, f"no HTTP answer: {data[:200]!r}"
    return int(status_line[1])


def test_hostile_trace_headers_never_get_a_5xx_and_spans_stay_valid(fuzz_service: FuzzService) -> None:
    answered: list[int] = []
    sent: dict[int, list[tuple[str, bytes]]] = {}
    counter = [0]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hdrs=headers)
    def one(hdrs: list[tuple[str, bytes]]) -> None:
        counter[0] += 1
        n = counter[0]
        sent[n] = hdrs
        status = raw_get(fuzz_service.port, f"/hello?fz={n}", hdrs)
        assert status < 500, (status, hdrs)
        if legal(hdrs):
            assert status == 200, (status, hdrs)
        if status == 200 and not upstream_declined(hdrs):
            answered.append(n)

    one()
    assert len(answered) >= 100, f"only {len(answered)} of {counter[0]} requests reached the app"

    def stored() -> dict[int, int]:
        out: dict[int, int] = {}
        for span in all_spans(fuzz_service.store):
            if span.kind == "server":
                for v in parse_qs(str(span.attributes.get("url.query", ""))).get("fz", []):
                    out[int(v)] = out.get(int(v), 0) + 1
        return out

    def complete() -> dict[int, int] | None:
        s = stored()
        return s if set(answered) <= set(s) else None

    got = wait_for(complete, timeout=20) or stored()
    missing = sorted(set(answered) - set(got))
    assert not missing, f"no server span for requests {missing[:20]}: {[sent[n] for n in missing[:3]]}"
    assert all(got[n] == 1 for n in answered), {n: got[n] for n in answered if got[n] != 1}
    time.sleep(0.3)
    assert_store_valid(fuzz_service.store)
