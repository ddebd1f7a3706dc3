"""Load generation and server-side measurement for the end-to-end benchmark.

:func:`run_wrk` drives a URL with ``wrk`` (Debian package ``wrk``) at fixed
concurrency for a fixed time and parses requests/s and the latency percentiles
of ``--latency``; :func:`tree_cpu_seconds` reads user+system CPU of a process and
all its descendants from ``/proc/<pid>/stat``, so a wrapper (``pulsetrace run``)
and its child are charged together.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_s: float
    p99_s: float
    errors: int
    non_2xx: int


def _duration(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors = sum(int(g) for g in m.groups())
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(requests=requests, rps=rps, p50_s=_duration(pct["50"]), p99_s=_duration(pct["99"]),
                     errors=errors, non_2xx=int(m2.group(1)) if m2 else 0)


def post_script(body: str) -> Path:
    """A wrk Lua script sending ``POST`` with a JSON body (deleted by the caller)."""
    fd, name = tempfile.mkstemp(prefix="pulsetrace-wrk-", suffix=".lua")
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"wrk.method = 'POST'\nwrk.body = '{escaped}'\n"
                 "wrk.headers['Content-Type'] = 'application/json'\n")
    return Path(name)


def run_wrk(url: str, seconds: float, *, connections: int = 32, threads: int = 1, script: Path | None = None,
            timeout_s: float = 10.0) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s",
           "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the ")": state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return sum(process_cpu_seconds(p) for p in descendants(pid))


def process_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (a wrapper's supervisor included)."""
    return sum(process_rss_bytes(p) for p in descendants(pid))
