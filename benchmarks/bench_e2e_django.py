"""End-to-end overhead on a Django project under gunicorn: uninstrumented, pulsetrace's default
tiers, and upstream ``opentelemetry-instrument``, in one run.

The project is written the way the compatibility suite writes one (``startproject``, one app):
``GET /orders/<int:order_id>/`` reads through the Django ORM on PostgreSQL (psycopg) and answers
JSON. Each configuration is its own long-lived ``gunicorn -w 2`` (sync workers) under its real
wrapper, all running at once, driven in interleaved rounds by ``wrk -t1 -c4`` (sync workers serve
one request at a time; more connections only queue):

==================  ==========================================================================
uninstrumented      ``gunicorn`` alone
pulsetrace tiers    ``pulsetrace run -- gunicorn`` with the default configuration (``/orders*``
                    is the business tier, 30 % + 1 trace/s; the local store)
upstream OTel       ``opentelemetry-instrument gunicorn`` with opentelemetry-distro's defaults
                    (always-on sampling, OTLP traces + metrics + logs over http/protobuf to a
                    local accept-everything endpoint; contrib's Django and psycopg instrumentors)
==================  ==========================================================================

CPU is user+system of the whole process tree (wrapper included). ``python -m benchmarks --only
e2e_django``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

from benchmarks.bench_e2e import Variant, _base_env, _med, _peer, _stop
from benchmarks.e2e_load import run_wrk, tree_cpu_seconds
from benchmarks.harness import Comparison, tool
from pulsetrace.demo.local_servers import PostgresServer, free_port, wait_port

CONNECTIONS = 4
SETTLE_S = 1.0

VIEWS = """
from django.http import JsonResponse

from .models import Order


def order(request, order_id):
    found = Order.objects.filter(pk=order_id).values("item", "amount").first()
    return JsonResponse({"order": order_id, "found": found is not None})
"""
MODELS = """
from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
"""
URLS = """
from django.urls import path

from shop import views

urlpatterns = [path("orders/<int:order_id>/", views.order)]
"""
SETTINGS_TAIL = """
import os
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS += ["shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ["DB_NAME"],
                         "USER": os.environ["DB_USER"], "PASSWORD": os.environ["DB_PASSWORD"],
                         "HOST": "127.0.0.1", "PORT": os.environ["DB_PORT"], "CONN_MAX_AGE": 60}}
