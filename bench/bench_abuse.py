"""Abuse benchmark (issue 18): what an attacker without a token, or with a device id only, can
do to the server — measured on this code and, in the same run, on the code before the issue
(commit ``a4ed3cc``, checked out into a temporary git worktree).

Each side runs ``gridpatrol serve`` in a subprocess (its own code on ``PYTHONPATH``, its cwd
its tree) against its own throwaway PostgreSQL cluster, which the server migrates itself. A
setup script, run with that side's code, creates 20 users with passwords and a device. Then,
from this process, loopback only, each loop bounded:

- ``body_413_ms``: an unauthenticated ``POST /api/v1/incidents`` declaring and sending a 100 MB
  JSON body — time from the first byte sent to the first byte of the answer (the baseline read
  the whole body, then said 401); ``rss_growth_mb``: the server's peak RSS (sampled every 10 ms)
  during it, less its RSS before. Median of 5 (baseline: 1).
- ``junk_partitions``: day partitions of ``position`` created by 10,000 fixes with distinct
  bogus dates (one a day from 1990-01-01, all ``too_old``) posted by the device through the
  batch API in 10 requests (baseline: stopped after ``JUNK_BUDGET_S`` when it has not finished;
  the fixes it got through are in ``baseline_junk_fixes_sent``).
- ``healthz_p99_ms_during_signins``: ``/healthz`` polled every 20 ms while 20 concurrent failed
  sign-ins (20 known names, wrong password) run, 5 rounds.
- ``slow_client_closed_s``: a client sending its request line one byte every 10 s — seconds until
  the API closes it (baseline: not closed within ``SLOW_BUDGET_S``: reported as ``null`` with
  ``baseline_slow_client_open_after_s``); ``osmand_slow_client_closed_s`` the same on OsmAnd.
- ``osmand_long_url_ms``: a 48 MB URL to OsmAnd — first byte sent to the first byte of the
  answer. Median of 5 (baseline: 1).

``--quick``: 1,000 junk fixes, 2 sign-in rounds, 1 repetition, a 20 s slow-client budget.
Targets (issue 18): 413 < 50 ms with RSS growth < 20 MB, 0 partitions, healthz p99 < 50 ms,
slow client closed within the header deadline (10 s), long URL refused < 10 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.db.cluster import EmbeddedCluster, free_port
from bench.common import percentiles_ms, rss_mb, write_result
from bench.load import LOGS, stop_server, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "a4ed3cc"
HOST = "127.0.0.1"
BODY_MB = 100
URL_MB = 48
JUNK_FIXES = 10_000
JUNK_BUDGET_S = 300.0
SLOW_BUDGET_S = 45.0
SIGNINS = 20
PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark user's

SETUP = r"""
import asyncio, json, sys
import psycopg
from api.auth import SYSTEM
from api.devices import DeviceIn, create_device
from api.users import create_user

