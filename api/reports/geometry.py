"""Shapes for the colour map: the units of a level with their names and synthetic flags, and
the blind spots (盲区) of a window as one (multi)polygon.

Blind spots are the fine cells of the layout's grids in the scope that no vehicle saw in the
last ``blind_spot_days`` of the window. League-wide that is millions of cells, so they are
compacted (H3 parents whose seven children are all blind), unioned and simplified: one shape
of a few ten thousand vertices at most, cheap to draw in a browser or a PDF.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from psycopg import AsyncConnection, sql
from shapely.geometry.base import BaseGeometry

from api.coverage.update import CoverageUpdater
from api.scope import Scope
from gis.blindspots import outline
from gis.visits import LayoutIndex

MAP_TOLERANCE_DEG = 0.0004  # ≈ 40 m: invisible at report scale, a tenth of the bytes


async def unit_shapes(
    conn: AsyncConnection[Any],
    layout_id: int,
    level: str,
    codes: list[str],
    *,
    layout_synthetic: bool,
) -> gpd.GeoDataFrame:
    """Geometry, English name and synthetic flag of each unit code of ``level``.

    Parameters
    ----------
    level
        ``grid`` (shapes from the layout) or an admin level (shapes from ``admin_area``).
    codes
        Unit codes as the metrics return them (grid codes, or NBS prefixes: 6, 9, 12 digits).
    layout_synthetic
        Grids of a synthetic layout are synthetic whatever their village.

    Returns
    -------
    GeoDataFrame
        ``code``, ``name_en``, ``synthetic``, geometry (EPSG:4326, simplified ≈ 40 m); units
        without a shape are left out.
    """
    if level == "grid":
        query = sql.SQL(
            """
            SELECT g.code, a.name_en, (%(lsyn)s OR coalesce(a.synthetic, false)) AS synthetic,
                   ST_AsBinary(ST_SimplifyPreserveTopology(g.geom, %(tol)s)) AS wkb
              FROM grid g LEFT JOIN admin_area a ON a.code = g.village_code
             WHERE g.layout_id = %(layout)s AND g.code = ANY(%(codes)s) ORDER BY g.code
            """
        )
    else:
        query = sql.SQL(
            """
            SELECT nbs_prefix(a.code) AS code, a.name_en, a.synthetic,
                   ST_AsBinary(ST_SimplifyPreserveTopology(a.geom, %(tol)s)) AS wkb
              FROM admin_area a
             WHERE a.level = %(level)s AND nbs_prefix(a.code) = ANY(%(codes)s) ORDER BY a.code
            """
        )
    params = {
        "layout": layout_id,
        "level": level,
        "codes": codes,
        "tol": MAP_TOLERANCE_DEG,
        "lsyn": layout_synthetic,
    }
    rows = await (await conn.execute(query, params)).fetchall()
    geoms = shapely.from_wkb(np.array([bytes(r[3]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name_en": [r[1] for r in rows],
            "synthetic": [bool(r[2]) for r in rows],
        },
        geometry=list(geoms),
        crs="EPSG:4326",
    )


@dataclass(frozen=True)
class BlindSpots:
    """Blind fine cells of a window and their outline."""

    first: date
    last: date
    days: int
    cells: int  # blind fine cells
    total_cells: int  # fine cells of the grids in scope
    shape: BaseGeometry  # EPSG:4326 (multi)polygon, empty when nothing is blind

    def frame(self) -> gpd.GeoDataFrame:
        """One row (or none) for plotting."""
        shapes = [] if self.shape.is_empty else [self.shape]
        return gpd.GeoDataFrame(
            {"blind_cells": [self.cells] * len(shapes)}, geometry=shapes, crs="EPSG:4326"
        )


async def blind_spots(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    *,
    first: date,
    last: date,
) -> BlindSpots:
    """Cells of the scope's grids unseen in [first, last] (the metrics' blind-spot days).

    The caller has already built the layout's ``grid_visit`` rows for the window (the metrics
    do that), so this only reads bitmaps.
    """
    scoped = sql.SQL(
        "SELECT g.id FROM grid g WHERE g.layout_id = %(layout)s AND {scope} ORDER BY g.id"
    ).format(scope=scope.where("g.code", "g.code"))
    params = {**scope.params(), "layout": layout_id, "first": first, "last": last}
    grid_ids = np.array(
        [r[0] for r in await (await conn.execute(scoped, params)).fetchall()], dtype=np.int64
    )
    seen_rows = await (
        await conn.execute(
            "SELECT grid_id, bit_or(seen)::text FROM grid_visit WHERE layout_id = %(layout)s "
            "AND grid_id = ANY(%(ids)s) AND day BETWEEN %(first)s AND %(last)s GROUP BY grid_id",
            {**params, "ids": grid_ids.tolist()},
        )
    ).fetchall()
    seen_by_grid = dict(seen_rows)  # only the grids someone visited: a few, not all 8,704
    index = await updater.layout_index(conn, layout_id)
    blind = blind_cells(index, grid_ids, [seen_by_grid.get(int(g)) for g in grid_ids])
    in_scope = index.h3[np.isin(index.grid, grid_ids)]
    shape = await asyncio.to_thread(outline, blind, in_scope.view(np.uint64))
    total = len(in_scope)
    return BlindSpots(first, last, (last - first).days + 1, len(blind), total, shape)


def blind_cells(
    index: LayoutIndex, grid_ids: NDArray[np.int64], seen: list[str | None]
) -> NDArray[np.uint64]:
    """Cells of ``grid_ids`` whose bit is 0 (or that have no bitmap at all), vectorised.

    Parameters
    ----------
    index
        The layout's cells with each cell's grid and bit position.
    grid_ids
        Sorted grid ids in scope.
    seen
        Per grid id, its ``bit varying`` as text (``'0110…'``, bit i = i-th cell by h3), or
        ``None`` when nothing of the grid was seen.
    """
    cells, _grid, was_seen = index.seen_cells(grid_ids, seen)
    return np.sort(cells[~was_seen]).astype(np.uint64)
