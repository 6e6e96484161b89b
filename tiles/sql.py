"""The single SQL statement of a tile: envelope CTE → one layer's rows → ``ST_AsMVT``.

The tile envelope is built once in Web Mercator for ``ST_AsMVTGeom`` and transformed once to
WGS-84 (with the MVT buffer as margin) for the ``&&`` filter, so every layer's GiST index is used
and no stored geometry is transformed just to be tested. For GCJ-02 display (AMap) the WGS-84
search envelope moves back by the tile's GCJ-02 offset and the selected geometries go through
the tile's fitted affine map before projection; nothing is stored converted.
"""

from __future__ import annotations

from psycopg import sql

from tiles.layers import LAYERS, Layer
from tiles.scope import ScopeSql
from tiles.tilemath import BUFFER, EXTENT, IDENTITY, Affine, Tile

TILE_SQL = """
WITH b AS (
    SELECT ST_TileEnvelope(%(z)s::int, %(x)s::int, %(y)s::int) AS e3857,
           ST_Translate(ST_Transform(ST_TileEnvelope(%(z)s::int, %(x)s::int, %(y)s::int,
                                                     margin => %(margin)s::float8), 4326),
                        %(sx)s::float8, %(sy)s::float8) AS e4326
),
t AS ({select})
SELECT ST_AsMVT(t.*, %(layer)s::text, 4096, 'geom') FROM t
"""


def _plain(column: str) -> sql.Composable:
    return sql.SQL(column)


def _gcj02(column: str) -> sql.Composable:
    return sql.SQL(
        "ST_Affine({}, %(aa)s::float8, %(ab)s::float8, %(ad)s::float8, %(ae)s::float8, "
        "%(axoff)s::float8, %(ayoff)s::float8)"
    ).format(sql.SQL(column))


def tile_query(layer: Layer, scope: ScopeSql, *, gcj02: bool) -> sql.Composed:
    """The tile statement of ``layer`` for ``scope`` (parameters: ``tile_params`` + the layer's)."""
    # the statement depends on the scope only through ``unrestricted`` (the codes are bound
    # parameters), so a handful of texts serve every user and stay prepared per connection
    key = (layer.name, scope.unrestricted, gcj02)
    query = _STATEMENTS.get(key)
    if query is None:
        select = LAYERS[layer.name].select(scope, _gcj02 if gcj02 else _plain)
        query = _STATEMENTS[key] = sql.SQL(TILE_SQL).format(select=select)
    return query


_STATEMENTS: dict[tuple[str, bool, bool], sql.Composed] = {}


def tile_params(layer: Layer, tile: Tile, affine: Affine = IDENTITY) -> dict[str, object]:
    """Parameters shared by every layer's statement: tile address, margin, GCJ-02 affine."""
    lon, lat = tile.lonlat(0.5, 0.5)
    sx, sy = affine.shift_at(lon, lat) if affine is not IDENTITY else (0.0, 0.0)
    return {
        "z": tile.z,
        "x": tile.x,
        "y": tile.y,
        "margin": BUFFER / EXTENT,
        "sx": -sx,
        "sy": -sy,
        "layer": layer.name,
        "limit": layer.limit,
        "aa": affine.a,
        "ab": affine.b,
        "ad": affine.d,
        "ae": affine.e,
        "axoff": affine.xoff,
        "ayoff": affine.yoff,
    }
