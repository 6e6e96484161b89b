"""Fixtures of the fault tests: their own PostgreSQL cluster (restarted by one of them, so never
the session's), a fresh migrated database per test, and ``gridpatrol serve`` as a subprocess
on free ports that a test may kill -9 and start again. Every process started here is stopped
in teardown; its output goes to a log file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.auth import SYSTEM
from api.db import migrate
from api.db.cluster import EmbeddedCluster, free_port
from api.users import create_user
from tests.conftest import run

START_TIMEOUT_S = 90.0


@pytest.fixture(scope="package")
def fault_cluster() -> Iterator[EmbeddedCluster]:
    """A throwaway cluster of the fault tests alone (one of them restarts it)."""
    base = Path(tempfile.mkdtemp(prefix="gridpatrol-faults-"))
    base.chmod(0o755)  # the postgres system user must traverse it
    cluster = EmbeddedCluster(base / "pg", port=free_port(), dbname="faults")
    cluster.start()
    yield cluster
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fault_db(fault_cluster: EmbeddedCluster, request: pytest.FixtureRequest) -> str:
    """A new database in the fault cluster, with PostGIS and the schema; its URL."""
    name = "f_" + request.node.name.removeprefix("test_")[:40]
    admin = fault_cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = fault_cluster.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    migrate.upgrade(url)
    return url


def admin_url(url: str) -> str:
    """The same cluster's ``postgres`` database (for ALTER DATABASE and terminating sessions)."""
    return url.rsplit("/", 1)[0] + "/postgres"


def admin_token(url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return (await create_user(conn, SYSTEM, "fault-admin", role="admin", scope=["*"])).token

    return run(make())


class Server:
    """``gridpatrol serve`` in its own process group: start, kill -9, start again, stop."""

    def __init__(self, url: str, log_path: Path, state_dir: Path) -> None:
        self.ports = {"api": free_port(), "osmand": free_port(), "jt808": free_port()}
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "GRIDPATROL_API_PORT": str(self.ports["api"]),
            "GRIDPATROL_OSMAND_PORT": str(self.ports["osmand"]),
            "GRIDPATROL_JT808_PORT": str(self.ports["jt808"]),
            "GRIDPATROL_API_STATE_DIR": str(state_dir),
            "GRIDPATROL_COVERAGE_UPDATE_INTERVAL_S": "3600",
            "GRIDPATROL_DISPATCH_TICK_S": "3600",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until every listener accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n==== start {self.starts} ====\n")
            log.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from api.cli import main; main()",
                    "serve",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in self.ports.values():
            while not _listening(port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited; see {self.log_path}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not listening after {START_TIMEOUT_S}s")
                time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown, nothing flushed, sockets reset."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """Ctrl-C (clean shutdown), SIGKILL when that takes too long; no-op when stopped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(fault_db: str, tmp_path: Path) -> Iterator[Server]:
    """The server on the test's database, started; always stopped afterwards."""
    srv = Server(fault_db, tmp_path / "server.log", tmp_path / "state")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def http_request(port: int, target: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection; (status, lower-case headers, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=kwargs.pop("timeout", 30))
    try:
        conn.request(kwargs.pop("method", "GET"), target, **kwargs)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