async def main(url, users, password):
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(users):
            await create_user(conn, SYSTEM, f"abuse-{i}", role="viewer", scope=["*"],
                              password=password)
        _, token = await create_device(conn, SYSTEM, DeviceIn(identifier="abuse-device"))
    print(json.dumps({"device": "abuse-device", "token": token}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


@dataclass
class Server:
    label: str
    root: Path
    url: str
    api: int
    osmand: int
    pid: int
    device: str
    device_token: str


@contextmanager
def _worktree(commit: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gp-baseline-"))
    path.rmdir()
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _server(label: str, root: Path) -> Iterator[Server]:
    """A throwaway cluster and ``gridpatrol serve`` of the tree at ``root`` against it."""
    base = Path(tempfile.mkdtemp(prefix=f"gridpatrol-abuse-{label}-"))
    base.chmod(0o755)
    cluster = EmbeddedCluster(base / "pg", port=free_port(), dbname="abuse")
    cluster.start()
    api, osmand, jt808 = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "DATABASE_URL": cluster.url,
        "GRIDPATROL_API_HOST": HOST,
        "GRIDPATROL_API_PORT": str(api),
        "GRIDPATROL_API_STATE_DIR": str(base / "state"),
        "GRIDPATROL_OSMAND_HOST": HOST,
        "GRIDPATROL_OSMAND_PORT": str(osmand),
        "GRIDPATROL_JT808_HOST": HOST,
        "GRIDPATROL_JT808_PORT": str(jt808),
        "GRIDPATROL_COVERAGE_UPDATE_INTERVAL_S": "3600",
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / f"abuse_{label}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve"],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(api, timeout=180)
        wait_for_port(osmand, timeout=30)
        setup = subprocess.run(
            [sys.executable, "-c", SETUP, cluster.url, str(SIGNINS), PASSWORD],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        made = json.loads(setup.stdout.strip().splitlines()[-1])
        yield Server(label, root, cluster.url, api, osmand, proc.pid, made["device"], made["token"])
    finally:
        stop_server(proc)
        log.close()
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


# ---- measurements -------------------------------------------------------------------------------
class _RssPeak:
    """The server's peak RSS, sampled every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_mb(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # what the last bytes made
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.before


def _first_answer(
    port: int, head: bytes, body_pieces: Iterator[bytes], timeout: float
) -> tuple[float, bytes]:
    """Send ``head`` then the body (from a thread); seconds from the first byte sent to the
    first byte of the answer (or the close), and the answer's first bytes."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stop = threading.Event()

    def send_body() -> None:
        try:
            for piece in body_pieces:
                if stop.is_set():
                    return
                sock.sendall(piece)
        except OSError:
            return

    t0 = time.perf_counter()
    sock.sendall(head)
    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    try:
        answer = sock.recv(4096)
    except ConnectionResetError:
        answer = b""
    except TimeoutError:
        answer = b"(timeout)"
    elapsed = time.perf_counter() - t0
    stop.set()
    sock.close()
    sender.join(timeout=5)
    return elapsed, answer


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None


def big_body(server: Server, repeat: int) -> dict[str, Any]:
    size = BODY_MB * 1024 * 1024
    piece = b"[" + b"1," * (512 * 1024 - 1) + b"1"  # 1 MB of a JSON array
    head = (
        f"POST /api/v1/incidents HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    times, growths, statuses = [], [], []
    for _ in range(repeat):
        with _RssPeak(server.pid) as rss:
            elapsed, answer = _first_answer(server.api, head, iter([piece] * BODY_MB), timeout=120)
        times.append(elapsed * 1000)
        growths.append(rss.growth)
        statuses.append(_status(answer))
        time.sleep(0.5)
    return {
        "body_413_ms": round(statistics.median(times), 2),
        "rss_growth_mb": round(max(growths), 1),
        "body_status": statuses[0],
    }


def long_url(server: Server, repeat: int) -> dict[str, Any]:
    head = b"GET /?id=abuse-device&lat=43.9&lon=116.0&pad="
    tail = b" HTTP/1.1\r\nHost: x\r\n\r\n"

    def pieces() -> Iterator[bytes]:
        chunk = b"a" * (1024 * 1024)
        for _ in range(URL_MB):
            yield chunk
        yield tail

    times, statuses = [], []
    for _ in range(repeat):
        elapsed, answer = _first_answer(server.osmand, head, pieces(), timeout=120)
        times.append(elapsed * 1000)
        statuses.append(_status(answer))
        time.sleep(0.5)
    return {
        "osmand_long_url_ms": round(statistics.median(times), 2),
        "long_url_status": statuses[0],
    }


def _partitions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'position'::regclass"
        ).fetchone()
    return int(row[0]) if row else 0


def junk(server: Server, fixes: int) -> dict[str, Any]:
    before = _partitions(server.url)
    start = date(1990, 1, 1)
    per_request = 1000
    sent = 0
    statuses: dict[str, int] = {}
    t0 = time.monotonic()
    with httpx.Client(timeout=JUNK_BUDGET_S) as client:
        for lo in range(0, fixes, per_request):
            if time.monotonic() - t0 > JUNK_BUDGET_S:
                break
            batch = [
                {
                    "device": server.device,
                    "time": f"{start + timedelta(days=i)}T12:00:00Z",
                    "lat": 43.93,
                    "lon": 116.07,
                }
                for i in range(lo, min(lo + per_request, fixes))
            ]
            response = client.post(
                f"http://{HOST}:{server.api}/api/v1/positions",
                json=batch,
                headers={"Authorization": f"Bearer {server.device_token}"},
            )
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            sent += len(batch)
    return {
        "junk_partitions": _partitions(server.url) - before,
        "junk_fixes_sent": sent,
        "junk_seconds": round(time.monotonic() - t0, 1),
        "junk_statuses": statuses,
    }


async def _signins(server: Server, rounds: int) -> dict[str, Any]:
    base = f"http://{HOST}:{server.api}"
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    done = asyncio.Event()

    async def poll(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await client.get(f"{base}/healthz")
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)

    async def sign_in(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(
            f"{base}/api/v1/auth/token", json={"name": f"abuse-{i}", "password": "wrong-password"}
        )
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

    limits = httpx.Limits(max_connections=SIGNINS + 5)
    async with (
        httpx.AsyncClient(timeout=60) as health,
        httpx.AsyncClient(timeout=60, limits=limits) as attack,
    ):
        await health.get(f"{base}/healthz")  # connection open before measuring
        poller = asyncio.create_task(poll(health))
        for _ in range(rounds):
            await asyncio.gather(*(sign_in(attack, i) for i in range(SIGNINS)))
        done.set()
        await poller
    p = percentiles_ms(latencies)
    return {
        "healthz_p99_ms_during_signins": p["p99_ms"],
        "healthz_p50_ms_during_signins": p["p50_ms"],
        "healthz_samples": len(latencies),
        "signin_statuses": statuses,
    }


def _slow_client(port: int, request: bytes, budget: float) -> float | None:
    """Seconds until the server closes a client sending one byte every 10 s (None: still open
    after ``budget``)."""
    sock = socket.create_connection((HOST, port), timeout=budget + 5)
    t0 = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - t0 < budget:
            if sent < len(request):
                try:
                    sock.sendall(request[sent : sent + 1])
                except OSError:
                    return time.monotonic() - t0
                sent += 1
            sock.settimeout(max(0.01, min(10.0, budget - (time.monotonic() - t0))))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return time.monotonic() - t0
            if not data or data.startswith(b"HTTP/1.1 408"):
                return time.monotonic() - t0
        return None
    finally:
        sock.close()


def slow_clients(server: Server, budget: float) -> dict[str, Any]:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    results: dict[str, float | None] = {}

    def run(key: str, port: int) -> None:
        results[key] = _slow_client(port, request, budget)

    threads = [
        threading.Thread(target=run, args=("api", server.api)),
        threading.Thread(target=run, args=("osmand", server.osmand)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    out: dict[str, Any] = {
        "slow_client_closed_s": rounded(results["api"]),
        "osmand_slow_client_closed_s": rounded(results["osmand"]),
    }
    if results["api"] is None or results["osmand"] is None:
        out["slow_client_open_after_s"] = budget
    return out


def measure(server: Server, *, quick: bool, baseline: bool) -> dict[str, Any]:
    repeat = 1 if (quick or baseline) else 5
    figures: dict[str, Any] = {}
    print(f"-- {server.label}: 100 MB body", flush=True)
    figures.update(big_body(server, repeat))
    print(f"-- {server.label}: 48 MB OsmAnd URL", flush=True)
    figures.update(long_url(server, repeat))
    print(f"-- {server.label}: sign-ins", flush=True)
    figures.update(asyncio.run(_signins(server, 2 if quick else 5)))
    print(f"-- {server.label}: slow clients", flush=True)
    figures.update(slow_clients(server, 20.0 if quick else SLOW_BUDGET_S))
    print(f"-- {server.label}: junk dates", flush=True)
    figures.update(junk(server, 1000 if quick else JUNK_FIXES))
    print(json.dumps(figures), flush=True)
    return figures


def run(quick: bool = False) -> None:
    with _worktree(BASELINE_COMMIT) as baseline_root:
        with _server("current", ROOT) as current:
            now = measure(current, quick=quick, baseline=False)
        with _server("baseline", baseline_root) as base:
            before = measure(base, quick=quick, baseline=True)
    figures: dict[str, Any] = {
        "baseline": f"the code before issue 18 (commit {BASELINE_COMMIT}), same run, same clients",
        "body_mb": BODY_MB,
        "osmand_url_mb": URL_MB,
        "junk_fixes": 1000 if quick else JUNK_FIXES,
        "concurrent_signins": SIGNINS,
        "quick": quick,
    }
    for key in dict.fromkeys([*now, *before]):
        figures[key] = now.get(key)
        figures[f"baseline_{key}"] = before.get(key)
    write_result("abuse", figures)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
