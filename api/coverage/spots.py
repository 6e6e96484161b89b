"""Blind spots (盲区), checkpoint visits and live patrol alerts.

Blind spots and checkpoint visits come from the per-layout bitmaps (``grid_visit.seen``): a
cell is a blind spot when no bitmap of the last N days has its bit; an alert point is visited on
a day when a vehicle saw a cell whose centre is within the radius. Live alerts read the latest
state: devices silent longer than T, and vehicles whose every fix of the last T lay outside their
assigned grids.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import h3
import numpy as np
import shapely
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.coverage import materialize
from api.coverage.metrics import Window
from api.coverage.update import CoverageUpdater
from api.coverage.vehicles import vehicle_layout
from api.errors import NotFound
from api.layouts import area_prefix, get_layout
from api.scope import Scope
from gis.cells import cells_near_points
from gis.gridmethods import cell_polygons

MAX_GRIDS = 2000


async def blind_spots(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    *,
    grid: str | None,
    village: str | None,
    days: int,
    end: date,
) -> dict[str, Any]:
    """Cells of a grid or village (or area) not seen in the ``days`` up to ``end``, as GeoJSON."""
    await get_layout(conn, scope, layout_id)
    first = end - timedelta(days=days - 1)
    await materialize.ensure(conn, updater, layout_id, first, end)
    where = (
        sql.SQL("g.code = %(grid)s") if grid else sql.SQL("g.village_code LIKE %(village)s || '%%'")
    )
    query = sql.SQL(
        """
        SELECT g.id, g.code, (SELECT bit_or(gv.seen)::text FROM grid_visit gv
                               WHERE gv.layout_id = g.layout_id AND gv.grid_id = g.id
                                 AND gv.day BETWEEN %(first)s AND %(end)s) AS seen
          FROM grid g WHERE g.layout_id = %(layout)s AND {where} AND {scope}
         ORDER BY g.code LIMIT %(limit)s
        """
    ).format(where=where, scope=scope.where("g.code", "g.code"))
    params = {
        **scope.params(),
        "layout": layout_id,
        "grid": grid,
        "village": area_prefix(village) if village else "",
        "first": first,
        "end": end,
        "limit": MAX_GRIDS,
    }
    grids = await (await conn.execute(query, params)).fetchall()
    if not grids:
        raise NotFound(f"no grid {grid or village} in layout {layout_id}")
    index = await updater.layout_index(conn, layout_id)
    ids = np.array([g[0] for g in grids], dtype=np.int64)
    by_id = np.argsort(ids)
    cells, of_grid, was_seen = index.seen_cells(ids[by_id], [grids[i][2] for i in by_id])
    # grids in the order of their codes (the query's), cells in h3 order within each
    unseen = cells[~was_seen]
    row = by_id[np.searchsorted(ids[by_id], of_grid[~was_seen])]
    order = np.lexsort((unseen, row))
    unseen, unseen_rank = unseen[order], row[order]
    codes = [g[1] for g in grids]
    features = [
        {
            "type": "Feature",
            "properties": {"h3": h3.int_to_str(int(cell)), "grid": codes[r]},
            "geometry": shapely.geometry.mapping(poly),
        }
        for cell, r, poly in zip(
            unseen, unseen_rank, cell_polygons(unseen.astype(np.uint64)), strict=True
        )
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "layout": layout_id,
            "from": first.isoformat(),
            "to": end.isoformat(),
            "days": days,
            "grids": len(grids),
            "blind_cells": len(features),
        },
    }


async def checkpoints(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    window: Window,
    *,
    area: str | None,
    radius_m: float,
) -> dict[str, Any]:
    """Per alert point: on which days a vehicle came within ``radius_m`` of it."""
    layout_id = await vehicle_layout(conn)
    if layout_id is None:
        raise NotFound("no active layout: coverage needs one")
    await materialize.ensure(conn, updater, layout_id, window.first, window.last)
    query = sql.SQL(
        "SELECT a.id, a.kind, a.name, a.village_code, ST_X(a.geom), ST_Y(a.geom) "
        "FROM alert_point a WHERE {scope} AND a.village_code LIKE %(p)s ORDER BY a.id"
    ).format(scope=scope.where(sql.SQL("coalesce(a.village_code, '')")))
    points = await (
        await conn.execute(
            query, {**scope.params(), "p": (area_prefix(area) if area else "") + "%"}
        )
    ).fetchall()
    index = await updater.layout_index(conn, layout_id)
    point, cell = cells_near_points(
        np.array([p[5] for p in points], dtype=np.float64),
        np.array([p[4] for p in points], dtype=np.float64),
        res=updater.settings.resolution,
        radius_m=radius_m,
    )
    found, gid, pos = index.locate(cell)
    pid = np.array([p[0] for p in points], dtype=np.int64)[point[found]]
    rows = list(zip(pid.tolist(), gid[found].tolist(), pos[found].tolist(), strict=True))
    visits: dict[int, list[str]] = {}
    if rows:
        hits = await (
            await conn.execute(
                """
                SELECT t.a, gv.day, count(DISTINCT gv.device_id)
                  FROM unnest(%(a)s::int[], %(g)s::int[], %(p)s::int[]) AS t(a, g, p)
                  JOIN grid_visit gv ON gv.layout_id = %(layout)s AND gv.grid_id = t.g
                       AND gv.day BETWEEN %(d0)s AND %(d1)s
                 WHERE get_bit(gv.seen, t.p) = 1
                 GROUP BY t.a, gv.day ORDER BY t.a, gv.day
                """,
                {
                    "a": [r[0] for r in rows],
                    "g": [r[1] for r in rows],
                    "p": [r[2] for r in rows],
                    "layout": layout_id,
                    "d0": window.first,
                    "d1": window.last,
                },
            )
        ).fetchall()
        for pid, day, _vehicles in hits:
            visits.setdefault(pid, []).append(day.isoformat())
    return {
        "from": window.first.isoformat(),
        "to": window.last.isoformat(),
        "radius_m": radius_m,
        "days": window.days,
        "points": [
            {
                "id": pid,
                "kind": kind,
                "name": name,
                "village_code": village,
                "days_visited": len(visits.get(pid, [])),
                "visited_on": visits.get(pid, []),
            }
            for pid, kind, name, village, _x, _y in points
        ],
    }


async def live_alerts(
    conn: AsyncConnection[Any], scope: Scope, *, offline_s: float, outside_s: float
) -> dict[str, Any]:
    """Devices silent longer than ``offline_s``; vehicles outside their grids for ``outside_s``."""
    device_scope = scope.where(sql.SQL("coalesce(d.home_village, '')"))
    layout_id = await vehicle_layout(conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                """
                SELECT d.id AS device_id, d.identifier, d.plate, d.home_village, s.fix_time,
                       round(extract(epoch FROM now() - s.fix_time))::bigint AS silent_s
                  FROM device d LEFT JOIN device_state s ON s.device_id = d.id
                 WHERE d.enabled AND {scope}
                   AND (s.fix_time IS NULL OR s.fix_time < now() - make_interval(secs => %(t)s))
                 ORDER BY s.fix_time NULLS FIRST
                """
            ).format(scope=device_scope),
            {**scope.params(), "t": offline_s},
        )
        offline = await cur.fetchall()
        await cur.execute(
            sql.SQL(
                """
                WITH own AS (
                    SELECT d.id, d.identifier, d.plate, ST_Union(g.geom) AS area
                      FROM device d JOIN grid g ON g.layout_id = %(layout)s
                           AND g.code = ANY(d.assigned_grids)
                     WHERE d.enabled AND {scope} GROUP BY d.id
                )
                SELECT own.id AS device_id, own.identifier, own.plate, count(*) AS fixes,
                       min(p.fix_time) AS since
                  FROM own JOIN position p ON p.device_id = own.id
                       AND p.fix_time > now() - make_interval(secs => %(t)s)
                 GROUP BY own.id, own.identifier, own.plate
                HAVING bool_and(NOT ST_Covers(own.area, p.geom)) AND count(*) >= 2
                 ORDER BY own.id
                """
            ).format(scope=device_scope),
            {**scope.params(), "t": outside_s, "layout": layout_id},
        )
        outside = await cur.fetchall()
    return {
        "offline": {"threshold_s": offline_s, "devices": offline},
        "outside_own_grids": {"threshold_s": outside_s, "layout": layout_id, "vehicles": outside},
    }
