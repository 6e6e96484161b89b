"""The outline of blind spots (盲区) for a map: H3 cells nobody saw, as one (multi)polygon.

League-wide the blind cells of a week are millions of res-9 hexagons; unioning them (even
compacted) costs seconds. A report or a map page draws them at a scale where a res-9 cell is a
fraction of a pixel, so the outline is drawn at the *display resolution*: the coarsest H3
resolution whose cells are still no larger than about two pixels of a map ``pixels`` wide.
A coarse cell is drawn blind when at least half of its fine cells (those of the layout in
scope) are blind. Neighbouring cells of one resolution are linked into polygons by h3o
(``link_cells``) rather than a geometric union. Counts of blind cells stay exact: only the
drawing is generalised, as any map generalises at its scale.
"""

from __future__ import annotations

import h3ronpy
import h3ronpy.vector as h3v
import numpy as np
import pyarrow as pa
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.cells import cell_centres, edge_length_m

MAP_PIXELS = 1000  # a report or page map's width, in pixels
M_PER_DEG = 111_320.0


def display_resolution(res: int, extent_m: float, pixels: int = MAP_PIXELS) -> int:
    """The coarsest resolution ≤ ``res`` whose cell edge is at most two pixels of a map
    ``pixels`` wide showing ``extent_m``; ``res`` itself for small extents."""
    pixel_m = extent_m / pixels
    for coarse in range(max(res - 4, 0), res):
        if edge_length_m(coarse) <= 2 * pixel_m:
            return coarse
    return res


def _u64(cells: NDArray[np.uint64]) -> NDArray[np.uint64]:
    return np.ascontiguousarray(cells, dtype=np.uint64)


def _parents(cells: NDArray[np.uint64], res: int) -> NDArray[np.uint64]:
    return np.asarray(h3ronpy.change_resolution(pa.array(_u64(cells)), res), dtype=np.uint64)


def shown_cells(
    blind: NDArray[np.uint64], cells: NDArray[np.uint64], res: int
) -> NDArray[np.uint64]:
    """The cells at ``res`` (coarser than or equal to the cells') drawn blind: those whose fine
    cells among ``cells`` (every cell in scope) are at least half blind."""
    if len(blind) == 0:
        return np.empty(0, dtype=np.uint64)
    fine = int(h3ronpy.cells_resolution(pa.array(_u64(blind[:1])))[0].as_py())
    if res >= fine:
        return np.unique(_u64(blind))
    blind_parent, blind_n = np.unique(_parents(blind, res), return_counts=True)
    all_parent, all_n = np.unique(_parents(cells, res), return_counts=True)
    where = np.clip(np.searchsorted(all_parent, blind_parent), 0, len(all_parent) - 1)
    total = np.where(all_parent[where] == blind_parent, all_n[where], blind_n)
    return blind_parent[2 * blind_n >= total]


def linked_polygons(cells: NDArray[np.uint64]) -> BaseGeometry:
    """Cells of one resolution as a (multi)polygon: neighbours merged, holes kept."""
    if len(cells) == 0:
        return shapely.GeometryCollection()
    wkb = pa.array(h3v.cells_to_wkb_polygons(_u64(cells), link_cells=True))
    parts = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
    polygons = [p for geom in parts for p in getattr(geom, "geoms", [geom])]
    return shapely.MultiPolygon(polygons) if len(polygons) > 1 else polygons[0]


def outline(
    blind: NDArray[np.uint64], cells: NDArray[np.uint64], pixels: int = MAP_PIXELS
) -> BaseGeometry:
    """The blind spots of ``cells`` (every fine cell in scope; ``blind`` a subset of them) as
    a (multi)polygon for a map ``pixels`` wide, simplified to about a third of its pixel."""
    if len(blind) == 0:
        return shapely.GeometryCollection()
    compact = np.asarray(h3ronpy.compact(pa.array(_u64(blind))), dtype=np.uint64)
    lon, lat = cell_centres(compact.view(np.int64))
    extent_m = max(float(np.ptp(lon)) * np.cos(np.radians(float(np.mean(lat)))), float(np.ptp(lat)))
    extent_m = extent_m * M_PER_DEG
    fine = int(h3ronpy.cells_resolution(pa.array(_u64(blind[:1])))[0].as_py())
    res = display_resolution(fine, extent_m, pixels)
    shape = linked_polygons(shown_cells(blind, cells, res))
    if shape.is_empty:
        return shape
    x0, y0, x1, y1 = shape.bounds
    tolerance = max(x1 - x0, y1 - y0) / (3 * pixels)
    return shapely.simplify(shape, tolerance, preserve_topology=True)
