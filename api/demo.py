"""The Xilingol League demo: real county boundaries, synthetic townships and villages, and
(as later capabilities add them) grids, staff, alert points, vehicles and roads.

Each step records its version in ``app_meta``; loading again skips steps already at their
version, so ``make run`` can call ``gridpatrol demo load`` every time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg import AsyncConnection

from api.auth import SYSTEM
from api.boundaries import upsert_areas
from api.demo_grids import load_alert_points, load_households, load_layouts
from api.progress import NullProgress, Progress
from api.roads import load_demo_roads
from gis.boundaries import read_boundaries
from gis.synthetic import demo_hierarchy

DATA = Path(__file__).resolve().parents[1] / "data"
BOUNDARIES = DATA / "boundaries"
COUNTIES_FILE = BOUNDARIES / "xilingol_counties_tianditu_cgcs2000.geojson"


def read_nbs(kind: str) -> pd.DataFrame:
    """One of the NBS 2023 code tables (counties, townships, villages), codes as text."""
    return pd.read_csv(BOUNDARIES / f"xilingol_{kind}_nbs2023.csv", dtype=str)


async def load_areas(conn: AsyncConnection[Any], progress: Progress) -> str:
    task = progress.task("行政区划 admin areas", 3)
    counties, _report = read_boundaries(COUNTIES_FILE)
    task.advance()
    hierarchy = demo_hierarchy(
        counties, read_nbs("counties"), read_nbs("townships"), read_nbs("villages")
    )
    task.advance()
    result = await upsert_areas(conn, SYSTEM, hierarchy, action="demo.areas")
    task.advance()
    counts = hierarchy["level"].value_counts().to_dict()
    return (
        f"admin areas: {counts.get('county', 0)} counties, {counts.get('township', 0)} "
        f"townships, {counts.get('village', 0)} villages ({result.inserted} new)"
    )


@dataclass(frozen=True)
class Step:
    key: str
    version: str
    run: Callable[[AsyncConnection[Any], Progress], Awaitable[str]]


STEPS: list[Step] = [
    Step("demo.areas", "1", load_areas),
    Step("demo.households", "1", load_households),
    Step("demo.layouts", "1", load_layouts),
    Step("demo.alert_points", "1", load_alert_points),
    Step("demo.roads", "1", load_demo_roads),  # synthetic road graph for road ETAs
]


async def load_demo(
    conn: AsyncConnection[Any],
    *,
    force: bool = False,
    progress: Progress | None = None,
    steps: Collection[str] | None = None,
) -> list[str]:
    """Run the demo steps not yet loaded (all with ``force``); returns one line per step.

    ``steps`` (keys such as ``demo.households``) limits the run to those steps.
    """
    progress = progress or NullProgress()
    lines = []
    unknown = set(steps or ()) - {step.key for step in STEPS}
    if unknown:
        raise ValueError(f"unknown demo steps: {', '.join(sorted(unknown))}")
    for step in STEPS:
        if steps is not None and step.key not in steps:
            continue
        row = await (
            await conn.execute("SELECT value FROM app_meta WHERE key = %s", (step.key,))
        ).fetchone()
        if row is not None and row[0] == step.version and not force:
            lines.append(f"{step.key}: already loaded")
            continue
        async with conn.transaction():
            lines.append(await step.run(conn, progress))
            await conn.execute(
                "INSERT INTO app_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                (step.key, step.version),
            )
    return lines
