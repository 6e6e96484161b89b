"""Demo grids, people, alert points and vehicles for the Xilingol villages (all synthetic).

草原110: each village (嘎查) is cut into 8 patrol squares with one grid worker each (一格一员)
and a grid leader per village; 6 alarm phones per village sit among the herder households
(≈ 1 per 20 households); 2 patrol vehicles per village, each with its own patrol area (a
second layout, purpose ``vehicle``, 2 areas per village).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import AsyncConnection

from api.auth import SYSTEM
from api.geo import fetch_frame
from api.layouts import LayoutSpec, make_layout, own_borrowed_cells
from api.progress import Progress
from gis.households import synthetic_households
from gis.names import synthetic_person

LEAGUE = "152500000000"
PATROL_LAYOUT = "2026 巡逻方格 patrol squares (8/村, synthetic)"
VEHICLE_LAYOUT = "2026 车辆巡逻区 vehicle patrol areas (2/村, synthetic)"
ALARM_PHONES_PER_VILLAGE = 6
VEHICLES_PER_VILLAGE = 2


async def _copy_csv(conn: AsyncConnection[Any], table: str, columns: str, frame: pa.Table) -> None:
    out = pa.BufferOutputStream()
    pacsv.write_csv(frame, out, write_options=pacsv.WriteOptions(include_header=False))
    async with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy,
    ):
        await copy.write(out.getvalue().to_pybytes())


async def load_households(conn: AsyncConnection[Any], progress: Progress) -> str:
    """One synthetic point per household, clustered as herder camps and settlements."""
    villages = await fetch_frame(
        conn,
        "SELECT code, households, ST_AsBinary(geom) AS wkb FROM admin_area "
        "WHERE level = 'village' AND code LIKE '1525%%' ORDER BY code",
    )
    task = progress.task("住户 households", 1)
    points = synthetic_households(villages)
    await conn.execute("DELETE FROM household WHERE synthetic AND village_code LIKE '1525%'")
    table = pa.table(
        {
            "village_code": points["village_code"].astype(str).to_numpy(),
            "synthetic": np.ones(len(points), dtype=bool),
            "geom": [
                f"SRID=4326;POINT({x:.7f} {y:.7f})"
                for x, y in zip(points.geometry.x, points.geometry.y, strict=True)
            ],
        }
    )
    await _copy_csv(conn, "household", "village_code, synthetic, geom", table)
    task.advance()
    return f"households: {len(points)} synthetic points"


async def load_layouts(conn: AsyncConnection[Any], progress: Progress) -> str:
    """The active patrol-square layout (8/village) and vehicle-area layout (2/village)."""
    stale = await (
        await conn.execute(
            "SELECT id FROM grid_layout WHERE synthetic AND name IN (%s, %s)",
            (PATROL_LAYOUT, VEHICLE_LAYOUT),
        )
    ).fetchall()
    await own_borrowed_cells(conn, [int(r[0]) for r in stale])  # drafts cloned from them
    await conn.execute("DELETE FROM grid_layout WHERE id = ANY(%s)", ([int(r[0]) for r in stale],))
    patrol = await make_layout(
        conn,
        SYSTEM,
        LayoutSpec(
            name=PATROL_LAYOUT,
            area=LEAGUE,
            method="balanced",
            per_village=8,
            purpose="patrol",
            activate=True,
            synthetic=True,
        ),
        progress=progress,
    )
    vehicle = await make_layout(
        conn,
        SYSTEM,
        LayoutSpec(
            name=VEHICLE_LAYOUT,
            area=LEAGUE,
            method="balanced",
            per_village=VEHICLES_PER_VILLAGE,
            purpose="vehicle",
            activate=True,
            synthetic=True,
        ),
        progress=progress,
    )
    await _staff(conn, patrol.id)
    await _vehicles(conn, vehicle.id)
    return (
        f"layouts: {patrol.grids} patrol squares, {vehicle.grids} vehicle areas, "
        f"{patrol.cells} fine cells each"
    )


async def _staff(conn: AsyncConnection[Any], layout_id: int) -> None:
    """A worker per grid and a leader per village (synthetic names and 199 numbers)."""
    grid_rows = await (
        await conn.execute(
            "SELECT id, code, village_code FROM grid WHERE layout_id = %s ORDER BY code",
            (layout_id,),
        )
    ).fetchall()
    villages = sorted({r[2] for r in grid_rows})
    people = [
        (*synthetic_person(code, n), "worker", village)
        for n, (_, code, village) in enumerate(grid_rows)
    ]
    people += [
        (*synthetic_person(v + "-leader", len(grid_rows) + n), "leader", v)
        for n, v in enumerate(villages)
    ]
    await conn.execute("DELETE FROM staff WHERE synthetic AND village_code LIKE '1525%'")
    await conn.execute(
        """
        INSERT INTO staff (name, phone, role, village_code, synthetic)
        SELECT n, p, r, v, true FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
               AS u(n, p, r, v)
        ON CONFLICT (phone) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
               village_code = EXCLUDED.village_code, synthetic = true
        """,
        tuple(list(col) for col in zip(*people, strict=True)),
    )
    phones = [p for _, p, role, _ in people if role == "worker"]
    await conn.execute(
        """
        UPDATE grid g SET worker_id = w.id,
               leader_id = (SELECT l.id FROM staff l WHERE l.role = 'leader' AND l.synthetic
                             AND l.village_code = g.village_code LIMIT 1)
          FROM unnest(%s::int[], %s::text[]) AS u(grid_id, phone)
          JOIN staff w ON w.phone = u.phone
         WHERE g.id = u.grid_id
        """,
        ([r[0] for r in grid_rows], phones),
    )


async def load_alert_points(conn: AsyncConnection[Any], progress: Progress) -> str:
    """Six alarm phones per village, at households spread over the village (farthest-point
    sampling, seeded by the code), each in the care of the grid's worker."""
    homes = await fetch_frame(
        conn,
        "SELECT village_code, ST_AsBinary(geom) AS wkb FROM household "
        "WHERE synthetic AND village_code LIKE '1525%%' ORDER BY village_code, id",
    )
    task = progress.task("报警点 alert points", homes["village_code"].nunique())
    xs, ys, codes, names = [], [], [], []
    for village, group in homes.groupby("village_code", sort=True):
        xy = np.column_stack([group.geometry.x, group.geometry.y])
        for k, i in enumerate(
            _spread(xy, ALARM_PHONES_PER_VILLAGE, seed=int(str(village)[-6:])), 1
        ):
            xs.append(xy[i, 0])
            ys.append(xy[i, 1])
            codes.append(village)
            names.append(f"报警电话 {k}号 alarm phone #{k}")
        task.advance()
    await conn.execute("DELETE FROM alert_point WHERE synthetic AND village_code LIKE '1525%'")
    await conn.execute(
        """
        INSERT INTO alert_point (kind, name, phone, village_code, synthetic, geom)
        SELECT 'alarm_phone', n, '0479' || lpad(k::text, 7, '0'), v, true,
               ST_SetSRID(ST_MakePoint(x, y), 4326)
          FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) WITH ORDINALITY
               AS u(n, v, x, y, k)
        """,
        (names, codes, xs, ys),
    )
    return f"alert points: {len(xs)} alarm phones"


