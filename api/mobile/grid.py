"""The worker's view of one of their grids: boundary, 7-day coverage by vehicle and on foot,
blind spots, alert points, households, the village's vehicles and when they last passed, and
the last foot-patrol check-in.

Coverage is the share of the grid's fine cells seen in the last ``DAYS`` China days, from the
layout's ``grid_visit`` bitmaps (``cell_visit ⨝ grid_cell``), overall and split by the kind of
device that saw them: ``vehicle`` (patrol vehicles) and ``handheld`` (workers on foot).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.coverage import materialize, spots
from api.coverage.update import CoverageUpdater
from api.errors import NotFound
from api.scope import Scope
from gis.units import china_today

DAYS = 7

GRID = """
SELECT g.id, g.layout_id, g.code, g.name, g.village_code, v.name_zh AS village_name,
       g.households, round(g.area_m2::numeric)::float8 AS area_m2, g.n_cells,
       ST_AsGeoJSON(g.geom, 6)::json AS geometry
  FROM grid g JOIN grid_layout l ON l.id = g.layout_id
  LEFT JOIN admin_area v ON v.code = g.village_code
 WHERE g.code = %(code)s AND l.status = 'active' AND l.purpose = 'patrol'
 ORDER BY length(nbs_prefix(l.area_code)) DESC, l.id LIMIT 1
"""
COVERAGE = """
SELECT bit_count(bit_or(gv.seen)) AS seen,
       bit_count(bit_or(gv.seen) FILTER (WHERE d.kind = 'vehicle')) AS vehicle,
       bit_count(bit_or(gv.seen) FILTER (WHERE d.kind = 'handheld')) AS foot,
       max(gv.last_seen) AS last_patrol_at
  FROM grid_visit gv JOIN device d ON d.id = gv.device_id
 WHERE gv.layout_id = %(layout)s AND gv.grid_id = %(grid)s
   AND gv.day BETWEEN %(first)s AND %(last)s
"""
ALERT_POINTS = """
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
         json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(a.geom, 6)::json,
                           'properties', json_build_object('id', a.id, 'kind', a.kind,
                                                           'name', a.name, 'phone', a.phone))
         ORDER BY a.id), '[]'::json))
  FROM alert_point a, grid g WHERE g.id = %(grid)s AND ST_Covers(g.geom, a.geom)
"""
# the households of the grid: how many (counted where they stand, not the grid's stored figure,
# which a redrawn grid may not have), and as points (a grid holds tens; capped for a town's)
HOUSEHOLD_COUNT = """
SELECT coalesce(sum(h.count), 0)::int FROM household h, grid g
 WHERE g.id = %(grid)s AND ST_Covers(g.geom, h.geom)
"""
HOUSEHOLD_POINTS = """
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(
         json_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(h.geom, 6)::json,
                           'properties', json_build_object('count', h.count))
         ORDER BY h.id), '[]'::json))
  FROM (SELECT h.id, h.geom, h.count FROM household h, grid g
         WHERE g.id = %(grid)s AND ST_Covers(g.geom, h.geom)
         ORDER BY h.id LIMIT 2000) h
"""
VEHICLES = """
SELECT d.id AS device_id, d.name, d.plate,
       (SELECT max(gv.last_seen) FROM grid_visit gv
         WHERE gv.layout_id = %(layout)s AND gv.grid_id = %(grid)s AND gv.device_id = d.id
           AND gv.day BETWEEN %(first)s AND %(last)s) AS last_passed_at
  FROM device d
 WHERE d.kind = 'vehicle' AND d.enabled
   AND (d.home_village = %(village)s OR %(code)s = ANY(d.assigned_grids))
 ORDER BY d.id LIMIT 50
"""
LAST_CHECKIN = """
SELECT p.id, p.started_at, p.ended_at, p.fixes, s.name AS staff_name
  FROM patrol p JOIN staff s ON s.id = p.staff_id
 WHERE %(code)s = ANY(p.grid_codes) OR p.grid_code = %(code)s
 ORDER BY coalesce(p.last_fix_at, p.started_at) DESC, p.id DESC LIMIT 1
"""


def _share(part: int | None, cells: int) -> float | None:
    return None if not cells else round((part or 0) / cells, 4)


async def grid_view(
    conn: AsyncConnection[Any], updater: CoverageUpdater, scope: Scope, code: str
) -> dict[str, Any]:
    """The worker's grid (see the module); 404 for a grid not in ``scope.grids``."""
    if code not in scope.grids:
        raise NotFound(f"no grid {code}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(GRID, {"code": code})
        grid = await cur.fetchone()
        if grid is None:
            raise NotFound(f"no grid {code}")
        last = china_today()
        first = last - timedelta(days=DAYS - 1)
        await materialize.ensure(conn, updater, grid["layout_id"], first, last)
        window = {"layout": grid["layout_id"], "grid": grid["id"], "first": first, "last": last}
        await cur.execute(COVERAGE, window)
        seen = await cur.fetchone() or {}
        await cur.execute(VEHICLES, {**window, "village": grid["village_code"], "code": code})
        vehicles = await cur.fetchall()
        await cur.execute(LAST_CHECKIN, {"code": code})
        checkin = await cur.fetchone()
        alert_points = (await (await conn.execute(ALERT_POINTS, window)).fetchone() or [None])[0]
        homes = (await (await conn.execute(HOUSEHOLD_POINTS, window)).fetchone() or [None])[0]
        counted = (await (await conn.execute(HOUSEHOLD_COUNT, window)).fetchone() or [0])[0]
        grid["households"] = counted
    blind = await spots.blind_spots(
        conn,
        updater,
        Scope(grids=(code,)),
        grid["layout_id"],
        grid=code,
        village=None,
        days=DAYS,
        end=last,
    )
    cells = int(grid["n_cells"] or 0)
    props = {k: grid[k] for k in ("code", "name", "village_code", "village_name", "households")}
    return {
        "grid": {
            "type": "Feature",
            "geometry": grid["geometry"],
            "properties": {**props, "area_m2": grid["area_m2"], "cells": cells},
        },
        "coverage": {
            "days": DAYS,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "cells": cells,
            "share": _share(seen.get("seen"), cells),
            "vehicle_share": _share(seen.get("vehicle"), cells),
            "foot_share": _share(seen.get("foot"), cells),
            "last_patrol_at": seen.get("last_patrol_at"),
        },
        "blind_spots": blind,
        "alert_points": alert_points,
        "households": grid["households"],
        "household_points": homes,
        "vehicles": vehicles,
        "last_checkin": checkin,
    }
