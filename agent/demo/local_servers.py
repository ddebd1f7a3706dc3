"""Throwaway PostgreSQL and Redis servers on loopback, from the system's binaries.

Used by ``pulsetrace demo`` (and the tests). Each binds a free port on 127.0.0.1 and
lives in a temporary directory. PostgreSQL refuses to run as root, so as root the
cluster is created and started as the ``postgres`` system user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_PASSWORD = "pg-s3cret-Pw9"


def postgres_available() -> bool:
    try:
        _pg_bin("initdb")
        _pg_bin("pg_ctl")
    except FileNotFoundError:
        return False
    return os.geteuid() != 0 or shutil.which("runuser") is not None


def redis_available() -> bool:
    return shutil.which("redis-server") is not None or os.path.exists("/usr/bin/redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise FileNotFoundError(f"PostgreSQL binary {name} not found (apt-get install postgresql)")


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresServer:
    """A PostgreSQL cluster: database ``shop``, user ``app`` with a password."""

    datadir: Path
    port: int
    user: str = "app"
    password: str = PG_PASSWORD
    database: str = "shop"
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.datadir.parent / "pg.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @classmethod
    def create(cls, password: str = PG_PASSWORD) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="pulsetrace-pg-"))
        datadir = root / "data"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            os.chmod(root, 0o755)
        pwfile = root / "pw"
        pwfile.write_text("postgres-admin\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(_as_pg_user([_pg_bin("initdb"), "-D", str(datadir), "-U", "postgres", "-A", "md5",
                                    "--pwfile", str(pwfile), "-E", "UTF8", "--locale=C"]),
                       check=True, capture_output=True)
        with (datadir / "postgresql.conf").open("a") as fh:
            fh.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                     f"unix_socket_directories = '{root}'\nlisten_addresses = '127.0.0.1'\n"
                     "shared_buffers = 32MB\nmax_connections = 200\n")
        server = cls(datadir=datadir, port=free_port(), password=password)
        server.start()
        env = {**os.environ, "PGPASSWORD": "postgres-admin"}
        psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-c", f"CREATE USER app WITH PASSWORD '{password}'"], check=True,
                       capture_output=True, env=env)
        subprocess.run([*psql, "-c", "CREATE DATABASE shop OWNER app"], check=True, capture_output=True, env=env)
        return server

    def start(self) -> None:
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.log),
                                    "-o", f"-p {self.port}", "-w", "-t", "30", "start"]),
                       check=True, capture_output=True)
        wait_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
                       capture_output=True)

    def admin_sql(self, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": "postgres-admin"}
        out = subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                              self.database, "-At", "-c", sql], check=True, capture_output=True, text=True, env=env)
        return out.stdout.strip()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def create(cls) -> RedisServer:
        server = cls(port=free_port())
        server.start()
        return server

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
