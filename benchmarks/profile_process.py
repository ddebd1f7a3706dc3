"""Where a served request's CPU goes, across the whole process: every thread, the export threads included.

``profile_e2e`` profiles the request thread under cProfile; this samples the real server (the e2e
route under uvicorn, or the Django project under gunicorn, each under ``pulsetrace run`` as in
``bench_e2e``/``bench_e2e_django``) with py-spy while wrk drives it, counting only samples that hold
the GIL (CPU, not waiting), and sums them by owner: the deepest pulsetrace or OpenTelemetry frame
(with the standard library it calls: json, sqlite3, re), else the application and its libraries.

    pip install py-spy
    python -m benchmarks.profile_process --app e2e|django [--config ptdefault|pt100|...] [--seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import bench_e2e, bench_e2e_django
from benchmarks.e2e_load import post_script, run_wrk
from benchmarks.harness import tool
from pulsetrace.demo.local_servers import PostgresServer, RedisServer, free_port, wait_port

_OURS = re.compile(r"\((agent|instrumentation|healthchecks)/")
_OTEL = re.compile(r"\((trace|sdk|context|attributes|util|propagate|propagators|metrics|resources)/|opentelemetry")
#: Standard-library frames charged to the pulsetrace/OpenTelemetry frame that called them.
_STDLIB = re.compile(r"\((json|re|sqlite3|threading|copy|collections|enum)/|\((json|re|copy|enum|threading)\.py")


def summarise(raw: Path, top: int = 15) -> str:
    """Markdown: share of GIL-holding samples by owner, then the pulsetrace/OpenTelemetry functions."""
    by_area: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        owner = None
        for frame in reversed(stack.split(";")[1:]):  # the first frame names the process
            if _OURS.search(frame) or _OTEL.search(frame):
                owner = frame
                break
            if not (_STDLIB.search(frame) and "site-packages" not in frame):
                break
        if owner is None:
            by_area["the application, its libraries, the server, asyncio"] += n
            continue
        ours = _OURS.search(owner)
        by_area[f"pulsetrace {ours.group(1)}/" if ours else "OpenTelemetry API and SDK"] += n
        by_function[re.sub(r":\d+\)", ")", owner)] += n
    lines = [f"{total} samples holding the GIL", "", "| owner | share of CPU samples |", "|---|---|"]
    lines += [f"| {k} | {n * 100 / max(1, total):.1f} % |" for k, n in by_area.most_common()]
    lines += ["", "| function (own time, with the standard library it calls) | share |", "|---|---|"]
    lines += [f"| `{k}` | {n * 100 / max(1, total):.1f} % |" for k, n in by_function.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_process")
    parser.add_argument("--app", choices=("e2e", "django"), default="e2e")
    parser.add_argument("--config", default="ptdefault", help="a variant key of bench_e2e / bench_e2e_django")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's raw samples here")
    args = parser.parse_args()
    spy = tool("py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="pulsetrace-profile-"))
    raw = args.out or workdir / "samples.txt"
    pg = PostgresServer.create()
    redis = RedisServer.create() if args.app == "e2e" else None
    peers: list[subprocess.Popen[bytes]] = []
    variant = None
    try:
        if args.app == "e2e":
            assert redis is not None
            downstream = free_port()
            peers.append(bench_e2e._peer("downstream", downstream, 0, workdir))
            variants = bench_e2e.build_variants(workdir, pg.dsn, redis.url, f"http://127.0.0.1:{downstream}")
            variant = next(v for v in variants if v.key == args.config)
            bench_e2e._start(variant, workdir, peers)
            url, script, conns = variant.url + "/orders", post_script(bench_e2e.BODY), bench_e2e.CONNECTIONS
        else:
            env = {"DB_NAME": pg.database, "DB_USER": pg.user, "DB_PASSWORD": pg.password, "DB_PORT": str(pg.port),
                   "DJANGO_SETTINGS_MODULE": "mysite.settings"}
            root = workdir / "project"
            root.mkdir()
            bench_e2e_django.write_project(root, {**bench_e2e._base_env(), **env, "PYTHONPATH": str(root)})
            variant = next(v for v in bench_e2e_django.build_variants(workdir, root, env) if v.key == args.config)
            variant.proc = subprocess.Popen(variant.cmd, env=variant.env, cwd=root, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.STDOUT)
            wait_port(variant.port, 60)
            url, script, conns = variant.url + "/orders/1/", None, bench_e2e_django.CONNECTIONS
        run_wrk(url, 2.0, connections=conns, script=script)  # warm
        sampler = subprocess.Popen([spy, "record", "--pid", str(variant.proc.pid), "--subprocesses", "--gil",
                                    "--nonblocking", "--rate", "250", "--format", "raw", "-o", str(raw),
                                    "--duration", str(int(args.seconds) + 2)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        result = run_wrk(url, args.seconds, connections=conns, script=script)
        sampler.wait(args.seconds + 60)
        print(f"{args.app} / {variant.label}: {result.requests / args.seconds:,.0f} req/s while sampled\n")
        print(summarise(raw))
    finally:
        if variant is not None:
            bench_e2e._stop(variant.proc)
        for p in peers:
            bench_e2e._stop(p)
        pg.destroy()
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
