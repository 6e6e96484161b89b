"""The four ways to cut one village into grids (see ``gis.grids.make_grids``).

Each function takes one village boundary (Polygon or MultiPolygon, EPSG:4326) and returns the
grid geometries (EPSG:4326), unnumbered. Their union is the boundary and they do not overlap.

How boundary slivers are handled:

- ``h3``: every cell that overlaps the boundary is clipped to it. Cells chosen by the containment
  mode keep the largest part of their clip as a grid; the rest (clips of cells *not* chosen —
  for ``center`` those whose centre is outside, for ``full`` every cell crossing the boundary —
  and extra parts of cells cut in two by a concave boundary) is merged into the neighbouring grid
  it shares the longest edge with. ``overlap`` keeps every clip, however small. A village in which
  the mode chooses no cell at all falls back to ``overlap``.
- ``squares``: squares clipped to the boundary; a clip smaller than 5 % of a square, and extra
  parts of a square cut in two, are merged into the neighbour with the longest shared edge.
- ``balanced`` / ``households``: straight cuts (``gis.partition``) leave no slivers; fragments a
  cut would leave are merged there.

A grid is a MultiPolygon only when the village is multipart (an island too small to be a grid of
its own joins the nearest grid) or when a clip touches the rest of the village at a single point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import h3.api.basic_int as h3i
import h3ronpy.vector as h3v
import numpy as np
import pyarrow as pa
import pyproj
import shapely
from numpy.typing import NDArray

from gis.gridpieces import (
    DENSIFY_M,
    Geom,
    IntArray,
    ObjArray,
    absorb,
    as_geom,
    dissolve,
    from_plane,
    grow_groups,
    local_epsg,
    lonlat_to_plane,
    plane_origin,
    polygon_parts,
    repair,
    shared_edges,
    to_local,
    to_plane,
    to_wgs84,
    xy_to_wgs84,
)
from gis.partition import PartitionError, split_by_weights

CONTAINMENT = ("center", "full", "overlap")
SQUARE_SLIVER_SHARE = 0.05
_LATTICE_MAX_SUBDIVISIONS = 64


class GridError(ValueError):
    """Grids cannot be made as asked (bad input or impossible constraints); nothing is returned."""


def check_wgs84(frame: gpd.GeoDataFrame, what: str) -> None:
    """Raise ``GridError`` unless ``frame`` is EPSG:4326 with lon/lat-range coordinates."""
    if frame.crs is None:
        raise GridError(f"{what} have no CRS; expected EPSG:4326 (lon/lat degrees)")
    if not pyproj.CRS.from_user_input(frame.crs).equals("EPSG:4326", ignore_axis_order=True):
        raise GridError(
            f"{what} are in {frame.crs.to_string()}, expected EPSG:4326 (lon/lat degrees); "
            "reproject with .to_crs(4326)"
        )
    if len(frame) and not frame.geometry.is_empty.all():
        minx, miny, maxx, maxy = frame.geometry.total_bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise GridError(
                f"{what} have coordinates outside the lon/lat range "
                f"({minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g}): wrong CRS?"
            )


def cell_polygons(cells: NDArray[np.uint64]) -> ObjArray:
    """EPSG:4326 hexagon (pentagon) polygons of H3 cells, vectorised."""
    wkb = pa.array(h3v.cells_to_wkb_polygons(np.asarray(cells, dtype=np.uint64)))
    return np.asarray(shapely.from_wkb(wkb.to_numpy(zero_copy_only=False)), dtype=object)


def _h3_cells(boundary: Geom, resolution: int, contain: str) -> NDArray[np.uint64]:
    shape = h3i.geo_to_h3shape(boundary)
    cells = h3i.h3shape_to_cells_experimental(shape, resolution, contain)
    return np.unique(np.asarray(cells, dtype=np.uint64))


def _clip(tiles: ObjArray, boundary: Geom) -> tuple[ObjArray, IntArray]:
    """Parts of each tile inside the boundary (tile index per part); any part of the boundary no
    tile covers is returned as extra parts with index -1."""
    shapely.prepare(boundary)
    inner = shapely.contains_properly(boundary, tiles)
    pieces = tiles.copy()
    pieces[~inner] = shapely.intersection(tiles[~inner], boundary)
    parts, owner = polygon_parts(pieces)
    if abs(float(shapely.area(parts).sum()) - boundary.area) > 1e-9 * boundary.area:
        rest, _ = polygon_parts(np.array([boundary.difference(shapely.union_all(parts))]))
        parts = np.concatenate([parts, rest])
        owner = np.concatenate([owner, np.full(len(rest), -1, dtype=np.int64)])
    return parts, owner


def _cores(parts: ObjArray, owner: IntArray, chosen: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest part of every chosen tile (``chosen`` is indexed by tile)."""
    area = shapely.area(parts)
    order = np.lexsort((-area, owner))
    first = np.ones(len(order), bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    core = np.zeros(len(parts), bool)
    core[order[first]] = True
    return core & (owner >= 0) & chosen[np.maximum(owner, 0)]


def _merge_loose(parts: ObjArray, core: NDArray[np.bool_]) -> tuple[ObjArray, IntArray, int]:
    core_idx = np.flatnonzero(core)
    loose_idx = np.flatnonzero(~core)
    group = np.empty(len(parts), dtype=np.int64)
    group[core_idx] = np.arange(len(core_idx))
    group[loose_idx] = absorb(parts[core_idx], parts[loose_idx])
    return parts, group, len(core_idx)


def h3_grids(
    boundary: Geom,
    *,
    resolution: int = 9,
    containment: str = "center",
    cells_per_grid: int | None = None,
) -> list[Geom]:
    """H3 cells at ``resolution`` clipped to ``boundary``, optionally grouped.

    Parameters
    ----------
    boundary
        Village boundary, EPSG:4326.
    resolution
        H3 resolution (9: ≈ 0.08–0.1 km² cells).
    containment
        ``center`` / ``full`` / ``overlap``: which cells become grids, as in h3 4.x
        ``h3shape_to_cells_experimental(shape, res, contain=...)``; see the module notes for
        what happens to the boundary clips of the cells not chosen.
    cells_per_grid
        When > 1, adjacent cells are grouped into contiguous grids of about this many cells.
    """
    overlap = _h3_cells(boundary, resolution, "overlap")
    chosen = overlap if containment == "overlap" else _h3_cells(boundary, resolution, containment)
    cells = np.union1d(overlap, chosen)
    is_chosen = np.isin(cells, chosen)
    parts, owner = _clip(cell_polygons(cells), boundary)
    core = _cores(parts, owner, is_chosen)
    if not core.any():
        core = _cores(parts, owner, np.ones(len(cells), bool))
    pieces, group, n = _merge_loose(parts, core)
    units = dissolve(pieces, group, n)
    if cells_per_grid is None or cells_per_grid <= 1:
        return units
    unit_arr = np.asarray(units, dtype=object)
    grouping = grow_groups(unit_arr, cells_per_grid)
    return dissolve(unit_arr, grouping, int(grouping.max()) + 1)


def _lattice_squares(bounds: tuple[float, ...], size_m: float, epsg: int) -> ObjArray:
    """Squares of a UTM lattice aligned on multiples of ``size_m`` covering ``bounds``, as
    EPSG:4326 polygons whose edges are densified identically on both sides (exact tiling)."""
    minx, miny, maxx, maxy = bounds
    x0, y0 = math.floor(minx / size_m) * size_m, math.floor(miny / size_m) * size_m
    nx = max(1, math.ceil((maxx - x0) / size_m))
    ny = max(1, math.ceil((maxy - y0) / size_m))
    m = min(max(1, math.ceil(size_m / DENSIFY_M)), _LATTICE_MAX_SUBDIVISIONS)
    xs = x0 + np.arange(nx * m + 1) * (size_m / m)
    ys = y0 + np.arange(ny * m + 1) * (size_m / m)
    gx, gy = np.meshgrid(xs, ys)
    lonlat = xy_to_wgs84(gx.ravel(), gy.ravel(), epsg)
    width = nx * m + 1
    jj, ii = np.divmod(np.arange(nx * ny), nx)
    i0, j0 = (ii * m)[:, None], (jj * m)[:, None]
    t = np.arange(m)[None, :]
    ring_x = np.concatenate([i0 + t, i0 + m + 0 * t, i0 + m - t, i0 + 0 * t, i0], axis=1)
    ring_y = np.concatenate([j0 + 0 * t, j0 + t, j0 + m + 0 * t, j0 + m - t, j0], axis=1)
    return np.asarray(shapely.polygons(lonlat[ring_y * width + ring_x]), dtype=object)


def square_grids(boundary: Geom, *, size_m: float) -> list[Geom]:
    """A regular grid of ``size_m`` × ``size_m`` squares in the local UTM zone, clipped to
    ``boundary`` (EPSG:4326); clips under 5 % of a square merge into a neighbour."""
    epsg = local_epsg(boundary)
    local = to_local(boundary, epsg)[0]
    squares = _lattice_squares(local.bounds, size_m, epsg)
    shapely.prepare(boundary)
    squares = squares[shapely.intersects(boundary, squares)]
    parts, owner = _clip(squares, boundary)
    core = _cores(parts, owner, np.ones(len(squares), bool))
    full = shapely.area(squares)[np.maximum(owner, 0)]
    core &= shapely.area(parts) >= SQUARE_SLIVER_SHARE * full
    if not core.any():
        core[int(np.argmax(shapely.area(parts)))] = True
    pieces, group, n = _merge_loose(parts, core)
    return dissolve(pieces, group, n)


def _back(parts: list[Geom], epsg: int) -> list[Geom]:
    """UTM parts to EPSG:4326, densified first: a cut edge that a later cut split on one side
    only stays on the same (curved in lon/lat) line on both sides."""
    dense = shapely.segmentize(np.asarray(parts, dtype=object), DENSIFY_M)
    return [as_geom(g) for g in repair(to_wgs84(dense, epsg))]


def balanced_grids(
    boundary: Geom, *, parts: int, households: NDArray[np.float64] | None = None
) -> list[Geom]:
    """Exactly ``parts`` contiguous grids of equal area, or of equal households when
    ``households`` (N×3: lon, lat, weight) holds at least ``parts`` points of positive weight
    (else by area), cut by ``gis.partition.split_by_weights``.

    Area cuts are made in the local UTM zone. Household cuts are made in the local plane of
    ``to_plane`` (an affine image of lon/lat): a cut that is straight in UTM bends by
    millimetres in lon/lat, enough to move a household standing next to it to the other side.
    """
    try:
        if households is not None and int((households[:, 2] > 0).sum()) >= parts:
            origin = plane_origin(boundary)
            xy = lonlat_to_plane(households, origin)
            plane = to_plane(boundary, origin)[0]
            w = households[:, 2]
            cut = split_by_weights(
                plane, _targets(float(w.sum()), parts), points=xy, point_weights=w
            )
            return [as_geom(g) for g in repair(from_plane(cut, origin))]
        epsg = local_epsg(boundary)
        cut = split_by_weights(to_local(boundary, epsg)[0], [1.0] * parts)
    except PartitionError as exc:
        raise GridError(f"cannot cut the village into {parts} parts: {exc}") from exc
    return _back(cut, epsg)


def _targets(total: float, k: int) -> list[float]:
    """Part sizes for a household split: whole numbers when the total is one, so that every
    bisection has an exactly reachable target (``split_by_weights`` then stops at the first
    clean cut instead of trying every angle)."""
    if total != round(total) or total < k:
        return [1.0] * k
    q, r = divmod(round(total), k)
    return [float(q + 1)] * r + [float(q)] * (k - r)


def _point_owner(parts: Sequence[Geom], xy: NDArray[np.float64]) -> IntArray:
    """Index of the first part covering each point (-1 when none)."""
    owner = np.full(len(xy), -1, dtype=np.int64)
    for k in range(len(parts) - 1, -1, -1):
        owner[shapely.intersects_xy(parts[k], xy[:, 0], xy[:, 1])] = k
    return owner


@dataclass
class _Group:
    """A household group under construction: its shape (plane metres) and its points."""

    geom: Geom
    points: IntArray


def _split_group(group: _Group, k: int, xy: NDArray, w: NDArray) -> list[_Group]:
    if k <= 1:
        return [group]
    idx = group.points
    try:
        cut = split_by_weights(
            group.geom, _targets(float(w[idx].sum()), k), points=xy[idx], point_weights=w[idx]
        )
    except PartitionError as exc:
        raise GridError(f"cannot split households into {k} groups: {exc}") from exc
    owner = _point_owner(cut, xy[idx])
    for i in np.flatnonzero(owner < 0):  # cannot happen for points inside; be safe
        owner[i] = int(np.argmin(shapely.distance(shapely.Point(xy[idx[i]]), cut)))
    return [_Group(as_geom(g), idx[owner == j]) for j, g in enumerate(cut)]


def household_grids(
    boundary: Geom,
    households: NDArray[np.float64],
    *,
    min_households: int = 5,
    max_households: int = 50,
) -> list[Geom]:
    """片区: contiguous groups of ``min_households``–``max_households`` neighbouring households.

    Starts from ``ceil(total / max_households)`` household-balanced parts (straight cuts in the
    local plane of ``to_plane``, see ``balanced_grids``), then repairs: a part above the maximum
    is split again, a part below the minimum is merged with its smallest neighbour and the pair
    re-split when needed. A village with at most ``max_households`` households — including one
    with fewer than ``min_households``, or none — is a single grid.

    Raises
    ------
    GridError
        When one household point carries more than ``max_households`` households, or the
        bounds cannot be met.
    """
    w = households[:, 2]
    total = float(w.sum())
    if total <= max_households:
        return [boundary]
    if float(w.max()) > max_households:
        raise GridError(
            f"a household point carries {w.max():g} households, more than "
            f"max_households={max_households}"
        )
    origin = plane_origin(boundary)
    xy = lonlat_to_plane(households, origin)
    start = _Group(to_plane(boundary, origin)[0], np.arange(len(xy)))
    groups = _split_group(start, math.ceil(total / max_households), xy, w)
    for _ in range(4 * len(groups) + 20):
        counts = np.array([w[g.points].sum() for g in groups])
        over = np.flatnonzero(counts > max_households)
        under = np.flatnonzero(counts < min_households)
        if len(over):
            i = int(over[0])
            k = math.ceil(counts[i] / max_households)
            groups = groups[:i] + _split_group(groups[i], k, xy, w) + groups[i + 1 :]
        elif len(under):
            groups = _merge_under(groups, counts, int(under[0]), xy, w, max_households)
        else:
            return [as_geom(g) for g in repair(from_plane([g.geom for g in groups], origin))]
    raise GridError(f"could not group {total:g} households into {min_households}–{max_households}")


def _merge_under(
    groups: list[_Group], counts: NDArray, i: int, xy: NDArray, w: NDArray, max_households: int
) -> list[_Group]:
    """Merge group ``i`` into its neighbour with the fewest households (longest shared edge on
    ties; the nearest group when none shares an edge) and re-split the pair if too large."""
    arr = np.asarray([g.geom for g in groups], dtype=object)
    _, gj, length = shared_edges(arr, arr[[i]], geographic=False)
    cand = [(float(counts[j]), -float(ln), int(j)) for j, ln in zip(gj, length, strict=True)]
    cand = [c for c in cand if c[2] != i]
    if cand:
        j = min(cand)[2]
    else:
        dist = shapely.distance(arr[i], arr)
        dist[i] = np.inf
        j = int(np.argmin(dist))
    merged = _Group(
        as_geom(shapely.union_all([arr[i], arr[j]])),
        np.concatenate([groups[i].points, groups[j].points]),
    )
    k = math.ceil((counts[i] + counts[j]) / max_households)
    rest = [g for n, g in enumerate(groups) if n not in (i, j)]
    return rest + _split_group(merged, k, xy, w)
