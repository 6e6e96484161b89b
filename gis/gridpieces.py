"""Building blocks of grid division: local projections, clipped pieces, sliver absorption and
contiguous grouping.

Grid methods that clip a tiling (H3 cells, metric squares) against a village boundary produce
*pieces*: the parts of each tile inside the village. Some pieces become grids (*cores*), the rest
(*loose* pieces: slivers, or the extra parts of a tile cut in two by a concave boundary) are
merged into the neighbouring grid they share the longest edge with. Everything here works on
EPSG:4326 geometries; edge lengths are compared in locally scaled degrees (x · cos φ), which
ranks them like metres do.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import pyproj
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from gis.crs import utm_epsg
from gis.units import EARTH_RADIUS_M as _EARTH_RADIUS_M

Geom = Polygon | MultiPolygon
ObjArray = NDArray[np.object_]
IntArray = NDArray[np.int64]
# Straight lines in UTM are slightly curved in lon/lat: densify a boundary before projecting it.
DENSIFY_DEG = 0.002
# Lattice edges (squares) are densified to this length before going back to lon/lat.
DENSIFY_M = 200.0


@lru_cache(maxsize=64)
def _transformer(epsg: int, *, inverse: bool) -> pyproj.Transformer:
    src, dst = (epsg, 4326) if inverse else (4326, epsg)
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def local_epsg(geom: BaseGeometry) -> int:
    """EPSG code of the UTM zone holding ``geom``'s representative point (lon/lat input)."""
    p = geom.representative_point()
    return utm_epsg(p.x, p.y)


def to_local(geoms: BaseGeometry | ObjArray, epsg: int, *, densify: bool = True) -> ObjArray:
    """Project EPSG:4326 geometries to the UTM zone ``epsg`` (densified first, by default)."""
    arr = np.atleast_1d(np.asarray(geoms, dtype=object))
    if densify:
        arr = shapely.segmentize(arr, DENSIFY_DEG)
    tr = _transformer(epsg, inverse=False)

    def forward(c: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tr.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(arr, forward), dtype=object)


def to_wgs84(geoms: Sequence[BaseGeometry] | ObjArray, epsg: int) -> ObjArray:
    """Project UTM geometries back to EPSG:4326, vertex by vertex (no densification: shared
    edges keep identical coordinates on both sides)."""
    arr = np.atleast_1d(np.asarray(geoms, dtype=object))
    tr = _transformer(epsg, inverse=True)

    def backward(c: NDArray[np.float64]) -> NDArray[np.float64]:
        lon, lat = tr.transform(c[:, 0], c[:, 1])
        return np.column_stack([lon, lat])

    return np.asarray(shapely.transform(arr, backward), dtype=object)


def xy_to_local(lon: NDArray[np.float64], lat: NDArray[np.float64], epsg: int) -> NDArray:
    """Project lon/lat arrays to an N×2 array of UTM metres."""
    x, y = _transformer(epsg, inverse=False).transform(lon, lat)
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


def xy_to_wgs84(x: NDArray[np.float64], y: NDArray[np.float64], epsg: int) -> NDArray:
    """Project UTM metre arrays to an N×2 array of lon/lat degrees."""
    lon, lat = _transformer(epsg, inverse=True).transform(x, y)
    return np.column_stack([np.asarray(lon, float), np.asarray(lat, float)])


def plane_origin(geom: BaseGeometry) -> tuple[float, float]:
    """Origin (lon, lat) of the local plane of ``plane_xy`` for an EPSG:4326 geometry."""
    minx, miny, maxx, maxy = geom.bounds
    return (minx + maxx) / 2, (miny + maxy) / 2


def _plane_scale(origin: tuple[float, float]) -> NDArray[np.float64]:
    k = _EARTH_RADIUS_M * np.pi / 180.0
    return np.array([k * np.cos(np.radians(origin[1])), k])


