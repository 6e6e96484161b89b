"""Recompute ``cell_visit`` for a window of local days: in the database, or on Dask.

``db``: mark every device-day of the window that has fixes (or cell visits) dirty and let the
incremental updater recompute them from ``position`` — the everyday path, one process.

``dask``: read the fixes from GeoParquet (the archive, plus optionally a snapshot of the live
partitions written by ``export_live``), split the devices into contiguous id ranges and run the
same pure engine (``gis.coverage.cell_visits``) on each range as a Dask task — on a local
cluster or any scheduler (workers must see the same files: a shared disk or object store). Each
task reads only its devices (the files are sorted by device, so row groups are pruned) and
returns its rows as a binary COPY payload; the window's rows are then replaced in one
transaction. Complete devices per task make the result exact (``gis.coverage`` doc), equal to
the ``db`` engine's on the same fixes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from psycopg import AsyncConnection, sql

from api.archive import day_dir, export_partition
from api.coverage.rows import CELL_VISIT_COLUMNS, encode_cell_visits
from api.coverage.update import CoverageUpdater
from api.db.copyio import write_rows
from api.ingest.partitions import existing
from api.ingest.sinks import REMARK
from api.progress import NullProgress, Progress
from api.settings import CoverageSettings
from gis.coverage import cell_visits
from gis.units import CHINA_OFFSET_SQL, china_day_bounds

EPOCH = date(1970, 1, 1)


@dataclass
class BackfillReport:
    engine: str
    days: int = 0
    fixes: int = 0
    cell_rows: int = 0
    tasks: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"backfill ({self.engine}): {self.days} days, {self.fixes} fixes → "
            f"{self.cell_rows} cell visits in {self.tasks} tasks ({self.seconds:.1f}s)"
        )


def utc_days(first: date, last: date) -> list[date]:
    """UTC days whose fixes feed the local (UTC+8) days [first, last]: first − 1 … last."""
    return [first - timedelta(days=1) + timedelta(days=k) for k in range((last - first).days + 2)]


def _bounds_us(first: date, last: date, settings: CoverageSettings) -> tuple[int, int]:
    """[start, end) in UTC µs of the local days, widened by ``max_gap_s`` either side."""
    margin = int(settings.max_gap_s * 1e6)
    start, end = china_day_bounds(first)[0], china_day_bounds(last)[1]
    return int(start.timestamp()) * 1_000_000 - margin, int(end.timestamp()) * 1_000_000 + margin


# ------------------------------------------------------------------------------------ db engine


async def backfill_db(
    conn: AsyncConnection[Any],
    settings: CoverageSettings,
    first: date,
    last: date,
    *,
    archive_root: Path | None = None,
    progress: Progress | None = None,
) -> BackfillReport:
    """Recompute the window in the database (refused when a day it needs was archived)."""
    began = time.perf_counter()
    live = await existing(conn)
    if archive_root is not None:
        gone = [
            d for d in utc_days(first, last) if d not in live and day_dir(archive_root, d).is_dir()
        ]
        if gone:
            raise ValueError(
                f"position days {gone[0]} … {gone[-1]} are archived: use --engine dask"
            )
    start, end = china_day_bounds(first)[0], china_day_bounds(last)[1]
    await conn.execute(
        sql.SQL("""
        INSERT INTO coverage_dirty (device_id, day)
        SELECT DISTINCT device_id, ((fix_time AT TIME ZONE 'UTC') + {china})::date
          FROM position WHERE fix_time >= %(lo)s AND fix_time < %(hi)s
        UNION
        SELECT DISTINCT device_id, day FROM cell_visit WHERE day BETWEEN %(a)s AND %(b)s
        """).format(china=sql.SQL(CHINA_OFFSET_SQL))
        + REMARK,
        {"lo": start, "hi": end, "a": first, "b": last},
    )
    update = await CoverageUpdater(settings).run(conn, progress=progress)
    return BackfillReport(
        "db",
        days=(last - first).days + 1,
        fixes=update.fixes,
        cell_rows=update.cell_rows,
        tasks=update.device_days,
        seconds=time.perf_counter() - began,
    )


# ---------------------------------------------------------------------------------- dask engine


async def export_live(
    conn: AsyncConnection[Any], first: date, last: date, root: Path
) -> list[date]:
    """Snapshot the live partitions the window needs as GeoParquet under ``root`` (same layout as
    the archive); returns the days written."""
    live = await existing(conn)
    days = [d for d in utc_days(first, last) if d in live]
    for day in days:
        await export_partition(conn, day, day_dir(root, day))
    return days


def parquet_files(roots: list[Path], first: date, last: date) -> list[str]:
    """The GeoParquet files of the UTC days the window needs, under every root."""
    return [
        str(f)
        for root in roots
        for day in utc_days(first, last)
        for f in sorted(day_dir(root, day).glob("county=*/*.parquet"))
    ]


def device_ranges(files: list[str], parts: int) -> list[tuple[int, int]]:
    """Contiguous device-id ranges [lo, hi) with about equal numbers of devices."""
    if not files:
        return []
    ids = pc.unique(ds.dataset(files, format="parquet").to_table(columns=["device_id"])[0])
    devices = np.sort(ids.to_numpy())
    cuts = np.unique(np.linspace(0, len(devices), min(parts, len(devices)) + 1).astype(int))
    return [(int(devices[a]), int(devices[b - 1]) + 1) for a, b in itertools.pairwise(cuts)]


def device_tasks(files: list[str], parts: int) -> list[tuple[int, int, list[str]]]:
    """``device_ranges`` with, for each range, only the files whose device ids may fall in it."""
    bounds = device_bounds(files)
    return [
        (lo, hi, [f for f, (a, b) in zip(files, bounds, strict=True) if a < hi and b >= lo])
        for lo, hi in device_ranges(files, parts)
    ]


def visits_of_devices(
    lo: int,
    hi: int,
    *,
    files: list[str],
    first: date,
    last: date,
    settings: CoverageSettings,
) -> tuple[bytes, int, int]:
    """One task: the cell visits of devices [lo, hi) on the local days [first, last], as a
    ``cell_visit`` binary COPY payload; with the fixes read and rows made."""
    start_us, end_us = _bounds_us(first, last, settings)
    ts = pa.timestamp("us", tz="UTC")
    flt = (
        (ds.field("device_id") >= lo)
        & (ds.field("device_id") < hi)
        & (ds.field("fix_time") >= pa.scalar(start_us, ts))
        & (ds.field("fix_time") < pa.scalar(end_us, ts))
    )
    table = ds.dataset(files, format="parquet").to_table(
        columns=["device_id", "fix_time", "lat", "lon"], filter=flt
    )
    visits = cell_visits(
        table.column("device_id").to_numpy().astype(np.int64),
        table.column("fix_time").cast(pa.int64()).to_numpy(),
        table.column("lat").to_numpy(),
        table.column("lon").to_numpy(),
        res=settings.resolution,
        max_gap_s=settings.max_gap_s,
        max_speed_mps=settings.max_speed_mps,
        visit_gap_s=settings.visit_gap_s,
        sight_m=settings.sight_m,
    )
    a, b = (first - EPOCH).days, (last - EPOCH).days
    visits = visits.select((visits.day >= a) & (visits.day <= b))
    return encode_cell_visits(visits), table.num_rows, len(visits)


def compute_dask(
    client: Any,
    files: list[str],
    first: date,
    last: date,
    settings: CoverageSettings,
    *,
    tasks: int | None = None,
) -> list[tuple[bytes, int, int]]:
    """Run ``visits_of_devices`` over device ranges on a Dask ``distributed.Client`` (default:
    four ranges per worker)."""
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    futures = [
        client.submit(
            visits_of_devices,
            lo,
            hi,
            files=task_files,
            first=first,
            last=last,
            settings=settings,
            pure=False,
        )
        for lo, hi, task_files in device_tasks(files, tasks or workers * 4)
    ]
    return list(client.gather(futures))


def device_bounds(files: list[str]) -> list[tuple[int, int]]:
    """Smallest and largest device id per file, from the Parquet footers' statistics (a task
    opens only the files that may hold its devices)."""
    out = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        column = meta.schema.names.index("device_id")
        stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
        if any(st is None or not st.has_min_max for st in stats):
            out.append((-(2**31), 2**31))
        else:
            out.append((min(int(st.min) for st in stats), max(int(st.max) for st in stats)))
    return out


async def replace_window(
    conn: AsyncConnection[Any], first: date, last: date, payloads: list[bytes]
) -> None:
    """Replace the window's ``cell_visit`` rows (one transaction), rebuild its ``device_day``
    totals and mark its per-layout ``grid_visit`` days stale (rebuilt when next read)."""
    window = {"a": first, "b": last}
    async with conn.transaction():
        await conn.execute("DELETE FROM cell_visit WHERE day BETWEEN %(a)s AND %(b)s", window)
        for payload in payloads:
            if len(payload) > 21:  # more than header + trailer
                await write_rows(conn, "cell_visit", CELL_VISIT_COLUMNS, payload)
        await conn.execute("DELETE FROM device_day WHERE day BETWEEN %(a)s AND %(b)s", window)
        await conn.execute(
            """
            INSERT INTO device_day (device_id, day, fixes, dwell_s, metres, cells, first_seen,
                                    last_seen)
            SELECT device_id, day, sum(fixes), sum(dwell_s), sum(metres), count(*),
                   min(first_seen), max(last_seen)
              FROM cell_visit WHERE day BETWEEN %(a)s AND %(b)s GROUP BY device_id, day
            """,
            window,
        )
        await conn.execute("DELETE FROM grid_visit_day WHERE day BETWEEN %(a)s AND %(b)s", window)


async def backfill_dask(
    conn: AsyncConnection[Any],
    client: Any,
    settings: CoverageSettings,
    first: date,
    last: date,
    *,
    roots: list[Path],
    progress: Progress | None = None,
) -> BackfillReport:
    """Recompute the window from the GeoParquet under ``roots`` on Dask and store it."""
    began = time.perf_counter()
    task = (progress or NullProgress()).task("回溯 backfill (dask)", 2)
    files = parquet_files(roots, first, last)
    results = await asyncio.to_thread(compute_dask, client, files, first, last, settings)
    task.advance()
    await replace_window(conn, first, last, [r[0] for r in results])
    task.advance()
    return BackfillReport(
        "dask",
        days=(last - first).days + 1,
        fixes=sum(r[1] for r in results),
        cell_rows=sum(r[2] for r in results),
        tasks=len(results),
        seconds=time.perf_counter() - began,
    )
