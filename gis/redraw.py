"""Edits to a village's grids that keep the tiling exact, or refuse with the reason.

Every operation takes the village's grids (EPSG:4326 GeoDataFrame with ``code``,
``village_code``, geometry, optional ``worker_id``) and returns the new grids plus what
happened to the codes: the piece keeping most of a grid's area keeps its code, new pieces get
the next free sequence numbers of the village (never reusing one used before), removed codes
are reported. Geometry is cut and joined with overlay operations on the existing vertices, so
neighbours stay exactly adjacent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import split as split_by_line

from gis.codes import grid_code, parse_grid_code

MIN_PIECE_SHARE = 0.01  # a piece under 1 % of what was cut is a slip of the pen
# Neighbours meet along edges whose vertices need not coincide (a cut adds a vertex on one
# side only), so a shared edge is measured against a 1 cm buffer, not by exact intersection.
EDGE_EPS_DEG = 1e-7


def shared_edge(a: BaseGeometry, b: BaseGeometry) -> float:
    """Length (degrees) of ``a``'s boundary lying along ``b``."""
    near_b = shapely.buffer(b, EDGE_EPS_DEG)
    return float(shapely.length(shapely.intersection(a.boundary, near_b)))


class RedrawError(ValueError):
    """An edit that would leave gaps, overlaps or broken grids; nothing changes."""

    def __init__(self, message: str, geometry: BaseGeometry | None = None) -> None:
        super().__init__(message)
        self.geometry = geometry


@dataclass
class Edit:
    """The village's grids after an edit, and the fate of the codes."""

    grids: gpd.GeoDataFrame
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def _multi(geom: BaseGeometry) -> MultiPolygon:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    return MultiPolygon(parts)


def _pieces(geom: BaseGeometry) -> list[Polygon]:
    return [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]


def _row(grids: gpd.GeoDataFrame, code: str) -> int:
    hits = np.flatnonzero(grids["code"].to_numpy() == code)
    if len(hits) == 0:
        raise RedrawError(f"no grid {code} in this village")
    return int(hits[0])


def next_codes(village: str, taken: set[int], n: int) -> list[str]:
    """``n`` new codes after the highest sequence ever used in the village."""
    start = max(taken, default=0) + 1
    if start + n - 1 > 999:
        raise RedrawError(f"village {village} has no free grid sequence left (max 999)")
    return [grid_code(village, s) for s in range(start, start + n)]


def _sequences(grids: gpd.GeoDataFrame, used: set[int] | None) -> set[int]:
    return {parse_grid_code(str(c)).sequence for c in grids["code"]} | (used or set())


def _replace(
    grids: gpd.GeoDataFrame, drop: list[int], rows: list[dict[str, object]]
) -> gpd.GeoDataFrame:
    kept = grids.drop(index=grids.index[drop])
    new = gpd.GeoDataFrame(rows, geometry="geometry", crs=grids.crs) if rows else kept.iloc[:0]
    out = gpd.GeoDataFrame(
        gpd.pd.concat([kept, new], ignore_index=True), geometry="geometry", crs=grids.crs
    )
    out["geometry"] = [_multi(g) for g in out.geometry]
    return out.sort_values("code").reset_index(drop=True)


def split(
    grids: gpd.GeoDataFrame, code: str, line: LineString, *, used: set[int] | None = None
) -> Edit:
    """Cut grid ``code`` along ``line`` (it must cross the grid from edge to edge)."""
    i = _row(grids, code)
    geom = grids.geometry.iloc[i]
    pieces = sorted(_pieces(split_by_line(geom, line)), key=lambda p: p.area, reverse=True)
    if len(pieces) < 2:
        raise RedrawError(
            f"the line does not cut grid {code} in two: draw it across the grid", line
        )
    small = [p for p in pieces if p.area < MIN_PIECE_SHARE * geom.area]
    if small:
        raise RedrawError(f"the cut leaves a sliver of grid {code} (< 1 % of its area)", small[0])
    village = str(grids["village_code"].iloc[i])
    new_codes = next_codes(village, _sequences(grids, used), len(pieces) - 1)
    rows = [{**grids.iloc[i].drop("geometry").to_dict(), "geometry": pieces[0]}]
    rows += [
        {"code": c, "village_code": village, "worker_id": None, "geometry": p}
        for c, p in zip(new_codes, pieces[1:], strict=True)
    ]
    return Edit(_replace(grids, [i], rows), kept=[code], added=new_codes, changed=[code])


