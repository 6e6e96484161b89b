"""Make sure a layout's ``grid_visit`` rows exist for the days a report asks about.

Active layouts are kept current by the updater; any other layout (a draft, a retired one, or an
active one for days before it was activated) is built here, per day, from ``cell_visit`` alone
— never from positions — so last year's patrols can be reported under this year's grids and the
other way round.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from psycopg import AsyncConnection

from api.coverage.rows import read_cell_visits, write_grid_days
from api.coverage.update import CoverageUpdater
from gis.visits import grid_days

DAY0 = date(1970, 1, 1)


async def missing_days(
    conn: AsyncConnection[Any], layout_id: int, first: date, last: date
) -> list[date]:
    """Days in [first, last] with patrol data but no current grid_visit rows for the layout."""
    rows = await (
        await conn.execute(
            """
            SELECT DISTINCT d.day FROM device_day d
             WHERE d.day BETWEEN %(a)s AND %(b)s
               AND NOT EXISTS (SELECT 1 FROM grid_visit_day m
                                WHERE m.layout_id = %(l)s AND m.day = d.day)
             ORDER BY d.day
            """,
            {"a": first, "b": last, "l": layout_id},
        )
    ).fetchall()
    return [r[0] for r in rows]


async def ensure(
    conn: AsyncConnection[Any], updater: CoverageUpdater, layout_id: int, first: date, last: date
) -> int:
    """Build the layout's grid_visit rows for the days missing in [first, last]; returns how
    many days were built. Concurrent callers wait on a per-(layout, day) lock, then skip."""
    built = 0
    s = updater.settings
    for day in await missing_days(conn, layout_id, first, last):
        n = (day - DAY0).days
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (layout_id, n))
            done = await (
                await conn.execute(
                    "SELECT 1 FROM grid_visit_day WHERE layout_id = %s AND day = %s",
                    (layout_id, day),
                )
            ).fetchone()
            if done:
                continue
            visits = await read_cell_visits(
                conn, days=[n], res=s.resolution, visit_gap_s=s.visit_gap_s
            )
            index = await updater.layout_index(conn, layout_id)
            await conn.execute(
                "DELETE FROM grid_visit WHERE layout_id = %s AND day = %s", (layout_id, day)
            )
            await write_grid_days(
                conn, layout_id, await asyncio.to_thread(grid_days, visits, index)
            )
            await conn.execute(
                "INSERT INTO grid_visit_day (layout_id, day) VALUES (%s, %s) "
                "ON CONFLICT (layout_id, day) DO UPDATE SET built_at = now()",
                (layout_id, day),
            )
            built += 1
    return built