"""


def write_project(root: Path, env: dict[str, str]) -> None:
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "django-admin"), "startproject", "mysite", "."], cwd=root, check=True)
    subprocess.run([sys.executable, "manage.py", "startapp", "shop"], cwd=root, check=True)
    with (root / "mysite" / "settings.py").open("a") as f:
        f.write(SETTINGS_TAIL)
    (root / "shop" / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "shop" / "views.py").write_text(textwrap.dedent(VIEWS))
    (root / "mysite" / "urls.py").write_text(textwrap.dedent(URLS))
    for args in (["makemigrations", "shop", "-v", "0"], ["migrate", "-v", "0"]):
        subprocess.run([sys.executable, "manage.py", *args], cwd=root, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from shop.models import Order; Order.objects.create(id=1, item='book', amount=499)"],
                   cwd=root, env=env, check=True)


def _gunicorn(port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", "mysite.wsgi"]


def build_variants(workdir: Path, root: Path, env: dict[str, str]) -> list[Variant]:
    base = {**_base_env(), **env, "PYTHONPATH": str(root)}
    variants = []
    port = free_port()
    variants.append(Variant("bare", "uninstrumented", _gunicorn(port), base, port))
    cfg = workdir / "pulsetrace.yaml"
    cfg.write_text(yaml.safe_dump({"service": {"name": "shop-django"}, "store": {"path": str(workdir / "store")},
                                   "health": {"listen": f"127.0.0.1:{free_port()}"}}))
    port = free_port()
    variants.append(Variant("ptdefault", "pulsetrace default tiers",
                            [sys.executable, "-m", "pulsetrace.cli.main", "run", "--config", str(cfg), "--",
                             *_gunicorn(port)], base, port))
    oi = tool("opentelemetry-instrument")
    port, sink = free_port(), free_port()
    variants.append(Variant("otel", "upstream OTel (defaults)", [oi, *_gunicorn(port)],
                            {**base, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
                             "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}",
                             "OTEL_SERVICE_NAME": "shop-django"}, port, sink_port=sink))
    return variants


def _measure(v: Variant, seconds: float) -> None:
    assert v.proc is not None
    cpu0 = tree_cpu_seconds(v.proc.pid)
    result = run_wrk(v.url + "/orders/1/", seconds, connections=CONNECTIONS)
    import time

    time.sleep(SETTLE_S)
    cpu1 = tree_cpu_seconds(v.proc.pid)
    if result.non_2xx or result.errors or v.proc.poll() is not None:
        raise RuntimeError(f"{v.label}: {result.non_2xx} non-2xx, {result.errors} errors\n"
                           f"{v.log.read_text(errors='replace')[-3000:] if v.log else ''}")
    v.runs.append(result)
    v.cpu_per_req.append((cpu1 - cpu0) / max(1, result.requests))


def run(quick: bool) -> list[Comparison]:
    rounds, seconds = (2, 3.0) if quick else (5, 8.0)
    workdir = Path(tempfile.mkdtemp(prefix="pulsetrace-bench-django-"))
    pg = PostgresServer.create()
    peers: list[subprocess.Popen[bytes]] = []
    variants: list[Variant] = []
    try:
        env = {"DB_NAME": pg.database, "DB_USER": pg.user, "DB_PASSWORD": pg.password, "DB_PORT": str(pg.port),
               "DJANGO_SETTINGS_MODULE": "mysite.settings"}
        root = workdir / "project"
        root.mkdir()
        write_project(root, {**_base_env(), **env, "PYTHONPATH": str(root)})
        variants = build_variants(workdir, root, env)
        for v in variants:
            if v.sink_port is not None:
                peers.append(_peer("sink", v.sink_port, 0, workdir))
            v.log = workdir / f"{v.key}.log"
            v.proc = subprocess.Popen(v.cmd, env=v.env, cwd=root, stdout=v.log.open("wb"), stderr=subprocess.STDOUT)
            wait_port(v.port, 60)
            run_wrk(v.url + "/orders/1/", 1.0, connections=CONNECTIONS)  # warm: connections, imports
        for i in range(rounds):
            for v in (variants if i % 2 == 0 else list(reversed(variants))):
                _measure(v, seconds)
    finally:
        for v in variants:
            _stop(v.proc)
        for p in peers:
            _stop(p)
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    bare, ptdef, otel = variants
    setup = (f"{rounds} interleaved rounds × {seconds:g} s of wrk -t1 -c{CONNECTIONS} per configuration; "
             "gunicorn -w 2 sync; GET /orders/<int:order_id>/ (one ORM query on PostgreSQL). Absolute: "
             + "; ".join(f"{v.label}: {_med(v.rps()):,.0f} req/s, p99 {_med(v.p99()) * 1e3:.1f} ms, "
                         f"{_med(v.cpu_per_req) * 1e6:,.0f} µs CPU/req" for v in variants))
    return [
        Comparison("django/gunicorn throughput: default tiers vs none", ptdef.label, bare.label, "req/s", ptdef.rps(),
                   bare.rps(), goal=(">=", 0.9), note=setup),
        Comparison("django/gunicorn CPU/request: default tiers vs none", ptdef.label, bare.label, "s",
                   ptdef.cpu_per_req, bare.cpu_per_req, goal=None),
        Comparison("django/gunicorn CPU/request: upstream OTel vs none", otel.label, bare.label, "s",
                   otel.cpu_per_req, bare.cpu_per_req, goal=None),
        Comparison("django/gunicorn throughput: upstream OTel vs none", otel.label, bare.label, "req/s", otel.rps(),
                   bare.rps(), goal=None),
        Comparison("django/gunicorn throughput: default tiers vs upstream OTel", ptdef.label, otel.label, "req/s",
                   ptdef.rps(), otel.rps(), goal=(">=", 1.0)),
        Comparison("django/gunicorn CPU/request: default tiers vs upstream OTel", ptdef.label, otel.label, "s",
                   ptdef.cpu_per_req, otel.cpu_per_req, goal=("<=", 1.0)),
        Comparison("django/gunicorn p99: default tiers vs none", ptdef.label, bare.label, "s", ptdef.p99(), bare.p99()),
    ]
