"""Fine-cell membership: which H3 cells (by centre) belong to which grid of a layout.

Coverage is counted in fine cells (DESIGN §5) and re-joined to any layout through this table
(``grid_cell``). A fine cell belongs to a village when H3 puts its centre inside the village
boundary (H3 "centre" containment, the rule of ``cells_in_boundary``); it then goes to exactly
one grid of that village: the one whose own centre-containment polyfill holds it, the lowest
grid code when two do (a centre exactly on a shared edge), and otherwise — a centre in a
floating-point gap between reprojected edges — the grid whose closure holds the centre, or
the nearest grid. So per village the membership count always equals ``cells_in_boundary``.

Polyfill runs in h3ronpy (the H3 library compiled in Rust, vectorised over all polygons at once),
which gives the same cells as h3-py's ``h3shape_to_cells`` about 20× faster.
"""

from __future__ import annotations

import itertools

import geopandas as gpd
import h3ronpy.vector as h3v
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from h3ronpy import ContainmentMode
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.cells import cell_centres
from gis.gridmethods import GridError, check_wgs84
from gis.gridpieces import IntArray, ObjArray

__all__ = ["cells_in_boundary", "grid_cells"]


def _polyfill(geoms: ObjArray, resolution: int) -> tuple[NDArray[np.int64], IntArray]:
    """H3 cells (int64) whose centre lies in each geometry, and the geometry index of each."""
    if len(geoms) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lists = pa.array(
        h3v.wkb_to_cells(
            shapely.to_wkb(geoms),
            resolution,
            containment_mode=ContainmentMode.ContainsCentroid,
            compact=False,
            flatten=False,
        )
    )
    cells = np.asarray(lists.flatten().to_numpy(), dtype=np.uint64).view(np.int64)
    source = np.asarray(lists.value_parent_indices().to_numpy(), dtype=np.int64)
    return cells, source


def cells_in_boundary(geom: BaseGeometry, resolution: int = 9) -> NDArray[np.int64]:
    """Sorted H3 cells (int64) at ``resolution`` whose centre lies in ``geom`` (EPSG:4326)."""
    cells, _ = _polyfill(np.asarray([geom], dtype=object), resolution)
    return np.unique(cells)


def _resolve(
    cells: NDArray[np.int64], village: IntArray, geoms: ObjArray, grid_village: IntArray
) -> IntArray:
    """Grid of cells that no grid polyfill claimed: lowest grid of their village whose closure
    holds the centre, else the nearest grid of their village."""
    lon, lat = cell_centres(cells)
    points = np.asarray(shapely.points(lon, lat), dtype=object)
    qi, gj = shapely.STRtree(geoms).query(points, predicate="intersects")
    ok = grid_village[gj] == village[qi]
    qi, gj = qi[ok], gj[ok]
    out = np.full(len(cells), -1, dtype=np.int64)
    order = np.lexsort((gj, qi))
    first = np.unique(qi[order], return_index=True)[1]
    out[qi[order][first]] = gj[order][first]
    for i in np.flatnonzero(out < 0):
        mine = np.flatnonzero(grid_village == village[i])
        out[i] = mine[int(np.argmin(shapely.distance(points[i], geoms[mine])))]
    return out


def grid_cells(
    grids: gpd.GeoDataFrame,
    *,
    resolution: int = 9,
    boundaries: gpd.GeoDataFrame | None = None,
) -> pd.DataFrame:
    """Every fine cell whose centre lies in a grid, mapped to that grid exactly once.

    Parameters
    ----------
    grids
        EPSG:4326 grids with ``code`` (15 digits) and ``village_code`` (``make_grids`` output).
    resolution
        H3 resolution of the fine cells (default 9).
    boundaries
        Optional EPSG:4326 village boundaries (``code``, geometry) the grids tile; without them
        a village's boundary is the union of its grids.

    Returns
    -------
    DataFrame
        ``h3`` (int64 cell) and ``grid`` (grid code), sorted by grid then cell; per village the
        number of rows equals ``len(cells_in_boundary(boundary, resolution))`` (a cell inside two
        villages, possible only through floating-point overlap, goes to the lower grid code).

    Raises
    ------
    GridError
        For missing columns, a CRS other than EPSG:4326, or a village without a boundary.
    """
    for col in ("code", "village_code"):
        if col not in grids.columns:
            raise GridError(f"grids need a {col!r} column")
    check_wgs84(grids, "grids")
    g = grids.sort_values("code", kind="stable").reset_index(drop=True)
    geoms = np.asarray(g.geometry.to_numpy(), dtype=object)
    codes = g["code"].astype(str).to_numpy(dtype=object)
    village_codes, grid_village = np.unique(g["village_code"].astype(str), return_inverse=True)
    grid_village = grid_village.astype(np.int64)
    if boundaries is None:
        order = np.argsort(grid_village, kind="stable")
        cuts = np.searchsorted(grid_village[order], np.arange(len(village_codes) + 1))
        bounds = [shapely.union_all(geoms[order[a:b]]) for a, b in itertools.pairwise(cuts)]
    else:
        check_wgs84(boundaries, "boundaries")
        by_code = dict(zip(boundaries["code"].astype(str), boundaries.geometry, strict=True))
        missing = [c for c in village_codes if c not in by_code]
        if missing:
            raise GridError(f"no boundary for village {', '.join(missing[:5])}")
        bounds = [by_code[c] for c in village_codes]
    v_cells, v_src = _polyfill(np.asarray(bounds, dtype=object), resolution)
    g_cells, g_src = _polyfill(geoms, resolution)
    claimed = pd.DataFrame({"h3": g_cells, "village": grid_village[g_src], "grid": g_src})
    claimed = claimed.sort_values(["h3", "village", "grid"], kind="stable")
    claimed = claimed.drop_duplicates(["h3", "village"], keep="first")
    cells = pd.DataFrame({"h3": v_cells, "village": v_src})
    cells = cells.merge(claimed, on=["h3", "village"], how="left")
    grid = cells["grid"].to_numpy(dtype=float, na_value=np.nan)
    missing_rows = np.flatnonzero(np.isnan(grid))
    out_grid = np.where(np.isnan(grid), -1, grid).astype(np.int64)
    if len(missing_rows):
        out_grid[missing_rows] = _resolve(
            v_cells[missing_rows], v_src[missing_rows], geoms, grid_village
        )
    order = np.lexsort((out_grid, v_cells))
    first = np.ones(len(order), bool)
    first[1:] = v_cells[order][1:] != v_cells[order][:-1]
    keep = order[first]
    keep = keep[np.lexsort((v_cells[keep], out_grid[keep]))]
    return pd.DataFrame({"h3": v_cells[keep], "grid": codes[out_grid[keep]]})
