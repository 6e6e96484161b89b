"""Shared benchmark helpers: result files, timing, percentiles, a throwaway database, a
simulated patrol day stored through the ingest path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import AsyncConnection

from api.db import migrate
from api.db.cluster import EmbeddedCluster, free_port
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from api.simulate import fleet_tracks, load_fleet, register_fleet
from gis.units import china_today

RESULTS = Path(__file__).parent / "results"


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    return out.stdout.strip() or "unknown"


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with commit and date added; print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": name,
        **figures,
        "commit": commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return path


def best_of(func: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Fastest wall time of ``repeat`` runs (the machine is shared: the minimum is the signal)."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def percentiles_ms(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
    }


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A migrated PostGIS database in a temporary cluster, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="gridpatrol-bench-"))
    base.chmod(0o755)
    cluster = EmbeddedCluster(base / "pg", port=free_port(), dbname="bench")
    try:
        cluster.start()
        migrate.upgrade(cluster.url)
        yield cluster.url
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def settle(url: str) -> None:
    """Write the setup's data out before a latency measurement: a checkpoint, then the
    kernel's dirty pages. Otherwise the writeback of a freshly loaded demo (hundreds of MB,
    30 s after it was written) lands inside the measurement and stalls WAL flushes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of a process in MB; 0 when it has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (a supervisor's role processes and their pools)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss_mb(pid: int) -> float:
    """``rss_mb`` summed over ``pid`` and its descendants."""
    return sum(rss_mb(p) for p in process_tree(pid))


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` summed over ``pid`` and its living descendants."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/PID/stat``); 0 when gone."""
    try:
        # after the ")" closing the command name: field 3 (state) first, utime 14, stime 15
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def simulated_day(
    conn: AsyncConnection[Any], vehicles: int, hours: float, *, seed: int, chunk: int = 1_000_000
) -> tuple[date, datetime, int]:
    """The demo fleet's shift ending at 20:00 China time yesterday (so one local day), stored
    through batch ingest: returns (that day, the shift's end, fixes simulated)."""
    fleet = await load_fleet(conn, vehicles)
    day = china_today() - timedelta(days=1)
    end = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)  # 20:00 China = 12:00 UTC
    tracks = fleet_tracks(
        fleet, hours=hours, interval_s=10, end_us=int(end.timestamp() * 1e6), seed=seed
    )
    await register_fleet(conn, fleet, tracks.gcj02)
    ingestor = Ingestor(IngestSettings())
    ids = np.asarray(fleet.identifiers, dtype=object)
    for lo in range(0, len(tracks), chunk):
        sel = np.arange(lo, min(lo + chunk, len(tracks)))
        batch = FixBatch.from_columns(
            device=ids[tracks.vehicle[sel]],
            time_us=tracks.time_us[sel],
            lat=tracks.lat[sel],
            lon=tracks.lon[sel],
        )
        await ingestor.prepare(conn, batch)
        await ingestor.store(conn, batch, protocol="batch")
    return day, end, len(tracks)


async def copy_day_back(conn: AsyncConnection[Any], days: int = 6) -> None:
    """Copy the computed coverage of the stored day(s) to the ``days`` days before them
    (``grid_visit`` with its visit times shifted, ``grid_visit_day``, ``device_day``): a week of
    aggregates from one simulated day, for the benchmarks that read a week."""
    await conn.execute(
        """
        INSERT INTO grid_visit
        SELECT layout_id, day - k, grid_id, device_id, fixes, dwell_s, metres,
               first_seen - k * interval '1 day', last_seen - k * interval '1 day', seen,
               (SELECT array_agg(v - k * 86400000000::bigint) FROM unnest(visit_start) v),
               (SELECT array_agg(v - k * 86400000000::bigint) FROM unnest(visit_end) v)
          FROM grid_visit, generate_series(1, %(days)s) AS k
        """,
        {"days": days},
    )
    await conn.execute(
        "INSERT INTO grid_visit_day (layout_id, day) SELECT layout_id, day - k "
        "FROM grid_visit_day, generate_series(1, %(days)s) k ON CONFLICT DO NOTHING",
        {"days": days},
    )
    await conn.execute(
        "INSERT INTO device_day (device_id, day, fixes, dwell_s, metres, cells, first_seen, "
        "last_seen) SELECT device_id, day - k, fixes, dwell_s, metres, cells, first_seen, "
        "last_seen FROM device_day, generate_series(1, %(days)s) k ON CONFLICT DO NOTHING",
        {"days": days},
    )
