"""Bulk ingest: ≥ 1 M fixes through the batch core path (filters → COPY → live state, one
transaction) against a bare binary COPY of the same rows into an unindexed, unpartitioned
table in the same run. Target: ≥ 150 k fixes/s and ≥ 0.35 × the bare COPY rate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import psycopg

from api.auth import SYSTEM
from api.demo import load_demo
from api.devices import DeviceIn, import_devices
from api.ingest.copybin import COLUMNS, OPTIONAL, encode_positions
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from bench.common import throwaway_database, write_result
from gis.units import METRES_PER_DEGREE

VILLAGE = "152502100200"


def synthetic_fixes(devices: int, per_device: int, seed: int = 1) -> FixBatch:
    """Vehicles driving at 5–15 m/s inside 锡林浩特市, one fix every 10 s, ending an hour ago."""
    rng = np.random.default_rng(seed)
    n = devices * per_device
    step = np.arange(per_device)
    t0 = int((time.time() - 3600 - per_device * 10) * 1e6)
    heading = rng.uniform(0, 2 * np.pi, devices)
    speed = rng.uniform(5, 15, devices)
    lat0 = 43.85 + rng.uniform(0, 0.3, devices)
    lon0 = 115.9 + rng.uniform(0, 0.4, devices)
    dist = np.outer(speed, step * 10.0)  # metres along a straight line
    lat = lat0[:, None] + dist * np.cos(heading)[:, None] / METRES_PER_DEGREE
    lon = lon0[:, None] + dist * np.sin(heading)[:, None] / (
        METRES_PER_DEGREE * np.cos(np.radians(44))
    )
    return FixBatch.from_columns(
        device=np.repeat(
            np.array([f"bench-{i:05d}" for i in range(devices)], dtype=object), per_device
        ),
        time_us=t0 + np.tile(step * 10_000_000, devices),
        lat=lat.ravel(),
        lon=lon.ravel(),
        speed=np.repeat(speed, per_device),
        course=np.repeat(np.degrees(heading), per_device),
        accuracy=rng.uniform(3, 15, n),
    )


async def _run(url: str, devices: int, per_device: int, repeat: int) -> dict[str, Any]:
    batch = synthetic_fixes(devices, per_device)
    n = len(batch)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        await import_devices(
            conn,
            SYSTEM,
            [DeviceIn(identifier=f"bench-{i:05d}", home_village=VILLAGE) for i in range(devices)],
        )
        ids = {
            r[0]: r[1]
            for r in await (await conn.execute("SELECT identifier, id FROM device")).fetchall()
        }
        payload = encode_positions(
            device_id=np.array([ids[d] for d in batch.device], dtype=np.int64),
            time_us=batch.time_us,
            lat=batch.lat,
            lon=batch.lon,
            optional={k: getattr(batch, k) for k in OPTIONAL},
            extras=batch.extras,
            received_us=int(time.time() * 1e6),
            protocol="batch",
        )
        await conn.execute("CREATE TABLE bare_copy (LIKE position)")
        bare = []
        for _ in range(repeat):
            await conn.execute("TRUNCATE bare_copy")
            start = time.perf_counter()
            async with (
                conn.cursor() as cur,
                cur.copy(
                    f"COPY bare_copy ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)"
                ) as copy,
            ):
                await copy.write(payload)
            bare.append(time.perf_counter() - start)
        ours = []
        ingestor = Ingestor(IngestSettings())
        for _ in range(repeat):
            await conn.execute("TRUNCATE position, device_state")
            start = time.perf_counter()
            await ingestor.prepare(conn, batch)
            result = await ingestor.store(conn, batch, protocol="batch")
            ours.append(time.perf_counter() - start)
            assert result.stored == n, result.counts()
        start = time.perf_counter()
        again = await ingestor.store(conn, batch, protocol="batch")
        retry_s = time.perf_counter() - start
        assert again.duplicate == n
    best_bare, best_ours = min(bare), min(ours)
    return {
        "fixes": n,
        "devices": devices,
        "fixes_per_s": round(n / best_ours),
        "seconds": round(best_ours, 3),
        "baseline": "bare binary COPY of the same rows into an unindexed, unpartitioned table",
        "baseline_rows_per_s": round(n / best_bare),
        "ratio_to_copy": round(best_bare / best_ours, 3),
        "retry_all_duplicates_fixes_per_s": round(n / retry_s),
        "target_fixes_per_s": 150_000,
        "target_ratio_to_copy": 0.35,
    }


def run(quick: bool = False) -> dict[str, Any]:
    devices, per_device = (500, 400) if quick else (2000, 500)
    with throwaway_database() as url:
        figures = asyncio.run(_run(url, devices, per_device, repeat=2 if quick else 3))
    write_result("ingest_bulk", figures)
    return figures
