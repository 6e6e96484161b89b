"""Grid division (网格划分) of villages, and grid numbering.

``make_grids`` cuts every village of a GeoDataFrame into grids by one of four methods (the
per-village functions and how each handles boundary slivers are in ``gis.gridmethods``):

- ``h3``: H3 cells clipped to the boundary, optionally grouped into contiguous sets of cells;
- ``squares`` (方格): a regular metric grid in the local UTM zone, clipped;
- ``balanced``: exactly N contiguous parts of equal area or households (草原110's 8 squares);
- ``households`` (片区): groups of 5–50 neighbouring households (治安中心户).

Every result tiles its village: valid polygons, no overlaps, union = boundary. Grids are numbered
west→east then north→south (``number_grids``); a grid code is the village code + 3 digits.
Input and output are EPSG:4326; squares, area cuts and ``area_m2`` are metric in the village's
UTM zone (household cuts use a local plane, see ``gis.gridmethods.balanced_grids``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from gis.codes import CodeError, parse_nbs
from gis.gridmethods import (
    CONTAINMENT,
    GridError,
    balanced_grids,
    check_wgs84,
    h3_grids,
    household_grids,
    square_grids,
)
from gis.gridpieces import Geom, IntArray, local_epsg, utm_area_m2

__all__ = [
    "GridError",
    "balanced_grids",
    "grid_rows",
    "h3_grids",
    "household_grids",
    "make_grids",
    "number_grids",
    "square_grids",
]

METHODS = ("balanced", "h3", "households", "squares")
GRID_COLUMNS = ["village_code", "seq", "code", "area_m2", "households", "geometry"]
MAX_GRIDS = 999  # the sequence has 3 digits
ROW_BAND = 0.5  # a row holds centroids within this many median grid heights of its top


def _village_code(raw: object) -> str:
    code = str(raw).strip()
    if len(code) != 12 or not code.isdigit():
        raise GridError(f"village code {code!r} must be a 12-digit NBS code")
    try:
        level = parse_nbs(code).level
    except CodeError as exc:
        raise GridError(f"village code {code!r} is not a valid NBS code: {exc}") from exc
    if level != "village":
        raise GridError(f"code {code!r} is a {level} code, not a 12-digit village code")
    return code


def _boundary(code: str, geom: object) -> Geom:
    if geom is None or not isinstance(geom, Polygon | MultiPolygon):
        kind = "missing" if geom is None else getattr(geom, "geom_type", type(geom).__name__)
        raise GridError(f"village {code}: boundary is {kind}, expected a Polygon or MultiPolygon")
    if geom.is_empty:
        raise GridError(f"village {code}: the boundary is empty")
    if not geom.is_valid:
        raise GridError(f"village {code}: invalid boundary ({shapely.is_valid_reason(geom)})")
    if geom.area <= 0:
        raise GridError(f"village {code}: the boundary is empty (zero area)")
    if isinstance(geom, MultiPolygon) and len(geom.geoms) == 1:
        return geom.geoms[0]
    return geom


def _villages(villages: gpd.GeoDataFrame) -> list[tuple[str, Geom]]:
    if not isinstance(villages, gpd.GeoDataFrame):
        raise GridError("villages must be a GeoDataFrame with columns code and geometry")
    if "code" not in villages.columns:
        raise GridError("villages need a 'code' column (12-digit village codes)")
    check_wgs84(villages, "villages")
    out = [
        (code, _boundary(code, geom))
        for code, geom in zip(
            (_village_code(c) for c in villages["code"]), villages.geometry, strict=True
        )
    ]
    codes = [c for c, _ in out]
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise GridError(f"duplicate village codes: {', '.join(dup[:5])}")
    return out


def _households(
    households: gpd.GeoDataFrame, villages: list[tuple[str, Geom]]
) -> dict[str, NDArray[np.float64]]:
    """Per village code: N×3 (lon, lat, households) of the points inside that village."""
    if not isinstance(households, gpd.GeoDataFrame):
        raise GridError("households must be a GeoDataFrame of points")
    check_wgs84(households, "households")
    geoms = households.geometry.to_numpy()
    if len(geoms) and not (shapely.get_type_id(geoms) == 0).all():
        raise GridError("households must be Point geometries")
    if len(geoms) and shapely.is_empty(geoms).any():
        raise GridError("households contain empty points")
    weight = np.ones(len(households))
    if "count" in households.columns:
        weight = pd.to_numeric(households["count"], errors="coerce").to_numpy(float)
        if not np.isfinite(weight).all() or (weight < 0).any():
            raise GridError("household 'count' must be finite numbers ≥ 0")
    lon, lat = shapely.get_x(geoms), shapely.get_y(geoms)
    index = {code: k for k, (code, _) in enumerate(villages)}
    if "village_code" in households.columns:
        where = households["village_code"].astype(str).map(index).fillna(-1).to_numpy(int)
    else:
        tree = shapely.STRtree(np.asarray([g for _, g in villages], dtype=object))
        pi, vj = tree.query(shapely.points(lon, lat), predicate="intersects")
        order = np.lexsort((vj, pi))  # the lowest village index wins on shared edges
        first = np.unique(pi[order], return_index=True)[1]
        where = np.full(len(geoms), -1)
        where[pi[order][first]] = vj[order][first]
    out: dict[str, NDArray[np.float64]] = {}
    for k, (code, geom) in enumerate(villages):
        mine = np.flatnonzero(where == k)
        mine = mine[shapely.intersects_xy(geom, lon[mine], lat[mine])]
        out[code] = np.column_stack([lon[mine], lat[mine], weight[mine]])
    return out


def _count_households(grids: list[Geom], pts: NDArray[np.float64]) -> NDArray[np.int64]:
    """Households per grid; a point on a shared edge counts for the lower index."""
    owner = np.full(len(pts), -1)
    for k in range(len(grids) - 1, -1, -1):
        owner[shapely.intersects_xy(grids[k], pts[:, 0], pts[:, 1])] = k
    for i in np.flatnonzero(owner < 0):  # a point in a micro-gap of the reprojected edges
        owner[i] = int(np.argmin(shapely.distance(shapely.Point(pts[i, :2]), grids)))
    counts = np.bincount(owner, weights=pts[:, 2], minlength=len(grids))
    return np.rint(counts).astype(np.int64)


def _check_method(
    method: str,
    *,
    per_village: int | None,
    size_m: float | None,
    resolution: int,
    containment: str,
    cells_per_grid: int | None,
    has_households: bool,
    min_households: int,
    max_households: int,
) -> None:
    if method not in METHODS:
        raise GridError(f"unknown grid method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "balanced" and (per_village is None or int(per_village) < 1):
        raise GridError(f"per_village must be an integer ≥ 1 for 'balanced', got {per_village}")
    if method == "balanced" and per_village is not None and per_village > MAX_GRIDS:
        raise GridError(f"per_village={per_village} exceeds {MAX_GRIDS} grids per village")
    if method == "squares" and (size_m is None or not math.isfinite(size_m) or size_m <= 0):
        raise GridError(f"size_m must be a positive number of metres for 'squares', got {size_m}")
    if method == "h3":
        if not 0 <= resolution <= 15:
            raise GridError(f"H3 resolution must be 0–15, got {resolution}")
        if containment not in CONTAINMENT:
            raise GridError(
                f"unknown containment {containment!r}; choose one of: {', '.join(CONTAINMENT)}"
            )
        if cells_per_grid is not None and cells_per_grid < 1:
            raise GridError(f"cells_per_grid must be ≥ 1, got {cells_per_grid}")
    if method == "households":
        if not has_households:
            raise GridError("method 'households' needs household points (households=...)")
        if not 1 <= min_households <= max_households:
            raise GridError(
                "need 1 ≤ min_households ≤ max_households, got "
                f"{min_households} and {max_households}"
            )


def _expected_grids(method: str, geom: Geom, area: float, **kw: float) -> float:
    if method == "squares":
        return area / kw["size_m"] ** 2
    p = geom.representative_point()
    cell = h3.cell_area(h3.latlng_to_cell(p.y, p.x, int(kw["resolution"])), "m^2")
    return area / cell / max(1.0, kw["cells_per_grid"])


def _check_sizes(
    method: str,
    frame: list[tuple[str, Geom]],
    areas: list[float],
    *,
    per_village: int | None,
    min_part_m2: float,
    size_m: float | None,
    resolution: int,
    cells_per_grid: int | None,
) -> None:
    """Refuse, before any work, villages too small for ``per_village`` parts or that would get
    more than 999 grids."""
    for (code, geom), area in zip(frame, areas, strict=True):
        if method == "balanced" and per_village is not None and area / per_village < min_part_m2:
            raise GridError(
                f"village {code} ({area / 1e6:.3f} km²) cannot hold {per_village} grids of at "
                f"least min_part_m2={min_part_m2:g} m²"
            )
        if method in ("squares", "h3"):
            kw = {"size_m": size_m or 1.0, "resolution": resolution}
            n = _expected_grids(method, geom, area, cells_per_grid=cells_per_grid or 1, **kw)
            if n > MAX_GRIDS:
                raise GridError(
                    f"village {code} would get about {n:.0f} grids, more than {MAX_GRIDS} "
                    "(3-digit sequence); use larger squares, a coarser resolution or "
                    "cells_per_grid"
                )


def make_grids(
    villages: gpd.GeoDataFrame,
    *,
    method: str,
    per_village: int | None = None,
    size_m: float | None = None,
    resolution: int = 9,
    containment: str = "center",
    cells_per_grid: int | None = None,
    households: gpd.GeoDataFrame | None = None,
    min_households: int = 5,
    max_households: int = 50,
    min_part_m2: float = 10_000,
    progress: Callable[[int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Cut every village into grids.

    Parameters
    ----------
    villages
        EPSG:4326 frame with ``code`` (12-digit NBS village code) and Polygon/MultiPolygon
        geometry.
    method
        ``h3``, ``squares``, ``balanced`` or ``households`` (see the module notes).
    per_village
        ``balanced``: number of grids per village.
    size_m
        ``squares``: side of a square, metres (UTM).
    resolution, containment, cells_per_grid
        ``h3``: cell resolution (default 9), which cells become grids (``center``, ``full``,
        ``overlap``) and, when > 1, about how many adjacent cells make one grid.
    households
        EPSG:4326 household points, optional ``village_code`` (else placed by location) and
        ``count`` (households per point, default 1). Required by ``households``; balances
        ``balanced`` by households (by area in a village with fewer points than parts);
        counted per grid by every method. Points outside their village (or of a village not
        in ``villages``) are ignored.
    min_households, max_households
        ``households``: bounds of a group. A village with at most ``max_households`` (also one
        with fewer than ``min_households``) is one grid.
    min_part_m2
        ``balanced``: smallest acceptable mean part area, m².
    progress
        Called with 1 after each village (fits ``api.progress.Task.advance``).

    Returns
    -------
    GeoDataFrame
        Columns ``village_code``, ``seq`` (1-based), ``code`` (15 digits), ``area_m2`` (UTM, m²),
        ``households`` (int, 0 without household points), ``geometry`` (EPSG:4326), sorted by
        code. A grid is a MultiPolygon only when its village is multipart or a clip touches the
        rest of the village at a single point (see ``gis.gridmethods``).

    Raises
    ------
    GridError
        For an unknown method, bad parameters, a code that is not a 12-digit village code, an
        empty, non-polygonal or invalid boundary, a CRS other than EPSG:4326, a village too
        small for ``per_village`` parts, more than 999 grids in a village, or household bounds
        that cannot be met. Nothing is returned then.
    """
    _check_method(
        method,
        per_village=per_village,
        size_m=size_m,
        resolution=resolution,
        containment=containment,
        cells_per_grid=cells_per_grid,
        has_households=households is not None,
        min_households=min_households,
        max_households=max_households,
    )
    frame = _villages(villages)
    pts = _households(households, frame) if households is not None else None
    epsgs = [local_epsg(g) for _, g in frame]
    areas = [float(utm_area_m2([g], e)[0]) for (_, g), e in zip(frame, epsgs, strict=True)]
    _check_sizes(
        method,
        frame,
        areas,
        per_village=per_village,
        min_part_m2=min_part_m2,
        size_m=size_m,
        resolution=resolution,
        cells_per_grid=cells_per_grid,
    )
    empty = np.zeros((0, 3))
    codes: list[str] = []
    geoms: list[Geom] = []
    area_m2: list[NDArray[np.float64]] = []
    counts: list[NDArray[np.int64]] = []
    for (code, geom), epsg in zip(frame, epsgs, strict=True):
        mine = pts.get(code, empty) if pts is not None else empty
        if method == "h3":
            parts = h3_grids(
                geom, resolution=resolution, containment=containment, cells_per_grid=cells_per_grid
            )
        elif method == "squares":
            parts = square_grids(geom, size_m=float(size_m or 0))
        elif method == "balanced":
            parts = balanced_grids(
                geom, parts=int(per_village or 1), households=mine if pts is not None else None
            )
        else:
            parts = household_grids(
                geom, mine, min_households=min_households, max_households=max_households
            )
        codes += [code] * len(parts)
        geoms += parts
        area_m2.append(utm_area_m2(parts, epsg))
        counts.append(_count_households(parts, mine) if len(mine) else np.zeros(len(parts), int))
        if progress is not None:
            progress(1)
    out = gpd.GeoDataFrame(
        {
            "village_code": pd.Series(codes, dtype=object),
            "area_m2": np.concatenate(area_m2) if area_m2 else np.zeros(0),
            "households": np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, int),
        },
        geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
        crs="EPSG:4326",
    )
    return number_grids(out)[GRID_COLUMNS]


