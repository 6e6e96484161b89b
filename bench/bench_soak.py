"""A bounded soak: 2,000 simulated patrol vehicles (half OsmAnd, half JT/T 808) report every 10
simulated seconds for 30 simulated minutes at 10× speed — 180 s of wall time, ≈ 2,000 fixes/s —
to ``gridpatrol serve`` in a subprocess, while a dispatcher's console asks for nearest
responders and coverage. ``--quick``: 200 vehicles, 3 simulated minutes.

Tracks come from ``gis.simulation``: patrols inside each vehicle's village of the Xilingol demo
(20 % of the terminals speak GCJ-02), without GPS spikes or signal gaps, so every fix sent must
be stored; each terminal reports at its own random phase of the 10 s interval. The devices run
in two client processes (one per protocol; asyncio, one connection per device), apart from the
server, so the server's RSS and latencies are its own. A device sends its fixes one at a time
on the simulated clock and resends after any failure (timeout, lost connection, 429/503, 808
result 1; 808 terminals log in again with their auth code) until acknowledged, remembering what
was acknowledged. Afterwards ``position`` is compared with that set: ``lost`` (acknowledged,
not stored) must be 0, and so must ``duplicates``.

Simulated time runs 10× faster than the wall clock and catches up with it at the end: the fix
a device sends at wall second ``w`` of the soak is dated ``sim_s − 10·(wall_s − w)`` seconds ago,
never in the future. The server's dispatch freshness window is widened to the simulated span
so the soak's vehicles count as live responders.

Baselines, same run, same server, same clients: before the soak, a closed-loop burst (every
device sends a parked vehicle's backlog as fast as its acknowledgements come, ≤ 15 fixes/s
each, no queries) measures what this server and these clients sustain on this machine; after
it, the same queries on the idle server give their quiet latency.

Two rounds, same plan, same clients, same run, each on a fresh database: ``gridpatrol serve
--role single`` (everything in one process, as before the process roles: the baseline, its key
figures kept as ``single_*``), then ``--role all`` (the supervisor with its api, ingest and
worker processes, what ``make run`` serves: the result). RSS and CPU are the server's whole
process tree. ``coverage_lag_*``: every second, the age of the oldest ``coverage_dirty`` mark —
how long the oldest stored fix has waited to be counted in the active layouts' ``grid_visit``.

Figures: fixes/s overall and per protocol, acknowledgement latency per protocol (first send to
acknowledgement, resends included) and its p50/p99 over time, query latency per kind, the server's
RSS over time and its CPU share, device answers that were not an acknowledgement, and the loss
accounting. Nothing is asserted on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from numpy.typing import NDArray

from api.auth import SYSTEM
from api.demo import load_demo
from api.protocols.jt808.fleet import MAX_SPEED_MS, assign_phones
from api.protocols.jt808.location import Location
from api.protocols.jt808.messages import ReplyResult
from api.protocols.jt808.terminal import Terminal, TerminalError
from api.simulate import http_exchange, load_fleet, register_fleet, stored_per_second
from api.users import create_user
from bench.common import (
    percentiles_ms,
    throwaway_database,
    tree_cpu_seconds,
    tree_rss_mb,
    write_result,
)
from bench.load import LOGS, server_process, wait_for_port
from gis.simulation import simulate_fleet

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PROTOCOLS = ("osmand", "jt808")
SPEEDUP = 10.0
INTERVAL_S = 10.0
SETTLE_S = 3  # between the burst and the soak
GRACE_S = 60.0  # after the soak, devices keep resending what is unacknowledged this long
REPLY_TIMEOUT_S = 10.0
RETRY_S, MAX_BACKOFF_S = 0.2, 5.0  # resend after 0.2 s, doubling, at most 5 s
BURST_MAX_PER_S = 15.0  # per device: below the server's per-device limit (20/s)
BACKLOG_S = 3600  # burst fixes: a parked vehicle's 1 Hz backlog from an hour before the soak
LOGIN_CONCURRENCY = 100
LOGIN_TIMEOUT_S = 300.0
RSS_EVERY_S, RSS_REPORT_EVERY_S = 1.0, 5.0
LAG_EVERY_S = 1.0
INCIDENTS = 20
QUIET_ROUNDS = 10
SEED = 2000
KNOTS = 0.514444  # m/s per knot (OsmAnd speed unit)
# the console's queries: kind → (period s, first after s, method, path; {i} = an incident id)
QUERIES: dict[str, tuple[float, float, str, str]] = {
    "dispatch_candidates": (0.5, 0.0, "GET", "/api/v1/incidents/{i}/candidates?k=5"),
    "dispatch_candidates_road": (5.0, 1.0, "GET", "/api/v1/incidents/{i}/candidates?k=5&mode=road"),
    "coverage_grid": (4.0, 0.5, "GET", "/api/v1/coverage?level=grid"),
    "coverage_village": (4.0, 2.5, "GET", "/api/v1/coverage?level=village"),
    "vehicle_ranking": (10.0, 3.0, "GET", "/api/v1/vehicles/ranking"),
    "alerts": (10.0, 8.0, "GET", "/api/v1/alerts"),
    "coverage_update": (30.0, 15.0, "POST", "/api/v1/coverage/update"),
}


def _runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


# ---- setup (parent) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    vehicles: int
    sim_s: float
    burst_s: float

    @property
    def wall_s(self) -> float:
        return self.sim_s / SPEEDUP


@dataclass
class Setup:
    token: str
    incident_points: list[tuple[float, float]]  # (lon, lat), WGS-84
    specs: dict[str, Path]  # protocol → client spec file
    identifiers: dict[str, list[str]]  # protocol → device identifiers, in client order
    fixes: dict[str, int]  # protocol → soak fixes offered


async def _prepare(url: str, plan: Plan, work: Path) -> Setup:
    """Demo, fleet, tracks, devices (808 phones), an admin token; one spec file per client."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        fleet = await load_fleet(conn, plan.vehicles)
        # a longer shift cut at sim_s: a short plan may bring a vehicle home early
        tracks = simulate_fleet(
            fleet.areas,
            hours=max(4 * plan.sim_s, 7200) / 3600,
            interval_s=INTERVAL_S,
            start_us=0,  # relative: the clients date the fixes when the soak starts
            seed=SEED,
            spike_rate=0.0,
            gap_rate_per_h=0.0,
        )
        keys = await register_fleet(conn, fleet, tracks.gcj02)
        members = {
            "osmand": list(range(0, plan.vehicles, 2)),
            "jt808": list(range(1, plan.vehicles, 2)),
        }
        identifiers = {p: [fleet.identifiers[v] for v in vs] for p, vs in members.items()}
        names = {
            # OsmAnd clients send their key as the id (the id-only form; it names the device)
            "osmand": [keys[i] for i in identifiers["osmand"]],
            "jt808": await assign_phones(conn, identifiers["jt808"]),
        }
        admin = await create_user(conn, SYSTEM, "soak-admin", role="admin", scope=["*"])
    # terminals switched on at random moments: each reports at its own phase of the interval
    # (tracks start together; at 10× their 1 s jitter would put every fleet fix in 0.1 s)
    rng = np.random.default_rng(SEED)
    t_s = tracks.time_us / 1e6 + rng.uniform(0, INTERVAL_S, plan.vehicles)[tracks.vehicle]
    in_soak = t_s < plan.sim_s
    specs, fixes = {}, {}
    for protocol, vehicles in members.items():
        local = {v: i for i, v in enumerate(vehicles)}
        rows = np.flatnonzero(np.isin(tracks.vehicle, vehicles) & in_soak)
        np.savez(
            work / f"{protocol}-tracks.npz",
            vehicle=np.array([local[int(v)] for v in tracks.vehicle[rows]], dtype=np.int32),
            t=t_s[rows],
            lat=tracks.lat[rows],
            lon=tracks.lon[rows],
            speed=tracks.speed[rows],
            course=tracks.course[rows],
            accuracy=tracks.accuracy[rows],
        )
        spec = {
            "protocol": protocol,
            "names": names[protocol],
            "tracks": str(work / f"{protocol}-tracks.npz"),
            "results": str(work / f"{protocol}-results"),
            "sim_s": plan.sim_s,
            "burst_s": plan.burst_s,
            "parent_pid": os.getpid(),
        }
        specs[protocol] = work / f"{protocol}-spec.json"
        specs[protocol].write_text(json.dumps(spec))
        fixes[protocol] = len(rows)
    firsts = np.r_[0, np.flatnonzero(np.diff(tracks.vehicle)) + 1]
    picks = rng.choice(firsts, size=min(INCIDENTS, len(firsts)), replace=False)
    points = [(float(tracks.true_lon[k]), float(tracks.true_lat[k])) for k in picks]
    return Setup(admin.token, points, specs, identifiers, fixes)


