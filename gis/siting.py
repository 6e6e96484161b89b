"""Alert-point siting (报警点选址): where to put K alarm phones / informants / cameras.

Two classic location models, solved with ``spopt`` (PuLP + the CBC solver it ships):

- ``mclp`` (maximal covering): maximise the demand within ``radius_m`` of a chosen point. Demand
  points covered by the same set of candidates are merged first (an exact reduction), so the
  model stays small for thousands of households.
- ``pmedian``: minimise the demand-weighted mean distance to the nearest chosen point. Beyond
  ``PMEDIAN_EXACT_MAX`` demand points the model is solved on demand aggregated into at most that
  many weighted bins, and the answer is then improved on the full demand by vertex substitution
  (swap a chosen point for a candidate while the mean distance drops), so it is near-optimal
  rather than proven optimal.

Demand is household points (optionally weighted) or fine-cell centres (``demand_from_cells``).
Distances are straight lines in metres in the UTM zone of the demand's centre. Results are
deterministic for the same input (CBC on one thread; ties in the local search go to the first
candidate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.cells import cell_centres
from gis.crs import utm_epsg
from gis.gridpieces import local_epsg, to_local, xy_to_local, xy_to_wgs84

__all__ = [
    "SitingError",
    "SitingResult",
    "candidate_grid",
    "coverage_of",
    "demand_from_cells",
    "site_alert_points",
]

METHODS = ("mclp", "pmedian")
PMEDIAN_EXACT_MAX = 80


class SitingError(ValueError):
    """Siting cannot run as asked (bad input)."""


@dataclass(frozen=True)
class SitingResult:
    """The chosen alert points and how well they serve the demand."""

    chosen: gpd.GeoDataFrame  # the chosen candidate rows (original index and columns)
    method: str
    k: int
    radius_m: float
    coverage_pct: float  # share of demand weight within radius_m of a chosen point, %
    mean_distance_m: float  # demand-weighted mean distance to the nearest chosen point, m
    nearest: NDArray[np.int64]  # per demand row: position in ``chosen`` of its nearest point
    distance_m: NDArray[np.float64]  # per demand row: distance to that point, m


def _xy(frame: gpd.GeoDataFrame, epsg: int, what: str) -> NDArray[np.float64]:
    """UTM metres of each row: the point, or an inner point of a polygon (village centroid)."""
    if not isinstance(frame, gpd.GeoDataFrame):
        raise SitingError(f"{what} must be a GeoDataFrame")
    if frame.crs is None or frame.crs.to_epsg() != 4326:
        raise SitingError(f"{what} must be EPSG:4326 (lon/lat), got {frame.crs}")
    geoms = frame.geometry.to_numpy()
    if len(geoms) and (shapely.is_missing(geoms) | shapely.is_empty(geoms)).any():
        raise SitingError(f"{what} contain empty geometries")
    pts = np.where(shapely.get_type_id(geoms) == 0, geoms, shapely.point_on_surface(geoms))
    return xy_to_local(shapely.get_x(pts), shapely.get_y(pts), epsg)


def _weights(demand: gpd.GeoDataFrame, column: str | None) -> NDArray[np.float64]:
    if column is None:
        return np.ones(len(demand))
    if column not in demand.columns:
        raise SitingError(f"demand has no column {column!r}")
    w = np.asarray(demand[column], dtype=float)
    if not np.isfinite(w).all() or (w < 0).any():
        raise SitingError(f"demand weights {column!r} must be finite numbers ≥ 0")
    return w


def _epsg(demand: gpd.GeoDataFrame) -> int:
    if len(demand) == 0:
        raise SitingError("demand is empty")
    minx, miny, maxx, maxy = demand.geometry.total_bounds
    return utm_epsg((minx + maxx) / 2, (miny + maxy) / 2)


def _distances(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def _solver() -> object:
    import pulp  # noqa: PLC0415 - heavy; only siting needs it

    # PuLP 3.x ships CBC as PULP_CBC_CMD (deprecated there, to become COIN_CMD in PuLP 4)
    cbc = getattr(pulp, "PULP_CBC_CMD", None) or pulp.COIN_CMD
    return cbc(msg=False, threads=1)


@contextmanager
def _quiet() -> Iterator[None]:
    """PuLP 3.3 warns on every variable spopt creates (its 4.0 API change): thousands a call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _chosen(model: object) -> list[int]:
    return [j for j, var in enumerate(model.fac_vars) if var.value() > 0.5]  # type: ignore[attr-defined]


