"""Load generation helpers shared by protocol benchmarks: a server subprocess and an open-loop
HTTP client (devices send on their own schedule, so latency is not hidden by queueing)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from api.db.cluster import free_port

LOGS = Path(__file__).parent / "results" / "logs"


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f}s")


@contextmanager
def server_process(
    url: str, name: str, *, role: str = "all", **env: str
) -> Iterator[dict[str, int]]:
    """``gridpatrol serve --role ROLE`` in a subprocess on free ports, output to
    bench/results/logs/: ``all`` (the default, what ``make run`` serves) is a supervisor with
    its api, ingest and worker processes; ``single`` everything in one process.

    Yields the ports (``api``, ``osmand``, ``jt808``) and the server's ``pid`` (the supervisor's
    under ``all``: see ``bench.common.process_tree``).
    """
    ports = {"api": free_port(), "osmand": free_port(), "jt808": free_port()}
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / f"{name}.log").open("w")
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "GRIDPATROL_API_PORT": str(ports["api"]),
        "GRIDPATROL_OSMAND_PORT": str(ports["osmand"]),
        "GRIDPATROL_JT808_PORT": str(ports["jt808"]),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--role", role],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(ports["osmand"])
        wait_for_port(ports["api"])
        yield {**ports, "pid": proc.pid}  # the server process itself (for its RSS)
    finally:
        stop_server(proc)
        log.close()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C a server started by a benchmark; killed when it has not stopped within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def live_vehicles(url: str, since: float) -> int:
    """Devices that reported through a live protocol (not batch) since ``since`` (epoch s)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM device_state WHERE received_at > to_timestamp(%s) "
            "AND protocol <> 'batch'",
            (since,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def demo_fleet(url: str, ports: dict[str, int], vehicles: int, name: str) -> Iterator[int]:
    """The living demo fleet (``python -m api.demofleet``: half OsmAnd, half JT/T 808, a fix
    every 10 s, no history, no calls) reporting to a benchmark's server; waits until every
    vehicle has reported live (at most 5 min) and yields how many did. Stopped on exit."""
    wait_for_port(ports["jt808"])
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRIDPATROL_OSMAND_HOST": "127.0.0.1",
        "GRIDPATROL_OSMAND_PORT": str(ports["osmand"]),
        "GRIDPATROL_JT808_HOST": "127.0.0.1",
        "GRIDPATROL_JT808_PORT": str(ports["jt808"]),
        "GRIDPATROL_DEMO_VEHICLES": str(vehicles),
        "GRIDPATROL_DEMO_HISTORY_DAYS": "0",
        "GRIDPATROL_DEMO_INCIDENTS_PER_HOUR": "0",
        "GRIDPATROL_DEMO_GAPS_PER_H": "0",
        "GRIDPATROL_DEMO_SHIFT_HOURS": "1",
        "GRIDPATROL_DEMO_INTERVAL_S": "10",
    }
    since = time.time()
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}-fleet.log").open("w") as log:
        fleet = subprocess.Popen(
            [sys.executable, "-m", "api.demofleet"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            live = 0
            while time.monotonic() < deadline:
                if fleet.poll() is not None:
                    raise RuntimeError(f"the demo fleet exited; see {LOGS / name}-fleet.log")
                live = live_vehicles(url, since)
                if live >= vehicles:
                    break
                time.sleep(2)
            yield live
        finally:
            fleet.terminate()
            try:
                fleet.wait(timeout=30)
            except subprocess.TimeoutExpired:
                fleet.kill()
                fleet.wait()


async def _device_loop(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    identifier: str,
    interval: float,
    until: float,
    start_ms: int,
    lat: float,
    lon: float,
    latencies: list[float],
    failures: list[int],
    key: str | None = None,
) -> int:
    reader, writer = connection
    sent = ok = 0
    loop = asyncio.get_running_loop()
    next_at = loop.time() + interval * (hash(identifier) % 1000) / 1000.0
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if loop.time() >= until:
            break
        ts = start_ms + sent * int(interval * 1000)
        query = f"id={identifier}&lat={lat + sent * 1e-5:.6f}&lon={lon:.6f}&timestamp={ts}&speed=10"
        if key is not None:
            query += f"&key={key}"
        t0 = time.perf_counter()
        writer.write(f"GET /?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if length:
            await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        sent += 1
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            failures.append(int(head[9:12]))
        next_at += interval
    writer.close()
    return ok


async def osmand_load(
    port: int,
    identifiers: list[str],
    *,
    rate_per_device: float,
    seconds: float,
    start_ms: int,
    center: tuple[float, float],
    keys: dict[str, str] | None = None,
) -> tuple[int, list[float], list[int], float]:
    """Every device opens its keep-alive connection, then sends ``rate_per_device`` fixes/s
    for ``seconds``; returns (ok count, latencies in s, failure statuses, elapsed s).

    The client's own garbage collector is kept off the objects that exist before the load
    (``gc.freeze``): a full pass over them stalls this process ≈ 140 ms, which would be
    measured as the server's latency and then sent to it as a burst.
    """
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in identifiers]
    latencies: list[float] = []
    failures: list[int] = []
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    until = begin + seconds
    tasks = [
        _device_loop(
            connections[i],
            ident,
            1.0 / rate_per_device,
            until,
            start_ms + i,
            center[0] + (i % 50) * 1e-3,
            center[1] + (i // 50) * 1e-3,
            latencies,
            failures,
            (keys or {}).get(ident),
        )
        for i, ident in enumerate(identifiers)
    ]
    try:
        oks = await asyncio.gather(*tasks)
    finally:
        gc.unfreeze()
    return sum(oks), latencies, failures, loop.time() - begin
