"""Moving geometries between PostGIS and GeoDataFrames (WKB both ways, EPSG:4326)."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from psycopg import AsyncConnection, sql


async def fetch_frame(
    conn: AsyncConnection[Any],
    query: str | sql.SQL | sql.Composed,
    params: dict[str, Any] | None = None,
    *,
    geometry: str = "wkb",
) -> gpd.GeoDataFrame:
    """Run ``query`` and return its rows as a GeoDataFrame; the column named ``geometry``
    must hold WKB (``ST_AsBinary(geom) AS wkb``)."""
    cur = await conn.execute(query, params or {})
    names = [d.name for d in cur.description or []]
    rows = await cur.fetchall()
    at = names.index(geometry)
    data = {n: [r[i] for r in rows] for i, n in enumerate(names) if i != at}
    geoms = shapely.from_wkb(np.array([bytes(r[at]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs="EPSG:4326")


def wkb_list(frame: gpd.GeoDataFrame) -> list[bytes]:
    """WKB of every geometry, for ``unnest(%s::bytea[])`` inserts."""
    return [bytes(b) for b in shapely.to_wkb(frame.geometry.to_numpy())]


def feature_collection(inner: sql.Composable, *, order_by: str) -> sql.Composed:
    """SQL returning one row: the rows of ``inner`` (a SELECT with a ``geom`` column) as an
    RFC 7946 FeatureCollection text, built in PostGIS (6 decimals ≈ 0.1 m)."""
    return sql.SQL(
        "SELECT json_build_object('type', 'FeatureCollection', 'features', "
        "coalesce(json_agg(ST_AsGeoJSON(t.*, 'geom', 6)::json ORDER BY t.{order}), "
        "'[]'::json))::text FROM ({inner}) t"
    ).format(order=sql.Identifier(order_by), inner=inner)


async def fetch_text(
    conn: AsyncConnection[Any], query: sql.SQL | sql.Composed, params: dict[str, Any]
) -> str:
    """The single text value a query returns (e.g. a FeatureCollection)."""
    row = await (await conn.execute(query, params)).fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return str(row[0])


def bbox_filter(column: str) -> sql.Composed:
    """``column`` intersects the ``%(bbox)s`` parameter (minLon, minLat, maxLon, maxLat), or
    no filter when the parameter is NULL."""
    return sql.SQL(
        "(%(bbox)s::float8[] IS NULL OR ST_Intersects({col}, ST_MakeEnvelope("
        "(%(bbox)s::float8[])[1], (%(bbox)s::float8[])[2], "
        "(%(bbox)s::float8[])[3], (%(bbox)s::float8[])[4], 4326)))"
    ).format(col=sql.SQL(column))