# ---- the device clients (child processes) ---------------------------------------------------
@dataclass
class _Record:
    """Every fix a client sent: phase (0 burst, 1 soak), device, fix second, first send (s
    from the soak start), lateness against its schedule, latency to the acknowledgement (or to
    giving up), attempts, acknowledged."""

    phase: list[int] = field(default_factory=list)
    vehicle: list[int] = field(default_factory=list)
    sec: list[int] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    acked: list[bool] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    login_retries: int = 0

    def add(
        self,
        phase: int,
        vehicle: int,
        sec: int,
        sent: float,
        late: float,
        latency: float,
        attempts: int,
        acked: bool,
    ) -> None:
        self.phase.append(phase)
        self.vehicle.append(vehicle)
        self.sec.append(sec)
        self.sent.append(sent)
        self.late.append(late)
        self.latency.append(latency)
        self.attempts.append(attempts)
        self.acked.append(acked)

    def save(self, stem: str, extra: dict[str, Any]) -> None:
        np.savez(
            stem + ".npz",
            phase=np.array(self.phase, dtype=np.int8),
            vehicle=np.array(self.vehicle, dtype=np.int32),
            sec=np.array(self.sec, dtype=np.int64),
            sent=np.array(self.sent),
            late=np.array(self.late),
            latency=np.array(self.latency),
            attempts=np.array(self.attempts, dtype=np.int32),
            acked=np.array(self.acked, dtype=bool),
        )
        body = {"answers": dict(self.answers), "login_retries": self.login_retries, **extra}
        Path(stem + ".json").write_text(json.dumps(body))


