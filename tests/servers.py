"""Real throwaway servers for the tests: PostgreSQL, Redis (shared with the demo), moto (AWS APIs)."""

from __future__ import annotations

from dataclasses import dataclass

from pulsetrace.demo.local_servers import PG_PASSWORD, PostgresServer, RedisServer, free_port, wait_port

__all__ = ["PG_PASSWORD", "PostgresServer", "RedisServer", "MotoServer", "free_port", "wait_port", "AWS_TEST_ENV"]


@dataclass
class MotoServer:
    port: int
    server: object

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def create(cls) -> MotoServer:
        from moto.server import ThreadedMotoServer

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        wait_port(port)
        return cls(port=port, server=server)

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=5).read()

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