def to_plane(geoms: BaseGeometry | ObjArray, origin: tuple[float, float]) -> ObjArray:
    """EPSG:4326 geometries in a local equirectangular plane (metres at ``origin``).

    The plane is an affine image of lon/lat, so a straight cut there is straight in lon/lat and
    a point keeps its side of it exactly; scale errors are below 0.5 % across a village.
    """
    arr = np.atleast_1d(np.asarray(geoms, dtype=object))
    scale, o = _plane_scale(origin), np.asarray(origin)
    return np.asarray(shapely.transform(arr, lambda c: (c - o) * scale), dtype=object)


def from_plane(geoms: Sequence[BaseGeometry] | ObjArray, origin: tuple[float, float]) -> ObjArray:
    """Inverse of ``to_plane``."""
    arr = np.atleast_1d(np.asarray(geoms, dtype=object))
    scale, o = _plane_scale(origin), np.asarray(origin)
    return np.asarray(shapely.transform(arr, lambda c: c / scale + o), dtype=object)


def lonlat_to_plane(lonlat: NDArray[np.float64], origin: tuple[float, float]) -> NDArray:
    """N×2 lon/lat to N×2 plane metres (see ``to_plane``)."""
    return (np.asarray(lonlat, float)[:, :2] - np.asarray(origin)) * _plane_scale(origin)


def utm_area_m2(geoms: Sequence[BaseGeometry] | ObjArray, epsg: int) -> NDArray[np.float64]:
    """Areas in square metres of EPSG:4326 geometries, measured in UTM zone ``epsg``."""
    return np.asarray(shapely.area(to_local(np.asarray(geoms, dtype=object), epsg)), float)