def _mclp(cost: NDArray[np.float64], w: NDArray[np.float64], radius: float, k: int) -> list[int]:
    from spopt.locate import MCLP  # noqa: PLC0415 - spopt imports ≈ 2 s of libraries

    cover = cost <= radius
    useful = cover.any(axis=1) & (w > 0)
    if not useful.any():
        return list(range(k))
    rows, inverse = np.unique(cover[useful], axis=0, return_inverse=True)
    weight = np.bincount(inverse.ravel(), weights=w[useful], minlength=len(rows))
    reduced = np.where(rows, 0.0, 2.0 * radius + 1.0)
    with _quiet():
        model = MCLP.from_cost_matrix(reduced, weight, service_radius=radius, p_facilities=k)
        return _chosen(model.solve(_solver(), results=False))


def _bins(xy: NDArray[np.float64], w: NDArray[np.float64], most: int) -> tuple[NDArray, NDArray]:
    """Weighted centroids of at most ``most`` square bins of demand."""
    span = np.ptp(xy, axis=0)
    size = max(math.sqrt(max(span[0] * span[1], 1.0) / most), float(span.max()) / most, 1.0)
    while True:
        key = np.floor((xy - xy.min(axis=0)) / size).astype(np.int64)
        _, inverse = np.unique(key, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        n = int(inverse.max()) + 1
        if n <= most:
            break
        size *= 1.25
    total = np.bincount(inverse, weights=w, minlength=n)
    safe = np.where(total > 0, total, 1.0)
    cx = np.bincount(inverse, weights=w * xy[:, 0], minlength=n) / safe
    cy = np.bincount(inverse, weights=w * xy[:, 1], minlength=n) / safe
    return np.column_stack([cx, cy]), total


def _substitute(cost: NDArray[np.float64], w: NDArray[np.float64], chosen: list[int]) -> list[int]:
    """Vertex substitution: best single swap while it lowers the weighted distance sum."""
    sel = list(chosen)
    best = float(w @ cost[:, sel].min(axis=1))
    for _ in range(100 * len(sel)):
        d = cost[:, sel]
        top: tuple[tuple[int, int] | None, float] = (None, best)
        for p in range(len(sel)):
            rest = np.delete(d, p, axis=1).min(axis=1) if len(sel) > 1 else np.full(len(w), np.inf)
            total = w @ np.minimum(rest[:, None], cost)
            total[sel] = np.inf
            c = int(np.argmin(total))
            if total[c] < top[1] - 1e-9 * max(best, 1.0):
                top = ((p, c), float(total[c]))
        if top[0] is None:
            break
        p, c = top[0]
        sel[p] = c
        best = top[1]
    return sorted(sel)


def _pmedian(
    cost: NDArray[np.float64], w: NDArray[np.float64], k: int, xy: NDArray, cand: NDArray
) -> list[int]:
    from spopt.locate import PMedian  # noqa: PLC0415 - spopt imports ≈ 2 s of libraries

    if len(w) <= PMEDIAN_EXACT_MAX:
        small, weight = cost, w
    else:
        centres, weight = _bins(xy, w, PMEDIAN_EXACT_MAX)
        small = _distances(centres, cand)
    keep = weight > 0
    with _quiet():
        model = PMedian.from_cost_matrix(small[keep], weight[keep], p_facilities=k)
        start = _chosen(model.solve(_solver(), results=False))
    return _substitute(cost, w, start)


def site_alert_points(
    demand: gpd.GeoDataFrame,
    candidates: gpd.GeoDataFrame,
    *,
    k: int,
    radius_m: float,
    method: str = "mclp",
    demand_weight: str | None = None,
) -> SitingResult:
    """Choose ``k`` alert points among ``candidates`` to serve ``demand``.

    Parameters
    ----------
    demand
        EPSG:4326 demand points (households, or fine-cell centres from ``demand_from_cells``).
    candidates
        EPSG:4326 candidate locations: points (road points, a ``candidate_grid``), or polygons
        (villages), which stand for an inner point.
    k
        Number of points to choose (1 … number of candidates).
    radius_m
        Service radius, metres: what "covered" means (MCLP objective, and ``coverage_pct``).
    method
        ``mclp`` (maximise covered demand) or ``pmedian`` (minimise mean distance).
    demand_weight
        Column of ``demand`` with weights (e.g. households per point); default 1 per row.

    Returns
    -------
    SitingResult

    Raises
    ------
    SitingError
        For an unknown method, a bad ``k`` or radius, empty inputs, a CRS other than EPSG:4326,
        or bad weights.
    """
    if method not in METHODS:
        raise SitingError(f"unknown siting method {method!r}; choose one of: {', '.join(METHODS)}")
    if not math.isfinite(radius_m) or radius_m <= 0:
        raise SitingError(f"radius_m must be a positive number of metres, got {radius_m}")
    epsg = _epsg(demand)
    xy_d = _xy(demand, epsg, "demand")
    xy_c = _xy(candidates, epsg, "candidates")
    if not 1 <= k <= len(xy_c):
        raise SitingError(f"k must be between 1 and the {len(xy_c)} candidates, got {k}")
    w = _weights(demand, demand_weight)
    cost = _distances(xy_d, xy_c)
    if k == len(xy_c):
        chosen = list(range(k))
    elif method == "mclp":
        chosen = _mclp(cost, w, radius_m, k)
    else:
        chosen = _pmedian(cost, w, k, xy_d, xy_c)
    d = cost[:, chosen]
    nearest = d.argmin(axis=1)
    dist = d[np.arange(len(d)), nearest]
    total = float(w.sum())
    return SitingResult(
        chosen=candidates.iloc[chosen],
        method=method,
        k=k,
        radius_m=float(radius_m),
        coverage_pct=100.0 * float(w[dist <= radius_m].sum()) / total if total else 0.0,
        mean_distance_m=float(w @ dist) / total if total else 0.0,
        nearest=nearest.astype(np.int64),
        distance_m=dist,
    )


def coverage_of(
    points: gpd.GeoDataFrame,
    demand: gpd.GeoDataFrame,
    radius_m: float,
    *,
    demand_weight: str | None = None,
) -> float:
    """Percentage of demand (weight) within ``radius_m`` metres of any of ``points`` — e.g. the
    current alert points, to compare with ``site_alert_points(...).coverage_pct``."""
    epsg = _epsg(demand)
    w = _weights(demand, demand_weight)
    if len(points) == 0 or w.sum() == 0:
        return 0.0
    dist = _distances(_xy(demand, epsg, "demand"), _xy(points, epsg, "points")).min(axis=1)
    return 100.0 * float(w[dist <= radius_m].sum()) / float(w.sum())


def candidate_grid(village: BaseGeometry, spacing_m: float) -> gpd.GeoDataFrame:
    """Candidate points on a ``spacing_m`` square lattice (local UTM) inside ``village``
    (EPSG:4326 polygon); an inner point when the lattice misses a small village.

    Returns a GeoDataFrame with ``candidate`` (0-based) and Point geometry, EPSG:4326.
    """
    if not math.isfinite(spacing_m) or spacing_m <= 0:
        raise SitingError(f"spacing_m must be a positive number of metres, got {spacing_m}")
    if village.is_empty or village.geom_type not in ("Polygon", "MultiPolygon"):
        raise SitingError("village must be a non-empty Polygon or MultiPolygon (EPSG:4326)")
    epsg = local_epsg(village)
    minx, miny, maxx, maxy = to_local(village, epsg)[0].bounds
    xs = np.arange(math.floor(minx / spacing_m), math.ceil(maxx / spacing_m) + 1) * spacing_m
    ys = np.arange(math.floor(miny / spacing_m), math.ceil(maxy / spacing_m) + 1) * spacing_m
    gx, gy = np.meshgrid(xs + spacing_m / 2, ys[::-1] + spacing_m / 2)
    lonlat = xy_to_wgs84(gx.ravel(), gy.ravel(), epsg)
    lonlat = lonlat[shapely.contains_xy(village, lonlat[:, 0], lonlat[:, 1])]
    if len(lonlat) == 0:
        p = village.representative_point()
        lonlat = np.array([[p.x, p.y]])
    return gpd.GeoDataFrame(
        {"candidate": np.arange(len(lonlat))},
        geometry=shapely.points(lonlat[:, 0], lonlat[:, 1]),
        crs="EPSG:4326",
    )


def demand_from_cells(cells: NDArray[np.int64]) -> gpd.GeoDataFrame:
    """Fine-cell centres as demand points: ``h3`` (int64) and Point geometry, EPSG:4326."""
    arr = np.asarray(cells, dtype=np.int64)
    lon, lat = cell_centres(arr)
    return gpd.GeoDataFrame({"h3": arr}, geometry=shapely.points(lon, lat), crs="EPSG:4326")
