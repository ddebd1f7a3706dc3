"""Pytest fixtures for the real OTLP receivers of :mod:`tests.otlp_receiver`.

Import the fixture into a test module (pytest finds it by name)::

    from tests.otlp_fixtures import otlp_receiver  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otlp_receiver import OtlpGrpcReceiver, OtlpReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP/HTTP receiver on loopback; ``.endpoint`` goes in ``tracing.otlp.endpoint``."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    """A started OTLP/gRPC receiver on loopback (``tracing.otlp.protocol: grpc``)."""
    receiver = OtlpGrpcReceiver().start()
    yield receiver
    receiver.stop()
