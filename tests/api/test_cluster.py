"""The embedded cluster: lifecycle as root (through runuser) and as a normal user, restarts keep
data, DATABASE_URL mode manages nothing, and every failure is one clear line."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from api.db import ClusterError, check_reachable, database_url
from api.db import cluster as cluster_mod
from api.db.cluster import EmbeddedCluster, free_port
from api.settings import DatabaseSettings, Settings


@pytest.fixture
def scratch() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="gp-cluster-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _roundtrip(cluster: EmbeddedCluster) -> None:
    """Start, write, stop, start again, read back, stop."""
    cluster.start()
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives restart')")
        assert conn.execute("SELECT postgis_lib_version()").fetchone() is not None
    assert cluster.stop() is True
    assert not cluster.running()
    cluster.start()
    with psycopg.connect(cluster.url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == ("survives restart",)
    cluster.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path needs root")
def test_as_root_the_cluster_runs_as_postgres_and_keeps_data(scratch: Path) -> None:
    cluster = EmbeddedCluster(scratch / "pg", port=free_port())
    try:
        _roundtrip(cluster)
        assert (scratch / "pg").stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert cluster.log_path.exists()
    finally:
        cluster.destroy()


def _as_nobody(data_dir: str, port: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        cluster = EmbeddedCluster(Path(data_dir), port=port)
        assert not cluster.as_root
        _roundtrip(cluster)
        queue.put(("ok", Path(data_dir).stat().st_uid))
    except Exception as exc:  # noqa: BLE001 - report anything to the parent
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_as_a_normal_user_the_binaries_run_directly(scratch: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    data_dir = scratch / "pg"
    data_dir.mkdir()
    os.chown(data_dir, nobody.pw_uid, nobody.pw_gid)
    queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()  # type: ignore[type-arg]
    proc = multiprocessing.get_context("fork").Process(
        target=_as_nobody, args=(str(data_dir), free_port(), queue)
    )
    proc.start()
    proc.join(120)
    try:
        status, detail = queue.get(timeout=5)
        assert status == "ok", detail
        assert detail == nobody.pw_uid
    finally:
        if proc.is_alive():
            proc.kill()
        EmbeddedCluster(data_dir).destroy()


def test_database_url_mode_manages_no_cluster(
    db_url: str, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(db=DatabaseSettings(url=db_url, data_dir=scratch / "never"))
    assert database_url(settings, start=True) == db_url
    assert not (scratch / "never").exists()
    monkeypatch.setenv("DATABASE_URL", db_url)
    result = CliRunner().invoke(cli, ["db", "start"])
    assert result.exit_code == 1
    assert "DATABASE_URL is set" in result.output
    assert CliRunner().invoke(cli, ["db", "status"]).output.startswith("external database")


def test_unreachable_database_url_is_one_clear_line() -> None:
    with pytest.raises(ClusterError, match=r"DATABASE_URL 127\.0\.0\.1:\d+/x is unreachable"):
        check_reachable(f"postgresql://u:p@127.0.0.1:{free_port()}/x")


def test_busy_port_is_refused(scratch: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster = EmbeddedCluster(scratch / "pg", port=port)
        try:
            with pytest.raises(ClusterError, match=f"port {port} is busy"):
                cluster.start()
        finally:
            cluster.destroy()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership check as root")
def test_data_dir_owned_by_someone_else_is_refused(scratch: Path) -> None:
    data_dir = scratch / "pg"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")  # looks like a cluster, but root owns it
    with pytest.raises(ClusterError, match="owned by 'root', expected 'postgres'"):
        EmbeddedCluster(data_dir, port=free_port()).start()


def test_missing_postgis_names_the_apt_packages(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_mod, "_sharedir", lambda _bindir: scratch)
    with pytest.raises(ClusterError, match="apt-get install postgresql-15-postgis-3"):
        EmbeddedCluster(scratch / "pg", port=free_port()).init()
