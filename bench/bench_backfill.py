"""A 30-day simulated league backfill on Dask: synthetic patrol fixes written as GeoParquet in the
archive's layout (day × county), then ``cell_visit`` recomputed for the 30 local days with the
Dask engine on a local cluster of 1 and 2 worker processes.

Baseline in the same run: the same tasks (device ranges through ``gis.coverage.cell_visits``)
run one after another in this process, without Dask — the in-process pure path the database
engine also uses. The 2-worker result is then written to a throwaway database the way the
backfill stores it (one transaction, binary COPY) to give the end-to-end figure.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from api import archive
from api.coverage import backfill
from api.settings import CoverageSettings
from bench.common import throwaway_database, write_result
from gis.units import METRES_PER_DEGREE

COUNTIES = ["152501", "152502", "152522", "152523", "152524", "152525", "152526", "152527",
            "152528", "152529", "152530", "152531"]  # fmt: skip
DAYS = 30
FIRST = date(2026, 10, 1)


def synthesize(root: Path, vehicles: int, hours: float, interval_s: float) -> int:
    """Write the fleet's fixes: each vehicle a 12 h random-walk shift a day from its home (a
    turning, sometimes stopping drive at ≈ 30 km/h, 1 % of fixes lost). Returns the fixes."""
    rng = np.random.default_rng(110)
    home_lat = rng.uniform(42.5, 45.5, vehicles)
    home_lon = rng.uniform(112.5, 118.5, vehicles)
    county = np.arange(vehicles) * len(COUNTIES) // vehicles  # ids registered county by county
    steps = int(hours * 3600 / interval_s)
    total = 0
    for k in range(DAYS):
        day = FIRST + timedelta(days=k)
        start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**6
        heading = np.cumsum(rng.normal(0, 0.35, (vehicles, steps)), axis=1)
        speed = np.where(rng.random((vehicles, steps)) < 0.15, 0.0, rng.uniform(5, 12))
        step_m = speed * interval_s
        lat = home_lat[:, None] + np.cumsum(step_m * np.cos(heading), axis=1) / METRES_PER_DEGREE
        lon = home_lon[:, None] + np.cumsum(step_m * np.sin(heading), axis=1) / (
            METRES_PER_DEGREE * np.cos(np.radians(home_lat[:, None]))
        )
        t = start_us + (np.arange(steps) * interval_s * 1e6).astype(np.int64)
        keep = rng.random((vehicles, steps)) > 0.01
        for c, code in enumerate(COUNTIES):
            rows = np.flatnonzero(county == c)
            mask = keep[rows]
            dev = np.repeat(rows + 1, mask.sum(axis=1))
            table = archive.fixes_table(
                dev,
                np.broadcast_to(t, mask.shape)[mask],
                lat[rows][mask],
                lon[rows][mask],
                protocol="bench",
            )
            archive.write_fixes(
                archive.day_dir(root, day) / f"county={code}" / "part-0.parquet", table
            )
            total += len(dev)
    return total


def _dask_run(
    files: list[str], workers: int, tasks: int, settings: CoverageSettings
) -> tuple[float, float, list[tuple[bytes, int, int]]]:
    from dask.distributed import Client, LocalCluster

    began = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        client.run(importlib.import_module, "api.coverage.backfill")  # warm: imports, h3
        startup = time.perf_counter() - began
        began = time.perf_counter()
        last = FIRST + timedelta(days=DAYS - 1)
        out = backfill.compute_dask(client, files, FIRST, last, settings, tasks=tasks)
        return startup, time.perf_counter() - began, out


async def _store(url: str, payloads: list[bytes]) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        await backfill.replace_window(conn, FIRST, FIRST + timedelta(days=DAYS - 1), payloads)
        return time.perf_counter() - began


def run(quick: bool = False) -> dict[str, Any]:
    vehicles, hours, interval = (40, 4.0, 30.0) if quick else (300, 12.0, 20.0)
    tasks = 8 if quick else 30
    settings = CoverageSettings()
    last = FIRST + timedelta(days=DAYS - 1)
    base = Path(tempfile.mkdtemp(prefix="gridpatrol-backfill-"))
    try:
        began = time.perf_counter()
        fixes = synthesize(base, vehicles, hours, interval)
        synth_s = time.perf_counter() - began
        files = backfill.parquet_files([base], FIRST, last)
        parquet_bytes = sum(Path(f).stat().st_size for f in files)
        print(f"{fixes} fixes in {len(files)} files, {parquet_bytes / 1e6:.0f} MB", flush=True)

        began = time.perf_counter()
        inproc = [
            backfill.visits_of_devices(
                lo, hi, files=task_files, first=FIRST, last=last, settings=settings
            )
            for lo, hi, task_files in backfill.device_tasks(files, tasks)
        ]
        inproc_s = time.perf_counter() - began
        rows = sum(r[2] for r in inproc)
        print(f"in-process: {inproc_s:.1f}s, {rows} cell visits", flush=True)
        timings = {}
        for workers in (1, 2):
            startup, seconds, out = _dask_run(files, workers, tasks, settings)
            assert sum(r[2] for r in out) == rows, "every engine run makes the same rows"
            assert sum(r[1] for r in out) == sum(r[1] for r in inproc)
            timings[workers] = (startup, seconds)
            print(f"dask {workers} worker(s): {seconds:.1f}s (+{startup:.1f}s start)", flush=True)
        with throwaway_database() as url:
            store_s = asyncio.run(_store(url, [r[0] for r in out]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    t1, t2 = timings[1][1], timings[2][1]
    figures = {
        "days": DAYS,
        "vehicles": vehicles,
        "hours_per_day": hours,
        "interval_s": interval,
        "fixes": fixes,
        "cell_visit_rows": rows,
        "tasks": tasks,
        "geoparquet_bytes_per_fix": round(parquet_bytes / fixes, 2),
        "synthesize_s": round(synth_s, 1),
        "dask_1_worker_s": round(t1, 2),
        "dask_1_worker_fixes_per_s": round(fixes / t1),
        "dask_2_workers_s": round(t2, 2),
        "dask_2_workers_fixes_per_s": round(fixes / t2),
        "speedup_2_vs_1": round(t1 / t2, 3),
        "cluster_start_s": round(max(timings[1][0], timings[2][0]), 2),
        "baseline": "the same tasks run one after another in-process (no Dask), pure engine",
        "baseline_s": round(inproc_s, 2),
        "baseline_fixes_per_s": round(fixes / inproc_s),
        "ratio_2_workers_to_baseline": round(inproc_s / t2, 3),
        "store_cell_visit_s": round(store_s, 2),
        "store_rows_per_s": round(rows / store_s),
        "cores": len(os.sched_getaffinity(0)),
    }
    write_result("backfill", figures)
    return figures