def grid_rows(
    x: NDArray[np.float64], y: NDArray[np.float64], heights: NDArray[np.float64]
) -> IntArray:
    """Row (0 = northernmost) of each grid centroid for west→east, north→south numbering.

    Rows are bands: the northernmost centroid not yet placed opens a row, which takes every
    unplaced centroid less than ``ROW_BAND`` (½) median grid height south of it. Robust to the
    ragged centroids of clipped or irregular grids; deterministic.
    """
    n = len(y)
    rows = np.zeros(n, dtype=np.int64)
    if n == 0:
        return rows
    positive = heights[heights > 0]
    band = ROW_BAND * float(np.median(positive)) if len(positive) else 0.0
    order = np.lexsort((x, -y))
    row, top = -1, np.inf
    for i in order.tolist():
        if y[i] <= top - band or row < 0:
            row, top = row + 1, float(y[i])
        rows[i] = row
    return rows


def number_grids(grids: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Give each grid its ``seq`` (1-based) and 15-digit ``code``, west→east then north→south
    by centroid rows (``grid_rows``) within its village; returns a copy sorted by code.

    Raises
    ------
    GridError
        Without a ``village_code`` column, or when a village has more than 999 grids.
    """
    if "village_code" not in grids.columns:
        raise GridError("grids need a 'village_code' column")
    out = grids.reset_index(drop=True).copy()
    geoms = out.geometry.to_numpy()
    cent = shapely.centroid(geoms)
    cx, cy = shapely.get_x(cent), shapely.get_y(cent)
    bounds = shapely.bounds(geoms)
    heights = bounds[:, 3] - bounds[:, 1]
    seq = np.zeros(len(out), dtype=np.int64)
    villages = out["village_code"].astype(str).to_numpy()
    for code in sorted(set(villages.tolist())):
        idx = np.flatnonzero(villages == code)
        if len(idx) > MAX_GRIDS:
            raise GridError(
                f"village {code} has {len(idx)} grids, more than {MAX_GRIDS} (3-digit sequence)"
            )
        rows = grid_rows(cx[idx], cy[idx], heights[idx])
        order = np.lexsort((idx, -cy[idx], cx[idx], rows))
        seq[idx[order]] = np.arange(1, len(idx) + 1)
    out["village_code"] = villages
    out["seq"] = seq
    out["code"] = [f"{v}{s:03d}" for v, s in zip(villages, seq, strict=True)]
    return out.sort_values("code", kind="stable").reset_index(drop=True)