def polygon_parts(geoms: ObjArray) -> tuple[ObjArray, IntArray]:
    """The polygons of non-empty area inside each geometry, and the index of their source."""
    parts, owner = shapely.get_parts(np.asarray(geoms, dtype=object), return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    return np.asarray(parts[keep], dtype=object), np.asarray(owner[keep], dtype=np.int64)


def as_geom(geom: BaseGeometry) -> Geom:
    """A Polygon when ``geom`` has one areal part, else a MultiPolygon of its areal parts."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


def _scaled_length(lines: ObjArray, lat0: float | None) -> NDArray[np.float64]:
    if lat0 is None:
        return np.asarray(shapely.length(lines), float)
    scale = np.array([np.cos(np.radians(lat0)), 1.0])
    return np.asarray(shapely.length(shapely.transform(lines, lambda c: c * scale)), float)


def shared_edges(
    geoms: ObjArray, queries: ObjArray | None = None, *, geographic: bool = True
) -> tuple[IntArray, IntArray, NDArray[np.float64]]:
    """Pairs (query i, geom j) whose boundaries share an edge of positive length, and that length
    (scaled degrees when ``geographic``, else the CRS unit). Without ``queries`` the geometries
    are paired with each other (i < j)."""
    tree = shapely.STRtree(geoms)
    same = queries is None
    q = geoms if queries is None else queries
    qi, gj = tree.query(q, predicate="intersects")
    keep = qi < gj if same else np.ones(len(qi), bool)
    qi, gj = qi[keep], gj[keep]
    if len(qi) == 0:
        return qi.astype(np.int64), gj.astype(np.int64), np.zeros(0)
    common = shapely.intersection(shapely.boundary(q[qi]), shapely.boundary(geoms[gj]))
    lat0 = float(np.mean(shapely.bounds(geoms)[:, [1, 3]])) if geographic else None
    length = _scaled_length(common, lat0)
    ok = length > 0
    return qi[ok].astype(np.int64), gj[ok].astype(np.int64), length[ok]


def absorb(cores: ObjArray, loose: ObjArray) -> IntArray:
    """Give every loose piece to a core: the group it shares the longest edge with, round after
    round (so chains of slivers follow), and pieces that share no edge with anything (islands of
    a multipart boundary, or parts touching only at a point) to the nearest group.

    Returns the group (core index) of each loose piece. Ties go to the lowest core index.
    """
    n_core, n_loose = len(cores), len(loose)
    group = np.full(n_loose, -1, dtype=np.int64)
    if n_loose == 0:
        return group
    everything = np.concatenate([cores, loose])
    li, gj, length = shared_edges(everything, loose)
    mask = gj != li + n_core
    li, gj, length = li[mask], gj[mask], length[mask]
    owner = np.concatenate([np.arange(n_core), group])
    while True:
        pending = group[li] < 0
        target = owner[gj]
        ok = pending & (target >= 0)
        if not ok.any():
            break
        pairs = pd.DataFrame({"loose": li[ok], "group": target[ok], "length": length[ok]})
        summed = pairs.groupby(["loose", "group"], sort=True)["length"].sum().reset_index()
        summed = summed.sort_values(["loose", "length", "group"], ascending=[True, False, True])
        best = summed.drop_duplicates("loose", keep="first")
        group[best["loose"].to_numpy()] = best["group"].to_numpy()
        owner[n_core:] = group
    for i in np.flatnonzero(group < 0):
        placed = np.flatnonzero(owner >= 0)
        dist = shapely.distance(loose[i], everything[placed])
        group[i] = owner[placed[int(np.argmin(dist))]]
        owner[n_core + i] = group[i]
    return group


def repair(geoms: ObjArray) -> ObjArray:
    """Make invalid polygons valid (rare: a narrow neck after reprojection), keeping areal parts."""
    out = np.asarray(geoms, dtype=object).copy()
    bad = ~shapely.is_valid(out)
    for i in np.flatnonzero(bad):
        out[i] = as_geom(shapely.make_valid(out[i]))
    return out


def dissolve(pieces: ObjArray, group: IntArray, n_groups: int) -> list[Geom]:
    """Union of the pieces of each group 0 … n_groups-1 (groups of one piece are kept as is)."""
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    out: list[Geom] = []
    for g in range(n_groups):
        members = pieces[order[bounds[g] : bounds[g + 1]]]
        out.append(as_geom(members[0] if len(members) == 1 else shapely.union_all(members)))
    return out


def grow_groups(units: ObjArray, size: int) -> IntArray:
    """Group adjacent units (sharing an edge) into contiguous groups of about ``size`` units.

    Seeds are taken north-west first; each group grows by nearest-to-seed neighbours until it
    holds ``size`` units. Groups left smaller than half of ``size`` (pockets) are merged into
    their smallest neighbouring group, so every group stays contiguous.
    """
    n = len(units)
    if size <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    ui, uj, _ = shared_edges(units)
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(ui.tolist(), uj.tolist(), strict=True):
        nbrs[a].append(b)
        nbrs[b].append(a)
    cent = shapely.centroid(units)
    cx, cy = shapely.get_x(cent), shapely.get_y(cent)
    cx = cx * np.cos(np.radians(float(np.mean(cy))))
    group = np.full(n, -1, dtype=np.int64)
    n_groups = 0
    for seed in np.lexsort((cx, -cy)).tolist():
        if group[seed] >= 0:
            continue
        heap: list[tuple[float, int]] = [(0.0, seed)]
        taken = 0
        while heap and taken < size:
            _, u = heapq.heappop(heap)
            if group[u] >= 0:
                continue
            group[u] = n_groups
            taken += 1
            for v in nbrs[u]:
                if group[v] < 0:
                    heapq.heappush(heap, (float(np.hypot(cx[v] - cx[seed], cy[v] - cy[seed])), v))
        n_groups += 1
    return _merge_small(group, nbrs, min_size=(size + 1) // 2)


def _merge_small(group: IntArray, nbrs: list[list[int]], *, min_size: int) -> IntArray:
    while True:
        counts = np.bincount(group)
        small = [g for g in np.argsort(counts, kind="stable") if 0 < counts[g] < min_size]
        merged = False
        for g in small:
            members = np.flatnonzero(group == g)
            around = {int(group[v]) for u in members for v in nbrs[u]} - {int(g)}
            if around:
                target = min(around, key=lambda h: (counts[h], h))
                group[members] = target
                merged = True
                break
        if not merged:
            break
    _, dense = np.unique(group, return_inverse=True)
    return dense.astype(np.int64)
