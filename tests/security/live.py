"""A real ``gridpatrol serve`` in a subprocess (uvicorn with its own protocol, the OsmAnd
server), on free ports, against the test database; output to a log file, stopped in teardown.
The body-limit and slow-client tests need a real server: TestClient reads whole bodies and has
no sockets. Also raw-socket helpers for requests a normal client would never send."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from api.db.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "security"
HOST = "127.0.0.1"


@dataclass
class Live:
    api: int
    osmand: int
    pid: int
    log: Path
    jt808: int = 0

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.api}"


@contextmanager
def live_server(url: str, state: Path, name: str, **env: str) -> Iterator[Live]:
    """``gridpatrol serve`` with ``GRIDPATROL_…`` overrides in ``env``."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    api, osmand, jt808 = free_port(), free_port(), free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "GRIDPATROL_API_HOST": HOST,
        "GRIDPATROL_API_PORT": str(api),
        "GRIDPATROL_API_STATE_DIR": str(state),
        "GRIDPATROL_API_TOKEN_CACHE_SECONDS": "0",
        "GRIDPATROL_OSMAND_HOST": HOST,
        "GRIDPATROL_OSMAND_PORT": str(osmand),
        "GRIDPATROL_JT808_HOST": HOST,
        "GRIDPATROL_JT808_PORT": str(jt808),
        "GRIDPATROL_COVERAGE_UPDATE_INTERVAL_S": "3600",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    log_path = OUTPUT / f"{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "serve"],
            env=environment,
            cwd=state,  # no .env from the working tree
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        live = Live(api=api, osmand=osmand, pid=proc.pid, log=log_path, jt808=jt808)
        try:
            _wait_until_up(proc, live)
            yield live
        finally:
            stop_process(proc, signal.SIGINT)


def stop_process(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Ask ``proc`` to stop with ``signum``; killed if it has not within 30 s."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until_up(proc: subprocess.Popen[bytes], live: Live) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{live.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{live.base}/healthz", timeout=2).status_code == 200:
                with socket.create_connection((HOST, live.osmand), timeout=2):
                    return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server did not come up:\n{live.log.read_text()[-3000:]}")


def connect(port: int, timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, timeout: float = 20.0) -> bytes:
    """What the server answers, until it closes or a whole response (by Content-Length) came;
    b"" when it closed without a word; raises TimeoutError when it kept silent."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), f"no HTTP response: {response[:200]!r}"
    return int(response.split(b" ", 2)[1])


def answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) — without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def closed_within(sock: socket.socket, seconds: float, dribble: bytes = b"") -> tuple[bool, bytes]:
    """Send ``dribble`` one byte every 0.5 s (nothing when empty) until the server answers or
    closes, for at most ``seconds``; returns (closed, what it sent)."""
    end = time.monotonic() + seconds
    sent = 0
    received = b""
    while time.monotonic() < end:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return True, received
            if not chunk:
                return True, received
            received += chunk
            continue
        if dribble:
            try:
                sock.sendall(dribble[sent % len(dribble) : sent % len(dribble) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True, received
            sent += 1
    return False, received


def township(db_url: str, from_last: int) -> str:
    """The league's township code ``from_last`` places from the end (tests that run a demo
    fleet each take their own, where no other test drives)."""
    with psycopg.connect(db_url, autocommit=True) as db:
        row = db.execute(
            "SELECT code FROM admin_area WHERE level = 'township' ORDER BY code DESC "
            "LIMIT 1 OFFSET %s",
            (from_last,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def demo_fleet_env(
    db_url: str, osmand: int, jt808: int, area: str, vehicles: int, **demo: str
) -> dict[str, str]:
    """The demo fleet's environment against listeners on ``osmand`` and ``jt808`` (this host):
    ``demo`` are ``GRIDPATROL_DEMO_…`` values by lower-case name."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "GRIDPATROL_OSMAND_HOST": HOST,
        "GRIDPATROL_OSMAND_PORT": str(osmand),
        "GRIDPATROL_JT808_HOST": HOST,
        "GRIDPATROL_JT808_PORT": str(jt808),
        "GRIDPATROL_DEMO_VEHICLES": str(vehicles),
        "GRIDPATROL_DEMO_AREA": area,
        **{f"GRIDPATROL_DEMO_{key.upper()}": value for key, value in demo.items()},
    }


@contextmanager
def demo_fleet(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m api.demofleet`` with its output in ``log_path``; stopped on leaving."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.demofleet"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_process(proc)
