"""A simulated 草原110 day: 2,000 vehicles, a fix every 10 s for 12 h (≈ 8 M fixes) from the
positions table to updated ``cell_visit`` (and the active layouts' ``grid_visit``), then
league-wide 7-day coverage per grid from those aggregates.

Targets: the day's update < 15 s; 7-day league coverage per grid < 1 s. Baselines in the same
run: reading the day's fixes alone, as the update reads them (it cannot be faster than its
input), and a bare scan of the same grid_visit rows the coverage query aggregates.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from api.coverage import metrics
from api.coverage.rows import read_fixes
from api.coverage.update import CoverageUpdater
from api.demo import load_demo
from api.scope import Scope
from api.settings import CoverageSettings
from bench.common import copy_day_back, simulated_day, throwaway_database, write_result

CHUNK = 1_000_000


async def _run(url: str, vehicles: int, hours: float) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await load_demo(conn)
        yesterday, end, _ = await simulated_day(conn, vehicles, hours, seed=110)
        stored = (await (await conn.execute("SELECT count(*) FROM position")).fetchone())[0]  # type: ignore[index]
        device_days = (
            await (await conn.execute("SELECT count(*) FROM coverage_dirty")).fetchone()
        )[0]  # type: ignore[index]
        devices = [
            r[0]
            for r in await (
                await conn.execute("SELECT DISTINCT device_id FROM coverage_dirty")
            ).fetchall()
        ]
        lo_us = int((end - timedelta(hours=hours + 1)).timestamp() * 1e6)
        began = time.perf_counter()
        fixes = await read_fixes(conn, devices, lo_us, int(end.timestamp() * 1e6) + 3_600_000_000)
        bare_read_s = time.perf_counter() - began
        updater = CoverageUpdater(CoverageSettings())
        for layout in await (
            await conn.execute("SELECT id FROM grid_layout WHERE status = 'active'")
        ).fetchall():
            await updater.layout_index(conn, layout[0])  # warm: a server keeps these in memory
        began = time.perf_counter()
        report = await updater.step(conn, limit=device_days)
        update_s = time.perf_counter() - began
        cell_rows = report.cell_rows
        # seven days of aggregates: copy the day's grid_visit rows to the six days before it
        await copy_day_back(conn)
        await conn.execute("ANALYZE grid_visit")
        layout_id = (
            await (
                await conn.execute(
                    "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
                )
            ).fetchone()
        )[0]  # type: ignore[index]
        window = metrics.Window(yesterday - timedelta(days=6), yesterday)
        query_s, baseline_s = [], []
        for _ in range(5):
            began = time.perf_counter()
            body = await metrics.unit_metrics(
                conn, updater, Scope.everything(), layout_id, window, level="grid"
            )
            query_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            await (
                await conn.execute(
                    sql.SQL(
                        "SELECT count(*), sum(bit_length(seen)) FROM grid_visit "
                        "WHERE layout_id = {} AND day BETWEEN {} AND {}"
                    ).format(
                        sql.Literal(layout_id), sql.Literal(window.first), sql.Literal(window.last)
                    )
                )
            ).fetchone()
            baseline_s.append(time.perf_counter() - began)
        grid_rows = (
            await (
                await conn.execute(
                    "SELECT count(*) FROM grid_visit WHERE layout_id = %s", (layout_id,)
                )
            ).fetchone()
        )[0]  # type: ignore[index]
    return {
        "vehicles": vehicles,
        "hours": hours,
        "fixes": int(stored),
        "device_days": int(device_days),
        "cell_visit_rows": int(cell_rows),
        "update_s": round(update_s, 2),
        "update_fixes_per_s": round(stored / update_s),
        "baseline": (
            "the update's own read alone: the day's fixes as one binary COPY row per device"
        ),
        "baseline_read_s": round(bare_read_s, 2),
        "ratio_to_bare_read": round(bare_read_s / update_s, 3),
        "target_update_s": 15,
        "grids": len(body["units"]),
        "grid_visit_rows_7d": int(grid_rows),
        "coverage_7d_league_s": round(min(query_s), 3),
        "coverage_7d_baseline": "bare scan of the same grid_visit rows (count, bit lengths)",
        "coverage_7d_baseline_s": round(min(baseline_s), 3),
        "coverage_7d_ratio_to_scan": round(min(baseline_s) / min(query_s), 3),
        "target_coverage_7d_s": 1.0,
        "fixes_read": len(fixes),
    }


def run(quick: bool = False) -> dict[str, Any]:
    vehicles, hours = (200, 4.0) if quick else (2000, 12.0)
    with throwaway_database() as url:
        figures = asyncio.run(_run(url, vehicles, hours))
    write_result("coverage_day", figures)
    return figures
