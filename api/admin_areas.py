"""Admin areas (盟/旗县/苏木乡镇/嘎查村): scoped queries returning GeoJSON built in PostGIS."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
from psycopg import AsyncConnection, sql

from api import geo
from api.errors import NotFound, Unprocessable
from api.geo import fetch_frame
from api.scope import Scope
from gis.codes import CodeError, parse_nbs
from gis.units import METRES_PER_DEGREE

LEVELS = ("league", "county", "township", "village")

_COLUMNS = sql.SQL(
    "code, level, parent_code, name_zh, name_en, households, synthetic, area_km2, source"
)


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``minLon,minLat,maxLon,maxLat`` in WGS-84 degrees, validated."""
    if text is None or text == "":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise Unprocessable(
            "bbox must be four numbers: minLon,minLat,maxLon,maxLat", field="bbox"
        ) from exc
    if len(values) != 4:
        raise Unprocessable("bbox must be four numbers: minLon,minLat,maxLon,maxLat", field="bbox")
    x0, y0, x1, y1 = values
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise Unprocessable(
            "bbox must satisfy -180 ≤ minLon ≤ maxLon ≤ 180 and -90 ≤ minLat ≤ maxLat ≤ 90",
            field="bbox",
        )
    return x0, y0, x1, y1


def _full_code(code: str) -> str:
    try:
        return parse_nbs(code).code
    except CodeError as exc:
        raise NotFound(f"no admin area {code!r}: {exc}") from exc


async def feature_collection(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    level: str | None = None,
    parent: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    simplify_m: float = 0.0,
) -> str:
    """Admin areas in the caller's scope as an RFC 7946 FeatureCollection (JSON text)."""
    if level is not None and level not in LEVELS:
        raise Unprocessable(f"level must be one of {', '.join(LEVELS)}", field="level")
    parent_code = _full_code(parent) if parent else None
    inner = sql.SQL(
        """
        SELECT {cols},
               ST_ForcePolygonCCW(CASE WHEN %(tol)s > 0
                    THEN ST_SimplifyPreserveTopology(geom, %(tol)s) ELSE geom END) AS geom
          FROM admin_area
         WHERE {scope}
           AND (%(level)s::text IS NULL OR level = %(level)s)
           AND (%(parent)s::text IS NULL OR parent_code = %(parent)s)
           AND {bbox}
        """
    ).format(
        cols=_COLUMNS,
        scope=scope.where("code", with_grid_villages=True),
        bbox=geo.bbox_filter("geom"),
    )
    query = geo.feature_collection(inner, order_by="code")
    params = {
        **scope.params(),
        "tol": simplify_m / METRES_PER_DEGREE,
        "level": level,
        "parent": parent_code,
        "bbox": list(bbox) if bbox else None,
    }
    return await geo.fetch_text(conn, query, params)


async def feature(conn: AsyncConnection[Any], scope: Scope, code: str) -> str:
    """One admin area as a GeoJSON Feature; 404 when missing or outside the scope."""
    full = _full_code(code)
    query = sql.SQL(
        """
        SELECT ST_AsGeoJSON(t.*, 'geom', 6)
          FROM (SELECT {cols}, ST_ForcePolygonCCW(geom) AS geom FROM admin_area
                 WHERE code = %(code)s AND {scope}) t
        """
    ).format(cols=_COLUMNS, scope=scope.where("code", with_grid_villages=True))
    row = await (await conn.execute(query, {**scope.params(), "code": full})).fetchone()
    if row is None:
        raise NotFound(f"no admin area {code!r}")
    return str(row[0])


async def frame(
    conn: AsyncConnection[Any], scope: Scope, *, level: str, simplify_m: float = 0.0
) -> gpd.GeoDataFrame:
    """Admin areas of one level in the scope as a GeoDataFrame (EPSG:4326)."""
    query = sql.SQL(
        """
        SELECT code, name_zh, level, households, synthetic,
               ST_AsBinary(CASE WHEN %(tol)s > 0
                    THEN ST_SimplifyPreserveTopology(geom, %(tol)s) ELSE geom END) AS wkb
          FROM admin_area WHERE level = %(level)s AND {scope} ORDER BY code
        """
    ).format(scope=scope.where("code", with_grid_villages=True))
    params = {**scope.params(), "level": level, "tol": simplify_m / METRES_PER_DEGREE}
    return await fetch_frame(conn, query, params)
