"""Django 5 (``startproject`` + one app + the admin) under ``pulsetrace run``: gunicorn sync
``--preload -w 2`` and ``manage.py runserver``; the Django ORM on PostgreSQL (psycopg) and
``requests`` to a loopback service. One trace per request, rooted at the server span, named
for Django's route template; the exception Django turns into a 500 recorded on it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.support import (
    BIN, EXIT_DEADLINE_S, LoopbackService, RunningApp, check_one_trace, children_of_kind, exception_events, get,
    request_trace, start_app, stop_app,
)
from tests.servers import PostgresServer, free_port

pytestmark = pytest.mark.timeout(240)

SETTINGS_TAIL = """
import os
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS += ["users"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ["DB_NAME"], "USER": os.environ["DB_USER"], "PASSWORD": os.environ["DB_PASSWORD"],
    "HOST": "127.0.0.1", "PORT": os.environ["DB_PORT"],
}}
DOWNSTREAM_URL = os.environ["DOWNSTREAM_URL"]
"""

MODELS = """
from django.db import models


class Profile(models.Model):
    name = models.SlugField(unique=True)
    visits = models.IntegerField(default=0)
"""

ADMIN = """
from django.contrib import admin

from .models import Profile

admin.site.register(Profile)
"""

VIEWS = """
import requests
from django.conf import settings
from django.http import JsonResponse

from .models import Profile


def profile(request, name):
    user, _ = Profile.objects.get_or_create(name=name)
    Profile.objects.filter(pk=user.pk).update(visits=user.visits + 1)
    downstream = requests.get(f"{settings.DOWNSTREAM_URL}/quota/{name}", timeout=5).json()
    return JsonResponse({"name": user.name, "downstream": downstream["ok"]})


def broken(request):
    raise ValueError("the ledger is inconsistent")
"""

URLS = """
from django.contrib import admin
from django.urls import path

from users import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("users/<slug:name>/", views.profile),
    path("broken/", views.broken),
]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("django")
    subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", "."], cwd=root, check=True)
    subprocess.run([sys.executable, "manage.py", "startapp", "users"], cwd=root, check=True)
    with (root / "mysite" / "settings.py").open("a") as f:
        f.write(SETTINGS_TAIL)
    (root / "users" / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "users" / "admin.py").write_text(textwrap.dedent(ADMIN))
    (root / "users" / "views.py").write_text(textwrap.dedent(VIEWS))
    (root / "mysite" / "urls.py").write_text(textwrap.dedent(URLS))
    downstream = LoopbackService()
    env = {"DB_NAME": postgres_server.database, "DB_USER": postgres_server.user,
           "DB_PASSWORD": postgres_server.password, "DB_PORT": str(postgres_server.port),
           "DOWNSTREAM_URL": downstream.url, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    import os

    run_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "makemigrations", "users", "-v", "0"], cwd=root, env=run_env,
                   check=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=run_env, check=True)
    yield root, env
    downstream.close()


SERVERS = {
    "gunicorn-preload": lambda port: [str(BIN / "gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}",
                                      "mysite.wsgi"],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
    # uWSGI forks its workers after loading the app (like --preload); --die-on-term: SIGTERM stops it;
    # --py-call-osafterfork: Python's at-fork hooks run in its workers (docs/compatibility.md)
    "uwsgi": lambda port: [str(BIN / "uwsgi"), "--http", f"127.0.0.1:{port}", "--module", "mysite.wsgi",
                           "--master", "--processes", "2", "--die-on-term", "--py-call-osafterfork",
                           "--disable-logging"],
    # daphne is Django's own ASGI server (it runs no ASGI lifespan, so it serves Django, not the FastAPI app)
    "daphne": lambda port: [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "mysite.asgi:application"],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def app(request: pytest.FixtureRequest, project: tuple[Path, dict[str, str]],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningApp]]:
    root, env = project
    port = free_port()
    running = start_app(tmp_path_factory.mktemp(request.param), f"django-{request.param}",
                        SERVERS[request.param](port), port=port, cwd=root, env=env)
    yield request.param, running
    stop_app(running)


def test_a_request_is_one_trace_rooted_at_the_server_span_with_orm_and_http_children(
        app: tuple[str, RunningApp]) -> None:
    server, running = app
    for i in range(4):  # both --preload workers serve some of them
        path = f"/users/alice-{server}-{i}/"
        status, body = get(running.url + path)
        assert status == 200, (body, running.output())
        spans = request_trace(running.store, path)
        root = check_one_trace(spans, name="GET users/<slug:name>/", route="users/<slug:name>/")
        assert root.attributes["http.response.status_code"] == 200
        clients = children_of_kind(spans, "client")
        databases = [s for s in clients if s.attributes.get("db.system", s.attributes.get("db.system.name"))
                     == "postgresql"]
        assert len(databases) >= 2, [s.name for s in clients]  # get_or_create + update
        http = [s for s in clients if s.attributes.get("http.request.method", s.attributes.get("http.method"))]
        assert len(http) == 1, [s.name for s in clients]
    assert "Traceback" not in running.output(), running.output()


def test_the_admin_is_served_with_its_route(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/admin/login/")
    assert status == 200
    spans = request_trace(running.store, "/admin/login/")
    check_one_trace(spans, name="GET admin/login/", route="admin/login/")


def test_an_exception_turned_into_a_500_is_recorded_on_the_server_span(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/broken/")
    assert status == 500
    spans = request_trace(running.store, "/broken/")
    root = check_one_trace(spans, name="GET broken/", route="broken/")
    assert root.status == "error"
    events = exception_events(root)
    assert len(events) == 1, root.events
    assert events[0]["attributes"]["exception.type"] == "ValueError"
    assert events[0]["attributes"]["exception.message"] == "the ledger is inconsistent"


def test_an_unrouted_path_is_named_by_its_template_without_a_route(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/no/such/page/42")
    assert status == 404
    root = request_trace(running.store, "/no/such/page/42")[0]
    assert "http.route" not in root.attributes
    assert root.name == "GET /no/such/page/{id}"


#: A server's own shutdown with no agent at all, measured here: uWSGI's master buries its workers in
#: about 2.2 s (`uwsgi --master --processes 2 --die-on-term`, SIGTERM). The agent's bar comes on top.
OWN_SHUTDOWN_S = {"uwsgi": 2.5}


def test_zz_the_server_exits_cleanly_soon_after_sigterm(app: tuple[str, RunningApp]) -> None:
    server, running = app
    took = stop_app(running)
    assert took <= EXIT_DEADLINE_S + OWN_SHUTDOWN_S.get(server, 0.0), f"took {took:.2f} s\n{running.output()}"
