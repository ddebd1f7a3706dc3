"""Shared fixtures: real PostgreSQL, Redis and moto servers on loopback, and a clean agent."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import AWS_TEST_ENV, MotoServer, PostgresServer, RedisServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (tests that stop it must start it again)."""
    server = PostgresServer.create()
    yield server
    server.destroy()


@pytest.fixture
def postgres_own() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, for tests that kill or stop it."""
    server = PostgresServer.create()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer.create()
    yield server
    server.stop()


@pytest.fixture
def redis_own() -> Iterator[RedisServer]:
    """A Redis server of the test's own, for tests that freeze or stop it."""
    server = RedisServer.create()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    for key, value in AWS_TEST_ENV.items():
        os.environ.setdefault(key, value)
    server = MotoServer.create()
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS variables pointing every client at the moto server."""
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_server.url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def clean_agent() -> Iterator[None]:
    """Reset the process-wide agent and OpenTelemetry globals around an in-process test."""
    from tests.otel_globals import reset_otel_globals

    reset_otel_globals()
    yield
    from pulsetrace.runtime import shutdown

    shutdown(timeout=2.0)
    reset_otel_globals()