def merge(grids: gpd.GeoDataFrame, codes: list[str]) -> Edit:
    """Join adjacent grids into one; the largest keeps its code (and worker)."""
    if len(set(codes)) < 2:
        raise RedrawError("name at least two different grids to merge")
    rows = [_row(grids, c) for c in codes]
    geoms = [grids.geometry.iloc[r] for r in rows]
    union = shapely.union_all(geoms)
    if len(_pieces(union)) > 1:
        raise RedrawError(f"grids {', '.join(codes)} do not share a boundary", union)
    keep = rows[int(np.argmax([g.area for g in geoms]))]
    code = str(grids["code"].iloc[keep])
    merged = {**grids.iloc[keep].drop("geometry").to_dict(), "geometry": union}
    removed = [str(grids["code"].iloc[r]) for r in rows if r != keep]
    return Edit(_replace(grids, rows, [merged]), kept=[code], removed=removed, changed=[code])


def reshape(
    grids: gpd.GeoDataFrame,
    code: str,
    shape: BaseGeometry,
    village: BaseGeometry,
    *,
    tolerance: float = 1e-9,
) -> Edit:
    """Give grid ``code`` a new shape: neighbours give up what it gains, and what it loses goes
    to the neighbour sharing the longest edge with each lost piece."""
    i = _row(grids, code)
    old = grids.geometry.iloc[i]
    shape = shapely.make_valid(shape)
    tol = tolerance * village.area
    if len(_pieces(shape)) != 1:
        raise RedrawError(f"the new shape of grid {code} must be one polygon", shape)
    outside = shapely.difference(shape, village)
    if outside.area > tol:
        raise RedrawError(f"the new shape of grid {code} crosses the village boundary", outside)
    shape = shapely.intersection(shape, village)
    geoms = list(grids.geometry)
    changed = {code}
    for j, g in enumerate(geoms):
        if j == i or not g.intersects(shape):
            continue
        rest = shapely.difference(g, shape)
        if rest.area <= tol:
            raise RedrawError(f"the new shape would swallow grid {grids['code'].iloc[j]}", g)
        if len([p for p in _pieces(rest) if p.area > tol]) > 1:
            raise RedrawError(
                f"the new shape would cut grid {grids['code'].iloc[j]} in pieces", rest
            )
        if rest.area < g.area - tol:
            geoms[j] = rest
            changed.add(str(grids["code"].iloc[j]))
    for piece in _pieces(shapely.difference(old, shape)):
        if piece.area <= tol:
            continue
        edges = [0.0 if j == i else shared_edge(piece, geoms[j]) for j in range(len(geoms))]
        j = int(np.argmax(edges))
        if edges[j] <= 0:
            raise RedrawError(f"reshaping grid {code} would leave a gap nobody borders", piece)
        geoms[j] = shapely.union_all([geoms[j], piece])
        changed.add(str(grids["code"].iloc[j]))
    geoms[i] = shape
    out = grids.copy()
    out["geometry"] = [_multi(g) for g in geoms]
    return Edit(out, kept=[code], changed=sorted(changed))


def move_boundary(grids: gpd.GeoDataFrame, a: str, b: str, line: LineString) -> Edit:
    """Redraw the boundary between adjacent grids ``a`` and ``b`` along ``line``, which must
    cross their union from edge to edge."""
    ia, ib = _row(grids, a), _row(grids, b)
    ga, gb = grids.geometry.iloc[ia], grids.geometry.iloc[ib]
    union = shapely.union_all([ga, gb])
    if len(_pieces(union)) > 1:
        raise RedrawError(f"grids {a} and {b} are not neighbours", union)
    pieces = _pieces(split_by_line(union, line))
    if len(pieces) != 2:
        raise RedrawError(
            f"the new boundary must cut the pair {a}/{b} in exactly two ({len(pieces)} pieces)",
            line,
        )
    p, q = pieces
    straight = p.intersection(ga).area + q.intersection(gb).area
    crossed = p.intersection(gb).area + q.intersection(ga).area
    new_a, new_b = (p, q) if straight >= crossed else (q, p)
    out = grids.copy()
    geoms = list(out.geometry)
    geoms[ia], geoms[ib] = _multi(new_a), _multi(new_b)
    out["geometry"] = geoms
    return Edit(out, kept=[a, b], changed=[a, b])