def _spread(xy: np.ndarray, k: int, *, seed: int) -> list[int]:
    """Indices of ``k`` points spread out over ``xy`` (farthest-point sampling)."""
    if len(xy) <= k:
        return list(range(len(xy)))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(xy)))]
    dist = np.hypot(*(xy - xy[chosen[0]]).T)
    while len(chosen) < k:
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = np.minimum(dist, np.hypot(*(xy - xy[nxt]).T))
    return chosen


async def _vehicles(conn: AsyncConnection[Any], layout_id: int) -> None:
    """Two patrol vehicles per village (sim-<village>-<n>), each assigned its vehicle area."""
    rows = await (
        await conn.execute(
            "SELECT village_code, code FROM grid WHERE layout_id = %s ORDER BY code", (layout_id,)
        )
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["village", "grid"])
    frame["n"] = frame.groupby("village").cumcount() + 1
    frame["identifier"] = "sim-" + frame["village"] + "-" + frame["n"].astype(str)
    await conn.execute(
        """
        INSERT INTO device (identifier, kind, name, plate, home_village, assigned_grids)
        SELECT i, 'vehicle', '巡逻车 ' || i, '蒙H·S' || lpad(k::text, 4, '0'), v, ARRAY[g]
          FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS u(i, v, g, k)
        ON CONFLICT (identifier) DO UPDATE SET home_village = EXCLUDED.home_village,
               assigned_grids = EXCLUDED.assigned_grids, updated_at = now()
        """,
        (frame["identifier"].tolist(), frame["village"].tolist(), frame["grid"].tolist()),
    )