@dataclass
class _Clock:
    """Loop times of the burst and the soak, and the unix second of the soak's first fix."""

    burst_at: float
    burst_end: float
    soak_at: float
    soak_end: float
    first_fix_s: int


class _Device:
    """One vehicle: its track, the send schedule, resending until acknowledged."""

    kind = ""

    def __init__(self, index: int, name: str, port: int, track: dict[str, NDArray[Any]]) -> None:
        self.index, self.name, self.port, self.track = index, name, port, track

    async def connect(self, record: _Record) -> None:
        raise NotImplementedError

    async def attempt(self, sec: int, row: int) -> tuple[str, str, float | None]:
        """Send fix ``row`` (-1: parked at the first position) dated ``sec`` once; returns
        (answer, "ack" | "retry" | "refused", Retry-After or None)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def deliver(
        self, record: _Record, sec: int, row: int, deadline: float
    ) -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        attempts = 0
        while True:
            attempts += 1
            answer, verdict, retry_after = await self.attempt(sec, row)
            record.answers[answer] += 1
            if verdict != "retry":
                return verdict == "ack", attempts
            wait = min(RETRY_S * 2 ** (attempts - 1), MAX_BACKOFF_S)
            if retry_after is not None:
                wait = min(max(wait, retry_after), MAX_BACKOFF_S)
            if loop.time() + wait > deadline:
                return False, attempts
            await asyncio.sleep(wait)

    async def burst(self, record: _Record, clock: _Clock) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, clock.burst_at - loop.time()))
        k = 0
        while (began := loop.time()) < clock.burst_end:
            sec = clock.first_fix_s - BACKLOG_S + k
            acked, attempts = await self.deliver(record, sec, -1, clock.burst_end + GRACE_S)
            now = loop.time()
            record.add(0, self.index, sec, began - clock.soak_at, 0.0, now - began, attempts, acked)
            k += 1
            await asyncio.sleep(max(0.0, began + 1 / BURST_MAX_PER_S - now))

    async def soak(self, record: _Record, clock: _Clock) -> None:
        loop = asyncio.get_running_loop()
        for row, t in enumerate(self.track["t"].tolist()):
            due = clock.soak_at + t / SPEEDUP
            await asyncio.sleep(max(0.0, due - loop.time()))
            sec = clock.first_fix_s + int(t)
            began = loop.time()
            acked, attempts = await self.deliver(record, sec, row, clock.soak_end + GRACE_S)
            record.add(
                1,
                self.index,
                sec,
                began - clock.soak_at,
                began - due,
                loop.time() - began,
                attempts,
                acked,
            )

    def position(self, row: int) -> tuple[float, float, float, float]:
        """(lat, lon, speed m/s, course) of a fix; a parked vehicle at its first position."""
        k = max(row, 0)
        lat, lon = float(self.track["lat"][k]), float(self.track["lon"][k])
        if row < 0:
            return lat, lon, 0.0, 0.0
        return lat, lon, float(self.track["speed"][k]), float(self.track["course"][k])


class _OsmAnd(_Device):
    kind = "osmand"

    def __init__(self, index: int, name: str, port: int, track: dict[str, NDArray[Any]]) -> None:
        super().__init__(index, name, port, track)
        self.link: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self, record: _Record) -> None:
        for attempt in range(20):
            try:
                self.link = await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.port), REPLY_TIMEOUT_S
                )
                return
            except (OSError, TimeoutError):
                record.login_retries += 1
                await asyncio.sleep(min(RETRY_S * 2**attempt, MAX_BACKOFF_S))

    async def attempt(self, sec: int, row: int) -> tuple[str, str, float | None]:
        lat, lon, speed, course = self.position(row)
        query = f"id={self.name}&lat={lat:.7f}&lon={lon:.7f}&timestamp={sec}"
        query += f"&accuracy={float(self.track['accuracy'][max(row, 0)]):.1f}"
        if math.isfinite(speed):
            query += f"&speed={speed / KNOTS:.2f}&bearing={course:.1f}"
        request = f"GET /?{query} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        try:
            if self.link is None:
                self.link = await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.port), REPLY_TIMEOUT_S
                )
            status, headers = await asyncio.wait_for(
                http_exchange(*self.link, request), REPLY_TIMEOUT_S
            )
        except TimeoutError:
            await self.close()
            return "osmand timeout", "retry", None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            return "osmand connection error", "retry", None
        if headers.get("connection") == "close":
            await self.close()
        if status == 200:
            return f"osmand 200 {headers.get('x-gridpatrol-outcome', '')}".strip(), "ack", None
        if status in (429, 503):
            return f"osmand {status}", "retry", float(headers.get("retry-after", RETRY_S))
        if status == 400:
            return "osmand 400", "refused", None
        return f"osmand {status}", "retry", None

    async def close(self) -> None:
        if self.link is not None:
            with contextlib.suppress(Exception):
                self.link[1].close()
        self.link = None


class _Jt808(_Device):
    kind = "jt808"

    def __init__(self, index: int, name: str, port: int, track: dict[str, NDArray[Any]]) -> None:
        super().__init__(index, name, port, track)
        self.terminal = Terminal(name, host=HOST, port=port, reply_timeout=REPLY_TIMEOUT_S)
        self.online = False

    async def _login(self) -> None:
        await self.terminal.close()
        await self.terminal.login()  # registers (0x0100) first when it holds no auth code
        self.online = True

    async def connect(self, record: _Record) -> None:
        for attempt in range(20):
            try:
                await self._login()
                return
            except (TerminalError, OSError):
                record.login_retries += 1
                await asyncio.sleep(min(RETRY_S * 2**attempt, MAX_BACKOFF_S))

    async def attempt(self, sec: int, row: int) -> tuple[str, str, float | None]:
        lat, lon, speed, course = self.position(row)
        location = Location(
            alarm=0,
            status=0b11,
            latitude=round(lat, 6),
            longitude=round(lon, 6),
            altitude=1100,
            speed_ms=min(max(speed, 0.0), MAX_SPEED_MS) if math.isfinite(speed) else 0.0,
            direction=round(course) % 360 if math.isfinite(course) else 0,
            time=datetime.fromtimestamp(sec, UTC),
            signal_strength=25,
            satellites=12,
        )
        try:
            if self.terminal.closed.is_set():  # the platform hung up: log in again
                self.online = False
            if not self.online:
                await self._login()
            result = await self.terminal.send_location(location)
        except (TerminalError, OSError) as exc:
            self.online = False
            what = "timeout" if "no reply" in str(exc) else "connection error"
            return f"jt808 {what}", "retry", None
        if result == ReplyResult.SUCCESS:
            return "jt808 result 0", "ack", None
        if result == ReplyResult.FAILURE:
            return "jt808 result 1", "retry", None
        return f"jt808 result {int(result)}", "refused", None

    async def close(self) -> None:
        await self.terminal.close()


async def _orphan_watchdog(parent: int) -> None:
    """Leave when the benchmark process is gone (never outlive it)."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        await asyncio.sleep(1.0)


