"""A Flask app under ``pulsetrace run``: gunicorn gthread, ``flask run`` and waitress; SQLAlchemy on
PostgreSQL and redis. One trace per request rooted at the server span, named for Flask's url rule,
the exception Flask turns into a 500 recorded on it."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.support import (
    BIN, EXIT_DEADLINE_S, RunningApp, check_one_trace, children_of_kind, exception_events, get, request_trace,
    start_app, stop_app,
)
from tests.servers import PostgresServer, RedisServer, free_port

pytestmark = pytest.mark.timeout(240)

APP = """
import os

import redis
from flask import Flask, jsonify
from sqlalchemy import Column, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Session


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "flask_orders"
    id = Column(Integer, primary_key=True)
    customer = Column(String(64))


engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=False)
Base.metadata.create_all(engine)
cache = redis.Redis.from_url(os.environ["REDIS_URL"])
app = Flask(__name__)


@app.get("/orders/<customer>")
def orders(customer):
    with Session(engine) as session:
        session.add(Order(customer=customer))
        session.commit()
        count = len(session.scalars(select(Order).where(Order.customer == customer)).all())
    cache.incr(f"orders:{customer}")
    return jsonify(customer=customer, orders=count)


@app.get("/fail")
def fail():
    raise RuntimeError("payment ledger offline")
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
            redis_server: RedisServer) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("flask")
    (root / "shop.py").write_text(textwrap.dedent(APP))
    pg = postgres_server
    env = {"DATABASE_URL": f"postgresql+psycopg://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{pg.database}",
           "REDIS_URL": redis_server.url}
    return root, env


SERVERS = {
    "gunicorn-gthread": lambda port: [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "4", "-w", "2",
                                      "-b", f"127.0.0.1:{port}", "shop:app"],
    "flask-run": lambda port: [str(BIN / "flask"), "--app", "shop", "run", "--port", str(port)],
    "waitress": lambda port: [str(BIN / "waitress-serve"), "--listen", f"127.0.0.1:{port}", "shop:app"],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def app(request: pytest.FixtureRequest, project: tuple[Path, dict[str, str]],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningApp]]:
    root, env = project
    port = free_port()
    running = start_app(tmp_path_factory.mktemp(request.param), f"flask-{request.param}",
                        SERVERS[request.param](port), port=port, cwd=root, env=env)
    yield request.param, running
    stop_app(running)


def test_a_request_is_one_trace_with_sqlalchemy_and_redis_children(app: tuple[str, RunningApp]) -> None:
    server, running = app
    for i in range(3):
        path = f"/orders/ada-{server}-{i}"
        status, body = get(running.url + path)
        assert status == 200, (body, running.output())
        spans = request_trace(running.store, path)
        root = check_one_trace(spans, name="GET /orders/<customer>", route="/orders/<customer>")
        assert root.attributes["http.response.status_code"] == 200
        clients = children_of_kind(spans, "client")
        systems = [s.attributes.get("db.system", s.attributes.get("db.system.name")) for s in clients]
        assert systems.count("postgresql") >= 2, [s.name for s in clients]
        assert "redis" in systems, [s.name for s in clients]


def test_an_exception_turned_into_a_500_is_recorded_once(app: tuple[str, RunningApp]) -> None:
    _, running = app
    status, _ = get(running.url + "/fail")
    assert status == 500
    root = check_one_trace(request_trace(running.store, "/fail"), name="GET /fail", route="/fail")
    assert root.status == "error"
    events = exception_events(root)
    assert [e["attributes"]["exception.type"] for e in events] == ["RuntimeError"], root.events


#: A server's own shutdown with this app and no agent at all, measured here: gunicorn with gthread workers
#: takes 1.9 to 3.7 s after SIGTERM (its workers, agent or not, are gone within a millisecond; the master
#: takes the rest). The agent's bar is on top.
OWN_SHUTDOWN_S = {"gunicorn-gthread": 2.5}


def test_zz_the_server_exits_cleanly_soon_after_sigterm(app: tuple[str, RunningApp]) -> None:
    server, running = app
    took = stop_app(running)
    assert took <= EXIT_DEADLINE_S + OWN_SHUTDOWN_S.get(server, 0.0), f"took {took:.2f} s\n{running.output()}"
