"""Send simulated or replayed fleets to GridPatrol: ``gridpatrol simulate`` and ``replay``.

Vehicles are registered as devices of their villages (2 per village, as in 草原110), tracks come
from ``gis.simulation``, and fixes travel the way real terminals send them: OsmAnd HTTP requests
(one keep-alive connection per vehicle, retried on failure as Traccar Client does), or the batch
ingest path in-process. ``speedup`` paces sending against the simulated clock (0 = as fast as
possible), each vehicle at its own phase of its reporting interval, as terminals that booted at
different moments are (not all in the same instant); the report says what was sent and what the
server answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import shapely
from numpy.typing import NDArray
from psycopg import AsyncConnection

from api.ingest.fixes import FixBatch
from api.ingest.registry import key_hash, new_key
from api.ingest.store import Ingestor
from api.progress import NullProgress, Progress
from api.settings import Settings
from gis.simulation import FleetTracks, simulate_fleet

PER_VILLAGE = 2
BATCH_CHUNK = 250_000


@dataclass(frozen=True)
class Fleet:
    identifiers: list[str]
    villages: list[str]
    areas: list[Any]


@dataclass
class SendReport:
    """What a simulation sent and how the server answered (per HTTP status or outcome)."""

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.sent / self.seconds if self.seconds else 0.0
        out = [
            f"sent {self.sent} fixes in {self.seconds:.1f}s ({rate:,.0f}/s), {self.retries} retries"
        ]
        out += [f"  {k}: {v}" for k, v in sorted(self.answers.items())]
        return out


async def load_fleet(conn: AsyncConnection[Any], vehicles: int, *, area_prefix: str = "") -> Fleet:
    """Pick villages (code order, within ``area_prefix``), two vehicles each."""
    rows = await (
        await conn.execute(
            "SELECT code, ST_AsBinary(geom) FROM admin_area WHERE level = 'village' "
            "AND code LIKE %s ORDER BY code LIMIT %s",
            (area_prefix + "%", -(-vehicles // PER_VILLAGE)),
        )
    ).fetchall()
    if not rows:
        raise ValueError(f"no villages under {area_prefix or 'any code'}: load boundaries first")
    villages: list[str] = []
    areas: list[Any] = []
    for code, wkb in rows:
        geom = shapely.from_wkb(bytes(wkb))
        villages += [code] * PER_VILLAGE
        areas += [geom] * PER_VILLAGE
    villages, areas = villages[:vehicles], areas[:vehicles]
    identifiers = [f"sim-{v}-{i % PER_VILLAGE + 1}" for i, v in enumerate(villages)]
    return Fleet(identifiers=identifiers, villages=villages, areas=areas)


async def register_fleet(
    conn: AsyncConnection[Any], fleet: Fleet, gcj02: NDArray[np.bool_]
) -> dict[str, str]:
    """Register (or refresh) the fleet's devices; GCJ-02 terminals get ``crs = gcj02``. Each
    device gets a fresh OsmAnd key: returns identifier → key (what ``send_osmand`` sends)."""
    keys = {identifier: new_key() for identifier in fleet.identifiers}
    await conn.execute(
        """
        INSERT INTO device (identifier, kind, name, plate, home_village, crs, osmand_key_hash)
        SELECT i, 'vehicle', '巡逻车 ' || i, '蒙H·S' || lpad(n::text, 4, '0'), v, c, k
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
               WITH ORDINALITY AS u(i, v, c, k, n)
        ON CONFLICT (identifier) DO UPDATE SET home_village = EXCLUDED.home_village,
               crs = EXCLUDED.crs, enabled = true, osmand_key_hash = EXCLUDED.osmand_key_hash,
               updated_at = now()
        """,
        (
            fleet.identifiers,
            fleet.villages,
            ["gcj02" if g else "wgs84" for g in gcj02],
            [key_hash(keys[i]) for i in fleet.identifiers],
        ),
    )
    return keys


async def issue_keys(conn: AsyncConnection[Any], identifiers: list[str]) -> dict[str, str]:
    """Fresh OsmAnd keys for these (registered) devices: identifier → key."""
    keys = {identifier: new_key() for identifier in identifiers}
    await conn.execute(
        "UPDATE device d SET osmand_key_hash = u.k, updated_at = now() "
        "FROM unnest(%s::text[], %s::text[]) AS u(i, k) WHERE d.identifier = u.i",
        (identifiers, [key_hash(keys[i]) for i in identifiers]),
    )
    return keys


def fleet_tracks(
    fleet: Fleet,
    *,
    hours: float,
    interval_s: float,
    end_us: int,
    seed: int,
    gaps_per_h: float = 0.3,
) -> FleetTracks:
    """Tracks of the fleet over the ``hours`` before ``end_us``; ``gaps_per_h`` stretches of
    2–15 min without signal per vehicle-hour."""
    start = end_us - int(hours * 3600 * 1e6)
    return simulate_fleet(
        fleet.areas,
        hours=hours,
        interval_s=interval_s,
        start_us=start,
        seed=seed,
        gap_rate_per_h=gaps_per_h,
    )


def as_batch(
    tracks: FleetTracks, identifiers: list[str], rows: NDArray[np.int64] | None = None
) -> FixBatch:
    sel = slice(None) if rows is None else rows
    return FixBatch.from_columns(
        device=np.asarray(identifiers, dtype=object)[tracks.vehicle[sel]],
        time_us=tracks.time_us[sel],
        lat=tracks.lat[sel],
        lon=tracks.lon[sel],
        speed=tracks.speed[sel],
        course=tracks.course[sel],
        accuracy=tracks.accuracy[sel],
    )


async def send_batch(
    conn: AsyncConnection[Any],
    settings: Settings,
    batch: FixBatch,
    *,
    progress: Progress,
    source_crs: str | None = None,
) -> SendReport:
    """Store through the batch ingest core path, time-ordered chunks, in this process
    (coordinates in ``source_crs`` when given, else in each device's declared datum)."""
    report = SendReport()
    began = time.perf_counter()
    order = np.argsort(batch.time_us, kind="stable")
    ingestor = Ingestor(settings.ingest)
    task = progress.task("模拟 batch", len(batch))
    for start in range(0, len(batch), BATCH_CHUNK):
        chunk = batch.take(order[start : start + BATCH_CHUNK])
        await ingestor.prepare(conn, chunk)
        result = await ingestor.store(conn, chunk, protocol="batch", source_crs=source_crs)
        report.answers.update({k: v for k, v in result.counts().items() if v})
        report.sent += len(chunk)
        task.advance(len(chunk))
    report.seconds = time.perf_counter() - began
    return report


class _Busy(ConnectionError):
    """429 or 503: not stored; resend after ``wait`` seconds (the server's ``Retry-After``)."""

    def __init__(self, status: str, wait: float) -> None:
        super().__init__(f"server answered {status}; retry in {wait:g}s")
        self.wait = wait


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str]]:
    """One request on a keep-alive HTTP/1.1 connection: (status, headers lower-cased); the
    body is read and dropped. Raises what the stream raises when the connection fails."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if int(headers.get("content-length", 0)):
        await reader.readexactly(int(headers["content-length"]))
    return int(lines[0][9:12]), headers


class _Link:
    """One vehicle's keep-alive HTTP connection; reconnects after any failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> str:
        """Send one request; returns "status outcome", raises ConnectionError to retry."""
        try:
            if self.writer is None or self.reader is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            code, headers = await http_exchange(self.reader, self.writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise ConnectionError(str(exc)) from exc
        status = str(code)
        if status in ("429", "503"):  # rate-limited or database unavailable: keep and resend
            wait = headers.get("retry-after", "1")
            raise _Busy(status, float(wait) if wait.isdigit() else 1.0)
        return f"{status} {headers.get('x-gridpatrol-outcome', '')}".strip()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _vehicle_sender(
    link: _Link,
    identifier: str,
    tracks: FleetTracks,
    rows: range,
    clock: tuple[float, int, float],
    report: SendReport,
    task: Any,
    max_retries: int,
    key: str | None = None,
) -> None:
    """One vehicle's fixes in time order, each retried until answered (as Traccar Client);
    ``key`` is its OsmAnd key (sent as ``key=``, as a tracking URL template carries it)."""
    loop = asyncio.get_running_loop()
    wall0, sim0, speedup = clock
    for k in rows:
        t = int(tracks.time_us[k])
        if speedup > 0:
            await asyncio.sleep(max(0.0, wall0 + (t - sim0) / 1e6 / speedup - loop.time()))
        query = (
            f"id={identifier}&lat={tracks.lat[k]:.7f}&lon={tracks.lon[k]:.7f}&timestamp={t // 1000}"
        )
        if np.isfinite(tracks.speed[k]):
            query += f"&speed={tracks.speed[k] / 0.514444:.2f}&bearing={tracks.course[k]:.1f}"
        if key is not None:
            query += f"&key={key}"
        request = f"GET /?{query} HTTP/1.1\r\nHost: {link.host}\r\n\r\n".encode()
        for attempt in range(max_retries + 1):
            try:
                report.answers[await link.exchange(request)] += 1
                break
            except ConnectionError as exc:
                if attempt == max_retries:
                    report.answers["gave up"] += 1
                    break
                report.retries += 1
                backoff = min(0.2 * 2**attempt, 5.0)
                await asyncio.sleep(max(backoff, exc.wait) if isinstance(exc, _Busy) else backoff)
        report.sent += 1
        task.advance(1)
    link.close()


def send_phases(
    tracks: FleetTracks, bounds: NDArray[np.int64], speedup: float, *, seed: int = 0
) -> list[float]:
    """Wall seconds each vehicle's sending is shifted by: uniform over its own reporting
    interval (the median gap of its fixes) at ``speedup``; all 0 when not paced."""
    rng = np.random.default_rng(seed)
    phases = []
    for a, b in itertools.pairwise(bounds.tolist()):
        gaps = np.diff(tracks.time_us[a:b])
        interval_s = float(np.median(gaps)) / 1e6 if len(gaps) else 0.0
        phases.append(float(rng.uniform(0.0, interval_s)) / speedup if speedup > 0 else 0.0)
    return phases


async def send_osmand(
    tracks: FleetTracks,
    identifiers: list[str],
    *,
    host: str,
    port: int,
    speedup: float = 0.0,
    progress: Progress | None = None,
    max_retries: int = 20,
    keys: dict[str, str] | None = None,
) -> SendReport:
    """Send every vehicle's fixes as OsmAnd requests, each vehicle on its own connection;
    ``keys`` (identifier → OsmAnd key, from ``register_fleet``) authenticate them."""
    progress = progress or NullProgress()
    report = SendReport()
    task = progress.task("模拟 OsmAnd", len(tracks))
    loop = asyncio.get_running_loop()
    wall0, sim0 = loop.time(), int(tracks.time_us.min()) if len(tracks) else 0
    began = time.perf_counter()
    bounds = tracks.bounds()
    phases = send_phases(tracks, bounds, speedup)
    senders = [
        _vehicle_sender(
            _Link(host, port),
            identifiers[int(tracks.vehicle[a])],
            tracks,
            range(a, b),
            (wall0 + phase, sim0, speedup),
            report,
            task,
            max_retries,
            (keys or {}).get(identifiers[int(tracks.vehicle[a])]),
        )
        for (a, b), phase in zip(itertools.pairwise(bounds.tolist()), phases, strict=True)
        if b > a
    ]
    await asyncio.gather(*senders)
    report.seconds = time.perf_counter() - began
    return report


def stored_per_second(url: str, identifiers: list[str]) -> Counter[tuple[str, int]]:
    """How many rows ``position`` holds per (identifier, unix second) of these devices: what a
    simulated fleet's acknowledgements are checked against (lost: acked, 0; duplicated: > 1)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.identifier, extract(epoch FROM p.fix_time)::bigint, count(*) "
            "FROM position p JOIN device d ON d.id = p.device_id "
            "WHERE d.identifier = ANY(%s) GROUP BY 1, 2",
            (identifiers,),
        ).fetchall()
    return Counter({(str(r[0]), int(r[1])): int(r[2]) for r in rows})
