"""The embedded PostgreSQL + PostGIS cluster that ``make run`` creates under a data directory.

``initdb`` and ``pg_ctl`` refuse to run as root. When we are root, the data directory is owned by
the ``postgres`` system user and every server binary runs through ``runuser -u postgres``; as a
normal user the binaries run directly. The cluster listens on 127.0.0.1 only, with a generated
password (SCRAM) stored beside the data in a 0600 file, and no Unix socket (socket paths have a
107-byte limit that deep data directories exceed).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

SERVER_USER = "postgres"
PASSWORD_FILE = "gridpatrol.password"  # noqa: S105 - a file name
CONF_FILE = "gridpatrol.conf"
LOG_FILE = "server.log"
APT_PACKAGES = "postgresql-15-postgis-3 postgresql-15-pgrouting"


class ClusterError(RuntimeError):
    """A one-line, actionable problem with the embedded cluster."""


def find_bindir() -> Path:
    """Directory of ``initdb``/``pg_ctl``: ``pg_config --bindir`` first, else the newest
    ``/usr/lib/postgresql/*/bin``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    raise ClusterError(
        f"PostgreSQL server binaries not found; install them: apt-get install {APT_PACKAGES}"
    )


def _sharedir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0:
            return Path(out.stdout.strip())
    return Path("/usr/share/postgresql") / bindir.parent.name


def extension_available(bindir: Path, name: str) -> bool:
    return (_sharedir(bindir) / "extension" / f"{name}.control").exists()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedCluster:
    """A PostgreSQL cluster in ``data_dir`` serving database ``dbname`` on ``127.0.0.1:port``."""

    data_dir: Path
    port: int = 5433
    dbname: str = "gridpatrol"
    user: str = "gridpatrol"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.as_root = os.geteuid() == 0

    # ---- facts -------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def password(self) -> str:
        path = self.data_dir / PASSWORD_FILE
        if not path.exists():
            raise ClusterError(f"{path} is missing: the cluster was not created by gridpatrol")
        return path.read_text().strip()

    @property
    def url(self) -> str:
        """libpq URL of the cluster's application database."""
        return (
            f"postgresql://{self.user}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{self.dbname}"
        )

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def running(self) -> bool:
        if not self.initialized:
            return False
        out = self._run(["pg_ctl", "status", "-D", str(self.data_dir)], check=False)
        return out.returncode == 0

    def running_port(self) -> int | None:
        """Port of the running postmaster, read from ``postmaster.pid`` (line 4)."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    # ---- lifecycle ---------------------------------------------------------------------------
    def init(self) -> bool:
        """Create the cluster if the data directory holds none. Returns True when created."""
        bindir = find_bindir()
        if not extension_available(bindir, "postgis"):
            raise ClusterError(
                f"PostGIS is not installed for {bindir.parent.name}: apt-get install {APT_PACKAGES}"
            )
        if self.initialized:
            self._check_owner()
            return False
        self._prepare_dir()
        password = secrets.token_urlsafe(24)
        fd, name = tempfile.mkstemp(prefix="gridpatrol-pw-")  # 0600, outside the data dir
        pwfile = Path(name)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if self.as_root:
            shutil.chown(pwfile, SERVER_USER, SERVER_USER)
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                ],
                check=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.data_dir / PASSWORD_FILE).write_text(password + "\n")
        (self.data_dir / PASSWORD_FILE).chmod(0o600)
        self._write_conf()
        return True

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the server (creating the cluster first if needed); no-op when it runs."""
        self.init()
        if self.running():
            running_port = self.running_port()
            if running_port is not None and running_port != self.port:
                raise ClusterError(
                    f"the cluster in {self.data_dir} already runs on port {running_port}, "
                    f"not {self.port}; stop it first (gridpatrol db stop)"
                )
            return
        if not port_is_free(self.port):
            raise ClusterError(
                f"port {self.port} is busy; choose another with GRIDPATROL_DB_PORT=…"
            )
        self._pg_ctl_start(timeout)
        self.ensure_database()

    def start_replica_of(self, primary_url: str, *, timeout: float = 120.0) -> None:
        """Make this (empty) data directory a hot-standby streaming replica of ``primary_url``
        (``pg_basebackup -R``: a superuser or replication role) and start it — what
        ``DATABASE_READ_URL`` may point at. Its password file comes with the copy."""
        if self.initialized:
            raise ClusterError(f"{self.data_dir} already holds a cluster")
        if not port_is_free(self.port):
            raise ClusterError(f"port {self.port} is busy")
        self._prepare_dir()
        self._run(
            [
                "pg_basebackup",
                "-D",
                str(self.data_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-d",
                primary_url,
            ],
            check=True,
        )
        self._pg_ctl_start(timeout)

    def stop(self, *, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.running():
            return False
        self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w"], check=True)
        return True

    def ensure_database(self) -> None:
        """Create the application database and its extensions if missing."""
        admin_url = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            if extension_available(find_bindir(), "pgrouting"):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pgrouting")

    def destroy(self) -> None:
        """Stop and delete the cluster (tests only)."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- helpers -----------------------------------------------------------------------------
    def _pg_ctl_start(self, timeout: float) -> None:
        self._run(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                f"-p {self.port}",
            ],
            check=True,
        )
        self._wait_ready(timeout)

    def _run(self, argv: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        binary = str(find_bindir() / argv[0])
        cmd = [binary, *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd="/")
        if check and out.returncode != 0:
            detail = (out.stderr or out.stdout).strip().splitlines()
            tail = detail[-1] if detail else f"exit {out.returncode}"
            raise ClusterError(f"{argv[0]} failed for {self.data_dir}: {tail}")
        return out

    def _prepare_dir(self) -> None:
        if self.as_root:
            try:
                server = pwd.getpwnam(SERVER_USER)
            except KeyError as exc:
                raise ClusterError(
                    f"running as root needs the '{SERVER_USER}' system user; "
                    f"apt-get install {APT_PACKAGES}"
                ) from exc
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if any(self.data_dir.iterdir()):
                raise ClusterError(
                    f"data directory {self.data_dir} is not empty and holds no cluster"
                )
            shutil.chown(self.data_dir, server.pw_uid, server.pw_gid)
            self.data_dir.chmod(0o700)
            probe = subprocess.run(
                ["runuser", "-u", SERVER_USER, "--", "test", "-w", str(self.data_dir)],
                check=False,
            )
            if probe.returncode != 0:
                raise ClusterError(
                    f"the '{SERVER_USER}' user cannot reach {self.data_dir} (a parent directory "
                    "is private); set GRIDPATROL_DB_DATA_DIR to a path it can traverse"
                )
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if any(self.data_dir.iterdir()):
                raise ClusterError(
                    f"data directory {self.data_dir} is not empty and holds no cluster"
                )
            self._check_owner()

    def _check_owner(self) -> None:
        owner_uid = self.data_dir.stat().st_uid
        expected = pwd.getpwnam(SERVER_USER).pw_uid if self.as_root else os.geteuid()
        if owner_uid != expected:
            try:
                owner = pwd.getpwuid(owner_uid).pw_name
            except KeyError:
                owner = str(owner_uid)
            who = SERVER_USER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
            raise ClusterError(
                f"data directory {self.data_dir} is owned by '{owner}', expected '{who}'"
            )

    def _write_conf(self) -> None:
        conf = self.data_dir / CONF_FILE
        conf.write_text(
            "# written by gridpatrol: the embedded cluster listens on loopback only\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "timezone = 'UTC'\n"
            "shared_buffers = '512MB'\n"
            "work_mem = '64MB'\n"
            "maintenance_work_mem = '256MB'\n"
            "max_wal_size = '4GB'\n"
            "checkpoint_timeout = '15min'\n"
            "max_connections = 200\n"
            "logging_collector = off\n"
            "log_min_messages = warning\n"
        )
        main_conf = self.data_dir / "postgresql.conf"
        with main_conf.open("a") as fh:
            fh.write(f"\ninclude_if_exists '{CONF_FILE}'\n")
        if self.as_root:
            for path in (conf, self.data_dir / PASSWORD_FILE):
                shutil.chown(path, SERVER_USER, SERVER_USER)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.2)
        raise ClusterError(f"the cluster did not accept connections within {timeout:.0f}s: {last}")
