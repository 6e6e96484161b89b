"""TileJSON 3.0 documents for the layers, with the data's extent in the caller's scope."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import numpy as np
from psycopg import AsyncConnection, sql

from gis.crs import wgs84_to_gcj02
from tiles.layers import Layer
from tiles.scope import ScopeSql
from tiles.service import TileQuery
from tiles.tilemath import MAX_ZOOM, MERCATOR_LAT

WORLD = (-180.0, -MERCATOR_LAT, 180.0, MERCATOR_LAT)

_EXTENT: dict[str, str] = {
    "admin_areas": "SELECT ST_Extent(a.geom) FROM admin_area a WHERE {scope} "
    "AND (%(level)s::text IS NULL OR a.level = %(level)s::text)",
    "grids": "SELECT ST_Extent(g.geom) FROM grid g WHERE g.layout_id = %(layout)s AND {scope}",
    "layout_grids": "SELECT ST_Extent(g.geom) FROM grid g "
    "WHERE g.layout_id = %(layout)s AND {scope}",
    "alert_points": "SELECT ST_Extent(a.geom) FROM alert_point a WHERE {scope} "
    "AND (%(kind)s::text IS NULL OR a.kind = %(kind)s::text)",
    "vehicles": "SELECT ST_Extent(s.geom) FROM device_state s JOIN device d "
    "ON d.id = s.device_id WHERE d.enabled AND {scope}",
    "tracks": "SELECT ST_Extent(p.geom) FROM position p WHERE p.device_id = %(device)s "
    "AND p.fix_time >= %(t0)s AND p.fix_time < %(t1)s",
}


def _scope_sql(layer: str, scope: ScopeSql) -> sql.Composable:
    if layer == "admin_areas":
        return scope.where("a.code", with_grid_villages=True)
    if layer in ("grids", "layout_grids"):
        return scope.where("g.code", "g.code")
    if layer == "alert_points":
        return scope.where(sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True)
    return scope.where(sql.SQL("coalesce(d.home_village, '')"))


async def extent(
    conn: AsyncConnection[Any], layer: Layer, scope: ScopeSql, params: dict[str, Any]
) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of the layer's features in the scope, or None when empty.

    The caller checks first that the layout (grids) or device (tracks) is in the scope.
    """
    query = sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ({}) AS x(e)"
    ).format(sql.SQL(_EXTENT[layer.name]).format(scope=_scope_sql(layer.name, scope)))
    row = await (await conn.execute(query, {**scope.params(), **params})).fetchone()
    if row is None or row[0] is None:
        return None
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def document(
    layer: Layer,
    base_url: str,
    query: TileQuery,
    bounds: tuple[float, float, float, float] | None,
) -> dict[str, Any]:
    """The TileJSON of ``layer``; tile URLs repeat the request's layer parameters (no token)."""
    west, south, east, north = bounds or WORLD
    if bounds is not None and query.crs == "gcj02":
        xs, ys = wgs84_to_gcj02(np.array([west, east]), np.array([south, north]))
        west, east, south, north = float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1])
    items = query.query_string_items()
    suffix = "?" + urlencode(items) if items else ""
    span = max(east - west, north - south, 1e-6)
    zoom = int(max(layer.minzoom, min(14, np.floor(np.log2(360.0 / span)))))
    return {
        "tilejson": "3.0.0",
        "name": layer.title,
        "description": layer.description,
        "version": "1.0.0",
        "attribution": "GridPatrol",
        "scheme": "xyz",
        "tiles": [f"{base_url}/tiles/{layer.name}/{{z}}/{{x}}/{{y}}.pbf{suffix}"],
        "minzoom": layer.minzoom,
        "maxzoom": MAX_ZOOM,
        "bounds": [round(v, 6) for v in (west, south, east, north)],
        "center": [round((west + east) / 2, 6), round((south + north) / 2, 6), zoom],
        "crs": "GCJ-02 (display only)" if query.crs == "gcj02" else "EPSG:4326 → EPSG:3857",
        "vector_layers": [
            {
                "id": layer.name,
                "description": layer.description,
                "geometry_type": layer.geometry,
                "minzoom": layer.minzoom,
                "maxzoom": MAX_ZOOM,
                "fields": layer.fields,
            }
        ],
        "feature_limit": layer.limit,
        "public": layer.public,
    }