async def _client(spec: dict[str, Any], port: int) -> None:
    loop = asyncio.get_running_loop()
    watchdog = loop.create_task(_orphan_watchdog(spec["parent_pid"]))
    data = dict(np.load(spec["tracks"]))
    bounds = np.searchsorted(data["vehicle"], np.arange(len(spec["names"]) + 1))
    kind = _OsmAnd if spec["protocol"] == "osmand" else _Jt808
    devices: list[_Device] = [
        kind(i, name, port, {k: v[bounds[i] : bounds[i + 1]] for k, v in data.items()})
        for i, name in enumerate(spec["names"])
    ]
    record = _Record()
    began = time.perf_counter()
    gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

    async def connect(device: _Device) -> None:
        async with gate:
            await device.connect(record)

    await asyncio.gather(*(connect(d) for d in devices))
    login_s = time.perf_counter() - began
    print(f"ready {login_s:.1f}", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    burst_at, soak_at = (float(v) for v in line.split()[1:3])
    offset = loop.time() - time.time()  # unix → loop time
    wall_s = spec["sim_s"] / SPEEDUP
    clock = _Clock(
        burst_at=burst_at + offset,
        burst_end=burst_at + spec["burst_s"] + offset,
        soak_at=soak_at + offset,
        soak_end=soak_at + wall_s + offset,
        first_fix_s=int(soak_at + wall_s - spec["sim_s"]),
    )
    cpu0 = time.process_time()
    await asyncio.gather(*(d.burst(record, clock) for d in devices))
    await asyncio.gather(*(d.soak(record, clock) for d in devices))
    for device in devices:
        await device.close()
    record.save(spec["results"], {"login_s": login_s, "cpu_s": time.process_time() - cpu0})
    print("done", flush=True)
    watchdog.cancel()


def client_main(argv: list[str] | None = None) -> None:
    """Entry of a client process: ``client_main([spec.json, port])``; see ``_spawn``."""
    args = sys.argv[1:] if argv is None else argv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _runner()(_client(json.loads(Path(args[0]).read_text()), int(args[1])))


# ---- the soak (parent) ----------------------------------------------------------------------
@dataclass
class _Queries:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in QUERIES})
    statuses: Counter[str] = field(default_factory=Counter)


