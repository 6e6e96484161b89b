"""Where a call comes from: villages, grids and alert points matching what a dispatcher types
(a name, a code, a phone number), in the caller's scope, each with a point to place the
incident at."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.db import search_terms
from api.scope import Scope

PLACES = sql.SQL(
    """
    (SELECT 'village' AS kind, a.code, a.name_zh AS name, NULL::int AS id,
            round(ST_X(ST_PointOnSurface(a.geom))::numeric, 7)::float8 AS lon,
            round(ST_Y(ST_PointOnSurface(a.geom))::numeric, 7)::float8 AS lat
       FROM admin_area a
      WHERE a.level = 'village' AND (a.name_zh LIKE %(like)s OR a.code LIKE %(prefix)s)
        AND {village_scope}
      ORDER BY a.code LIMIT %(n)s)
    UNION ALL
    (SELECT 'grid', g.code, v.name_zh, NULL::int,
            round(ST_X(ST_PointOnSurface(g.geom))::numeric, 7)::float8,
            round(ST_Y(ST_PointOnSurface(g.geom))::numeric, 7)::float8
       FROM grid g JOIN grid_layout l ON l.id = g.layout_id
       LEFT JOIN admin_area v ON v.code = g.village_code
      WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.code LIKE %(prefix)s
        AND length(%(q)s) >= 12 AND {grid_scope}
      ORDER BY g.code LIMIT %(n)s)
    UNION ALL
    (SELECT 'alert_point', a.village_code, a.name, a.id,
            round(ST_X(a.geom)::numeric, 7)::float8, round(ST_Y(a.geom)::numeric, 7)::float8
       FROM alert_point a
      WHERE (a.name LIKE %(like)s OR a.phone = %(q)s OR a.id::text = %(q)s)
        AND {point_scope}
      ORDER BY a.id LIMIT %(n)s)
    """
)


async def search_places(
    conn: AsyncConnection[Any], scope: Scope, text: str, *, limit: int = 10
) -> list[dict[str, Any]]:
    """Villages (name or code), active patrol grids (code) and alert points (name, phone or
    id) matching ``text``, inside ``scope``; at most ``limit`` of each kind.

    Raises
    ------
    Unprocessable
        For an empty query.
    """
    terms = search_terms(text)
    query = PLACES.format(
        village_scope=scope.where("a.code", with_grid_villages=True),
        grid_scope=scope.where("g.code", "g.code"),
        point_scope=scope.where(sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query,
            {
                **scope.params(),
                **terms,
                "n": limit,
            },
        )
        return await cur.fetchall()
