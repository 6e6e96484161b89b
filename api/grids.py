"""Grids of a layout: GeoJSON, one grid, worker assignment (一格一员), staffing report."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api import audit, geo
from api.auth import Principal
from api.errors import Conflict, NotFound, Unprocessable
from api.layouts import active_layout, area_prefix, get_layout
from api.scope import Scope
from gis.units import METRES_PER_DEGREE

GRID_COLUMNS = sql.SQL(
    "g.id, g.code, g.village_code, g.name, g.area_m2, g.households, g.n_cells, g.worker_id, "
    "g.leader_id, g.layout_id"
)


def _grid_scope(scope: Scope) -> sql.Composable:
    return scope.where("g.code", "g.code")


async def grids_geojson(
    conn: AsyncConnection[Any],
    scope: Scope,
    layout_id: int,
    *,
    village: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    simplify_m: float = 0.0,
) -> str:
    """The layout's grids in the scope as a GeoJSON FeatureCollection, with worker names and
    the number of alert points in each grid."""
    await get_layout(conn, scope, layout_id)
    inner = sql.SQL(
        """
        SELECT g.code, g.village_code, v.name_zh AS village_name, g.area_m2, g.households,
               g.n_cells, s.name AS worker, s.phone AS worker_phone,
               (SELECT count(*) FROM alert_point a WHERE ST_Covers(g.geom, a.geom))
                   AS alert_points,
               l.synthetic,
               ST_ForcePolygonCCW(CASE WHEN %(tol)s > 0
                    THEN ST_SimplifyPreserveTopology(g.geom, %(tol)s) ELSE g.geom END) AS geom
          FROM grid g
          JOIN grid_layout l ON l.id = g.layout_id
          LEFT JOIN admin_area v ON v.code = g.village_code
          LEFT JOIN staff s ON s.id = g.worker_id
         WHERE g.layout_id = %(layout)s AND {scope}
           AND (%(village)s::text IS NULL OR g.village_code LIKE %(village)s || '%%')
           AND {bbox}
        """
    ).format(scope=_grid_scope(scope), bbox=geo.bbox_filter("g.geom"))
    params = {
        **scope.params(),
        "layout": layout_id,
        "village": area_prefix(village) if village else None,
        "bbox": list(bbox) if bbox else None,
        "tol": simplify_m / METRES_PER_DEGREE,
    }
    return await geo.fetch_text(conn, geo.feature_collection(inner, order_by="code"), params)


async def get_grid(
    conn: AsyncConnection[Any], scope: Scope, code: str, *, layout_id: int | None = None
) -> dict[str, Any]:
    """One grid (of ``layout_id``, else of the active patrol layout) with worker and alert
    points; 404 when missing or outside the scope."""
    layout = layout_id or await active_layout(conn)
    query = sql.SQL(
        """
        SELECT {cols}, v.name_zh AS village_name, s.name AS worker, s.phone AS worker_phone,
               ST_AsGeoJSON(g.geom, 6)::json AS geometry,
               (SELECT coalesce(json_agg(json_build_object('id', a.id, 'kind', a.kind,
                       'name', a.name, 'phone', a.phone) ORDER BY a.id), '[]'::json)
                  FROM alert_point a WHERE ST_Covers(g.geom, a.geom)) AS alert_points,
               (SELECT max(coalesce(p.last_fix_at, p.started_at)) FROM patrol p
                 WHERE p.grid_codes @> ARRAY[g.code]::text[]) AS last_checkin_at
          FROM grid g
          LEFT JOIN admin_area v ON v.code = g.village_code
          LEFT JOIN staff s ON s.id = g.worker_id
         WHERE g.layout_id = %(layout)s AND g.code = %(code)s AND {scope}
        """
    ).format(cols=GRID_COLUMNS, scope=_grid_scope(scope))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "layout": layout, "code": code})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no grid {code}")
    return row


async def assign_worker(
    conn: AsyncConnection[Any],
    actor: Principal,
    layout_id: int,
    code: str,
    staff_id: int | None,
    *,
    role: str = "worker",
) -> dict[str, Any]:
    """Make a staff member the grid's worker (一格一员) or leader; None clears it."""
    column = {"worker": "worker_id", "leader": "leader_id"}.get(role)
    if column is None:
        raise Unprocessable("role must be worker or leader", field="role")
    async with conn.transaction():
        grid = await get_grid(conn, actor.scope, code, layout_id=layout_id)
        actor.scope.require_grid(code)
        if staff_id is not None:
            staff = await (
                await conn.execute(
                    "SELECT village_code, active FROM staff WHERE id = %s", (staff_id,)
                )
            ).fetchone()
            if staff is None or not actor.scope.covers_area(staff[0]):
                raise NotFound(f"no staff member {staff_id}")
            if not staff[1]:
                raise Conflict(f"staff member {staff_id} is inactive")
        await conn.execute(
            sql.SQL("UPDATE grid SET {} = %s WHERE id = %s").format(sql.Identifier(column)),
            (staff_id, grid["id"]),
        )
        await audit.record(
            conn,
            actor,
            f"grid.{role}",
            object_type="grid",
            object_id=code,
            detail={"layout": layout_id, "staff_id": staff_id, "previous": grid[column]},
        )
    return await get_grid(conn, actor.scope, code, layout_id=layout_id)


async def staffing_report(
    conn: AsyncConnection[Any], scope: Scope, layout_id: int
) -> dict[str, Any]:
    """Grids without a worker, and workers holding more than one grid (一格一员 breaches)."""
    await get_layout(conn, scope, layout_id)
    scope_sql = _grid_scope(scope)
    params = {**scope.params(), "layout": layout_id}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT g.code, g.village_code FROM grid g WHERE g.layout_id = %(layout)s "
                "AND g.worker_id IS NULL AND {} ORDER BY g.code"
            ).format(scope_sql),
            params,
        )
        unstaffed = await cur.fetchall()
        await cur.execute(
            sql.SQL(
                "SELECT s.id AS staff_id, s.name, s.phone, "
                "array_agg(g.code ORDER BY g.code) AS grids "
                "FROM grid g JOIN staff s ON s.id = g.worker_id "
                "WHERE g.layout_id = %(layout)s AND {} "
                "GROUP BY s.id HAVING count(*) > 1 ORDER BY s.id"
            ).format(scope_sql),
            params,
        )
        doubled = await cur.fetchall()
    return {
        "layout": layout_id,
        "grids_without_worker": unstaffed,
        "workers_with_several_grids": doubled,
    }