async def _query(
    client: httpx.AsyncClient, kind: str, incident: int, out: _Queries
) -> tuple[float, bool]:
    _, _, method, path = QUERIES[kind]
    began = time.perf_counter()
    try:
        response = await client.request(method, path.format(i=incident))
        status = str(response.status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    elapsed = time.perf_counter() - began
    ok = status.startswith("2")
    if not ok:
        out.statuses[f"{kind} {status}"] += 1
    return elapsed, ok


async def _query_loop(
    client: httpx.AsyncClient, kind: str, incidents: list[int], stop: asyncio.Event, out: _Queries
) -> None:
    period, first, _, _ = QUERIES[kind]
    loop = asyncio.get_running_loop()
    rng = random.Random(kind)
    next_at = loop.time() + first
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
            return
        elapsed, ok = await _query(client, kind, rng.choice(incidents), out)
        if ok:
            out.latencies[kind].append(elapsed)
        next_at = max(next_at + period, loop.time())  # behind: no catching up in a burst


async def _sample(pid: int, samples: list[tuple[float, float]]) -> None:
    while True:
        samples.append((time.time(), tree_rss_mb(pid)))
        await asyncio.sleep(RSS_EVERY_S)


async def _coverage_lag(url: str, samples: list[tuple[float, float]]) -> None:
    """Every LAG_EVERY_S: how long the oldest fix not yet in ``grid_visit`` has waited — the age
    of the oldest ``coverage_dirty`` mark (a mark dates from the first fix it stands for; a
    device-day re-marked during its recompute dates from that recompute's claim)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            row = await (
                await conn.execute(
                    "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(marked_at)), 0)"
                    "::float8 FROM coverage_dirty"
                )
            ).fetchone()
            samples.append((time.time(), float(row[0]) if row else 0.0))
            await asyncio.sleep(LAG_EVERY_S)


async def _line(proc: asyncio.subprocess.Process, word: str, protocol: str) -> str:
    assert proc.stdout is not None
    while line := (await proc.stdout.readline()).decode():
        if line.startswith(word):
            return line
    raise RuntimeError(f"the {protocol} client exited early; see {LOGS / 'soak-clients.log'}")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _soak(plan: Plan, setup: Setup, ports: dict[str, int], url: str) -> dict[str, Any]:
    pid = ports["pid"]
    samples: list[tuple[float, float]] = []
    lags: list[tuple[float, float]] = []
    sampler = asyncio.get_running_loop().create_task(_sample(pid, samples))
    lagger = asyncio.get_running_loop().create_task(_coverage_lag(url, lags))
    procs: dict[str, asyncio.subprocess.Process] = {}
    queries = _Queries()
    headers = {"Authorization": f"Bearer {setup.token}"}
    log = (LOGS / "soak-clients.log").open("w")
    try:
        for protocol in PROTOCOLS:
            procs[protocol] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from bench.bench_soak import client_main; client_main()",
                str(setup.specs[protocol]),
                str(ports[protocol]),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        ready = await asyncio.wait_for(
            asyncio.gather(*(_line(p, "ready", k) for k, p in procs.items())), LOGIN_TIMEOUT_S
        )
        base = f"http://{HOST}:{ports['api']}"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
            incidents = []
            for lon, lat in setup.incident_points:
                response = await client.post(
                    "/api/v1/incidents",
                    json={"kind": "soak", "priority": 3, "lon": lon, "lat": lat},
                )
                response.raise_for_status()
                incidents.append(int(response.json()["id"]))
            rss_idle = tree_rss_mb(pid)
            burst_at = math.ceil(time.time()) + 1
            soak_at = burst_at + math.ceil(plan.burst_s) + SETTLE_S
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.write(f"go {burst_at} {soak_at}\n".encode())
                await proc.stdin.drain()
            await asyncio.sleep(max(0.0, soak_at - time.time()))
            cpu0, load0 = tree_cpu_seconds(pid), os.getloadavg()[0]
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(_query_loop(client, kind, incidents, stop, queries))
                for kind in QUERIES
            ]
            await asyncio.wait_for(
                asyncio.gather(*(_line(p, "done", k) for k, p in procs.items())),
                plan.wall_s + 2 * GRACE_S + 60,
            )
            soak_s = time.time() - soak_at
            cpu1, load1 = tree_cpu_seconds(pid), os.getloadavg()[0]
            stop.set()
            await asyncio.gather(*loops)
            quiet = _Queries()
            rng = random.Random(SEED)
            for kind in QUERIES:
                for _ in range(QUIET_ROUNDS if kind != "coverage_update" else 0):
                    elapsed, ok = await _query(client, kind, rng.choice(incidents), quiet)
                    if ok:
                        quiet.latencies[kind].append(elapsed)
        for proc in procs.values():
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        sampler.cancel()
        lagger.cancel()
        for proc in procs.values():
            await _stop(proc)
        log.close()
    return {
        "login_s": {k: float(line.split()[1]) for k, line in zip(procs, ready, strict=True)},
        "rss_idle_mb": rss_idle,
        "burst_rel_s": burst_at - soak_at,
        "samples": [(t - soak_at, mb) for t, mb in samples],
        "lags": [(t - soak_at, s) for t, s in lags],
        "soak_s": soak_s,
        "server_cpu_s": cpu1 - cpu0,
        "load": (load0, load1),
        "queries": queries,
        "quiet": quiet,
    }


def _stored(url: str, identifiers: list[str]) -> tuple[Counter[tuple[str, int]], Counter[str]]:
    """Rows of ``position`` per (identifier, unix second), and quarantined fixes by reason."""
    with psycopg.connect(url) as conn:
        rejected = conn.execute(
            "SELECT r.reason, count(*) FROM position_rejected r JOIN device d "
            "ON d.id = r.device_id WHERE d.identifier = ANY(%s) GROUP BY 1",
            (identifiers,),
        ).fetchall()
    return stored_per_second(url, identifiers), Counter({str(r[0]): int(r[1]) for r in rejected})


def _load_results(setup: Setup) -> dict[str, tuple[dict[str, NDArray[Any]], dict[str, Any]]]:
    out = {}
    for protocol, spec_path in setup.specs.items():
        stem = json.loads(spec_path.read_text())["results"]
        out[protocol] = (dict(np.load(stem + ".npz")), json.loads(Path(stem + ".json").read_text()))
    return out


def _pct(samples: list[float] | NDArray[Any]) -> dict[str, float | None]:
    """``percentiles_ms``, or None values when there is nothing to measure."""
    if len(samples) == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return dict(percentiles_ms(samples))


def _query_figures(queries: _Queries, quiet: _Queries) -> dict[str, Any]:
    """Per kind: count, p50/p99 during the soak, quiet p50 and the ratio to it."""
    out: dict[str, Any] = {}
    for kind, samples in queries.latencies.items():
        out[f"query_{kind}_n"] = len(samples)
        if not samples:
            continue
        p = percentiles_ms(samples)
        out[f"query_{kind}_p50_ms"] = p["p50_ms"]
        out[f"query_{kind}_p99_ms"] = p["p99_ms"]
        if quiet.latencies[kind]:
            q50 = percentiles_ms(quiet.latencies[kind])["p50_ms"]
            out[f"query_{kind}_quiet_p50_ms"] = q50
            out[f"query_{kind}_ratio_to_quiet_p50"] = round(p["p50_ms"] / q50, 2)
    out["query_non_2xx"] = dict(queries.statuses)
    return out


def _rss_figures(soak: dict[str, Any]) -> dict[str, Any]:
    samples = soak["samples"]  # (s from the soak start, MB), every RSS_EVERY_S
    during = [mb for t, mb in samples if t >= 0]
    before = [mb for t, mb in samples if t < 0]
    thinned, next_t = [], 0.0
    for t, mb in samples:
        if t >= next_t - 1e-6:
            thinned.append([round(t, 1), round(mb, 1)])
            next_t += RSS_REPORT_EVERY_S
    return {
        "rss_idle_mb": round(soak["rss_idle_mb"], 1),
        "rss_burst_peak_mb": round(max(before, default=0.0), 1),
        "rss_start_mb": round(during[0] if during else 0.0, 1),
        "rss_peak_mb": round(max(during, default=0.0), 1),
        "rss_end_mb": round(during[-1] if during else 0.0, 1),
        "rss_mb_over_time": thinned,
        "server_cpu_percent_of_one_core": round(100 * soak["server_cpu_s"] / soak["soak_s"], 1),
        "load_average_1m_start_end": [round(v, 2) for v in soak["load"]],
    }


def _lag_figures(soak: dict[str, Any]) -> dict[str, Any]:
    """Fix stored → in the active layouts' ``grid_visit``: the oldest waiting fix's age, sampled
    during the soak (an upper bound on every fix's lag at that moment)."""
    during = np.array([s for t, s in soak["lags"] if 0 <= t <= soak["soak_s"]])
    if len(during) == 0:
        return {"coverage_lag_p95_s": None}
    return {
        "coverage_lag_p50_s": round(float(np.percentile(during, 50)), 1),
        "coverage_lag_p95_s": round(float(np.percentile(during, 95)), 1),
        "coverage_lag_max_s": round(float(during.max()), 1),
        "coverage_lag_samples": len(during),
    }


@dataclass
class _Tally:
    """What the clients' records add up to, both protocols together."""

    acked: set[tuple[str, int]] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    soak_acks: int = 0
    burst_acks: int = 0
    retries: int = 0
    unacked: int = 0
    late: int = 0
    last_ack_s: float = 0.0
    latency: list[NDArray[Any]] = field(default_factory=list)
    sent: list[NDArray[Any]] = field(default_factory=list)


def _protocol_figures(
    plan: Plan,
    protocol: str,
    identifiers: list[str],
    offered: int,
    soak: dict[str, Any],
    result: tuple[dict[str, NDArray[Any]], dict[str, Any]],
    tally: _Tally,
) -> dict[str, Any]:
    r, meta = result
    names = np.asarray(identifiers, dtype=object)
    ok = r["acked"]
    tally.acked.update(zip(names[r["vehicle"][ok]].tolist(), r["sec"][ok].tolist(), strict=True))
    soak_rows = r["phase"] == 1
    done = r["sent"] + r["latency"]  # acknowledged (or given up), s from the soak start
    s_ok, b_ok = soak_rows & ok, (r["phase"] == 0) & ok
    last = max(float(done[s_ok].max()) if s_ok.any() else 0.0, plan.wall_s)
    in_burst = b_ok & (done <= soak["burst_rel_s"] + plan.burst_s)
    tally.last_ack_s = max(tally.last_ack_s, last)
    tally.soak_acks += int(s_ok.sum())
    tally.burst_acks += int(in_burst.sum())
    tally.retries += int((r["attempts"] - 1).sum()) + meta["login_retries"]
    tally.unacked += int((~ok).sum())
    tally.late += int((r["late"][soak_rows] > 1.0).sum())
    tally.answers.update(meta["answers"])
    tally.latency.append(r["latency"][s_ok])
    tally.sent.append(r["sent"][s_ok])
    return {
        f"{protocol}_vehicles": len(names),
        f"{protocol}_fixes_offered": offered,
        f"{protocol}_fixes_acked": int(s_ok.sum()),
        f"{protocol}_fixes_per_s": round(float(s_ok.sum()) / last, 1),
        **{f"{protocol}_ack_{k}": v for k, v in _pct(r["latency"][s_ok]).items()},
        f"{protocol}_baseline_fixes_per_s": round(float(in_burst.sum()) / plan.burst_s, 1),
        f"{protocol}_baseline_ack_p99_ms": _pct(r["latency"][b_ok])["p99_ms"],
        f"{protocol}_login_s": round(soak["login_s"][protocol], 1),
        f"{protocol}_client_cpu_s": round(meta["cpu_s"], 1),
    }


def _figures(
    plan: Plan,
    setup: Setup,
    soak: dict[str, Any],
    results: dict[str, tuple[dict[str, NDArray[Any]], dict[str, Any]]],
    stored: Counter[tuple[str, int]],
    rejected: Counter[str],
) -> dict[str, Any]:
    tally = _Tally()
    per_protocol: dict[str, Any] = {}
    for protocol, result in results.items():
        per_protocol |= _protocol_figures(
            plan,
            protocol,
            setup.identifiers[protocol],
            setup.fixes[protocol],
            soak,
            result,
            tally,
        )
    offered = sum(setup.fixes.values())
    fixes_per_s = tally.soak_acks / tally.last_ack_s
    baseline_per_s = tally.burst_acks / plan.burst_s
    lat, sent = np.concatenate(tally.latency), np.concatenate(tally.sent)
    bin_s = plan.wall_s / 6
    over_time = []
    for a in np.arange(0, plan.wall_s, bin_s).tolist():
        chosen = (sent >= a) & (sent < a + bin_s)
        if chosen.any():
            p = _pct(lat[chosen])
            over_time.append([round(a, 1), p["p50_ms"], p["p99_ms"]])
    stored_keys = set(stored)
    return {
        "vehicles": plan.vehicles,
        "simulated_minutes": plan.sim_s / 60,
        "speedup": SPEEDUP,
        "interval_s": INTERVAL_S,
        "wall_s": plan.wall_s,
        "soak_s": round(soak["soak_s"], 1),
        "fixes_offered": offered,
        "offered_fixes_per_s": round(offered / plan.wall_s, 1),
        "fixes_acked": tally.soak_acks,
        "fixes_per_s": round(fixes_per_s, 1),
        "ratio_to_offered": round(fixes_per_s / (offered / plan.wall_s), 3),
        **per_protocol,
        "ack_ms_over_time": over_time,  # [first send s, p50, p99]
        "late_sends": tally.late,
        "acked": len(tally.acked),
        "stored": sum(stored.values()),
        "lost": len(tally.acked - stored_keys),
        "duplicates": sum(n - 1 for n in stored.values() if n > 1),
        "stored_not_acked": len(stored_keys - tally.acked),
        "unacked_gave_up": tally.unacked,
        "quarantined_by_reason": dict(rejected),
        "retries": tally.retries,
        "device_answers_not_ok": {
            k: v for k, v in tally.answers.items() if " 200" not in k and k != "jt808 result 0"
        },
        "device_answers": dict(tally.answers),
        **_query_figures(soak["queries"], soak["quiet"]),
        **_rss_figures(soak),
        **_lag_figures(soak),
        "baseline": "closed-loop burst before the soak: every device sends a parked backlog as "
        "fast as acknowledged (≤ 15/s each), no queries; same server, clients and run",
        "baseline_fixes_per_s": round(baseline_per_s, 1),
        "ratio_to_baseline": round(fixes_per_s / baseline_per_s, 3) if baseline_per_s else None,
        "query_baseline": "the same queries on the idle server right after the soak",
    }


# each round: (``gridpatrol serve --role``, what it is)
ROUNDS = (
    ("single", "everything in one process, as served before the process roles (--role single)"),
    (
        "all",
        (
            "the process roles as make run serves them: a supervisor with the api, ingest and "
            "worker processes (--role all, GRIDPATROL_ROLES_* defaults)"
        ),
    ),
)
# figures of the single-process round carried into the result as ``single_<key>``
COMPARED = (
    "fixes_per_s",
    "osmand_ack_p50_ms",
    "osmand_ack_p99_ms",
    "jt808_ack_p50_ms",
    "jt808_ack_p99_ms",
    "coverage_lag_p95_s",
    "query_dispatch_candidates_p99_ms",
    "lost",
    "duplicates",
    "rss_peak_mb",
    "server_cpu_percent_of_one_core",
    "baseline_fixes_per_s",
)


def _round(plan: Plan, role: str) -> dict[str, Any]:
    """One soak against a fresh database and ``gridpatrol serve --role ROLE``."""
    with (
        tempfile.TemporaryDirectory(prefix="gridpatrol-soak-") as tmp,
        throwaway_database() as url,
    ):
        work = Path(tmp)
        began = time.perf_counter()
        setup = asyncio.run(_prepare(url, plan, work))
        print(f"准备 setup: demo, {plan.vehicles} vehicles in {time.perf_counter() - began:.0f}s")
        env = {
            "GRIDPATROL_API_STATE_DIR": str(work / "state"),
            # the soak's simulated clock lags the wall clock by up to sim_s: still live responders
            "GRIDPATROL_DISPATCH_MAX_AGE_S": str(plan.sim_s + 300),
            # the whole fleet sends from one loopback address
            "GRIDPATROL_OSMAND_ADDRESS_RATE_PER_S": "0",
        }
        with server_process(url, f"soak-{role}", role=role, **env) as ports:
            wait_for_port(ports["jt808"])
            soak = _runner()(_soak(plan, setup, ports, url))
        stored, rejected = _stored(url, list(itertools.chain(*setup.identifiers.values())))
        figures = _figures(plan, setup, soak, _load_results(setup), stored, rejected)
    print(
        f"浸泡 soak --role {role}: {figures['fixes_per_s']:.0f} fixes/s "
        f"(offered {figures['offered_fixes_per_s']:.0f}, "
        f"burst baseline {figures['baseline_fixes_per_s']:.0f}); ack p99 OsmAnd "
        f"{figures['osmand_ack_p99_ms']} ms, JT/T 808 {figures['jt808_ack_p99_ms']} ms; "
        f"coverage lag p95 {figures['coverage_lag_p95_s']} s; "
        f"RSS 内存 {figures['rss_start_mb']}→{figures['rss_peak_mb']}→{figures['rss_end_mb']} MB; "
        f"丢失 lost {figures['lost']}, 重复 duplicates {figures['duplicates']}",
        flush=True,
    )
    return figures


def run(quick: bool = False) -> dict[str, Any]:
    plan = Plan(vehicles=200, sim_s=180.0, burst_s=3.0) if quick else Plan(2000, 1800.0, 10.0)
    LOGS.mkdir(parents=True, exist_ok=True)
    rounds = {role: _round(plan, role) for role, _ in ROUNDS}
    single = rounds["single"]
    figures = {
        "server": dict(ROUNDS)["all"],
        **rounds["all"],
        "single_process": dict(ROUNDS)["single"] + "; same plan, clients and machine, same run, "
        "its own fresh database",
        **{f"single_{key}": single.get(key) for key in COMPARED},
    }
    write_result("soak", figures)
    return figures
