"""Rendering tiles: a layer's query parameters, its one statement run, the bytes tagged.

Pure of the API: the layer parameters are resolved and checked by the route
(``api.routers.tiles``), which passes them in with the caller's scope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from psycopg import AsyncConnection

from tiles.layers import Layer
from tiles.scope import ScopeSql
from tiles.sql import tile_params, tile_query
from tiles.tilemath import IDENTITY, Tile, gcj02_affine


@dataclass(frozen=True)
class TileQuery:
    """Query parameters a tile or TileJSON request may carry (each layer reads its own)."""

    crs: str = "wgs84"
    level: str | None = None
    layout: int | None = None
    first: date | None = None
    last: date | None = None
    kind: str | None = None
    device: int | None = None
    day: date | None = None

    def query_string_items(self) -> list[tuple[str, str]]:
        """The parameters that were given, as URL query items (for TileJSON tile URLs)."""
        names = {"first": "from", "last": "to"}
        items = []
        for key in ("crs", "level", "layout", "first", "last", "kind", "device", "day"):
            value = getattr(self, key)
            if value is not None and not (key == "crs" and value == "wgs84"):
                items.append((names.get(key, key), str(value)))
        return items


async def render(
    conn: AsyncConnection[Any],
    layer: Layer,
    tile: Tile,
    scope: ScopeSql,
    params: dict[str, Any],
    *,
    crs: str,
) -> bytes:
    """The tile's MVT bytes (empty below the layer's minzoom or where nothing is in scope)."""
    if tile.z < layer.minzoom:
        return b""
    affine = gcj02_affine(tile) if crs == "gcj02" else IDENTITY
    query = tile_query(layer, scope, gcj02=affine is not IDENTITY)
    values = {**tile_params(layer, tile, affine), **scope.params(), **params}
    row = await (await conn.execute(query, values, prepare=True)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def etag(body: bytes) -> str:
    """A strong validator of the tile's bytes."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """True when ``If-None-Match`` names ``tag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return tag in tags
