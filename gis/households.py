"""Synthetic household points for the demo (no open household data exists for Xilingol).

Herder households of a pastoral gacha (嘎查) live in a few scattered clusters (winter camps,
a settlement by the road) with some lone homesteads in between; an urban community (社区) is
one or two dense blocks. Points are drawn around settlement centres in the village's UTM zone,
seeded by the village code and ``seed`` so the same input always gives the same points, and kept
only where they fall inside the village boundary (tested in EPSG:4326).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from gis.gridpieces import local_epsg, to_local, xy_to_wgs84

__all__ = ["synthetic_households"]

_MAX_ROUNDS = 60


@dataclass(frozen=True)
class _Pattern:
    """How households of one kind of village are laid out."""

    centres: tuple[int, int]  # number of settlement centres, inclusive range
    spread_m: tuple[float, float]  # cluster standard deviation, metres
    scattered: float  # share of lone households spread uniformly over the village


COMMUNITY = _Pattern(centres=(1, 2), spread_m=(60.0, 160.0), scattered=0.0)
GACHA = _Pattern(centres=(3, 7), spread_m=(250.0, 1200.0), scattered=0.15)
OTHER = _Pattern(centres=(2, 4), spread_m=(120.0, 400.0), scattered=0.05)


def _pattern(code: str) -> _Pattern:
    """By digits 10–12 of the NBS code: 0xx–1xx 社区 community, 2xx–3xx 嘎查/村, others."""
    kind = int(code[9:12])
    return COMMUNITY if kind < 200 else GACHA if kind < 400 else OTHER


def _uniform_inside(local: BaseGeometry, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` points uniformly inside ``local`` (UTM), by rejection in its bounding box."""
    minx, miny, maxx, maxy = local.bounds
    fill = max(local.area / max((maxx - minx) * (maxy - miny), 1e-9), 0.01)
    found: list[NDArray[np.float64]] = []
    have = 0
    for _ in range(_MAX_ROUNDS):
        m = math.ceil((n - have) / fill * 1.3) + 8
        xy = np.column_stack([rng.uniform(minx, maxx, m), rng.uniform(miny, maxy, m)])
        xy = xy[shapely.contains_xy(local, xy[:, 0], xy[:, 1])]
        found.append(xy)
        have += len(xy)
        if have >= n:
            break
    out = np.concatenate(found)[:n] if found else np.zeros((0, 2))
    if len(out) < n:  # a sliver of a village: stack the rest on an inner point
        p = local.representative_point()
        out = np.concatenate([out, np.tile([p.x, p.y], (n - len(out), 1))])
    return out


def _village_points(code: str, geom: BaseGeometry, n: int, seed: int) -> NDArray[np.float64]:
    """``n`` household points (lon, lat) inside ``geom`` (EPSG:4326)."""
    rng = np.random.default_rng([zlib.crc32(code.encode()), seed])
    pattern = _pattern(code)
    epsg = local_epsg(geom)
    local = to_local(geom, epsg)[0]
    size = math.sqrt(local.area)
    k = int(rng.integers(pattern.centres[0], pattern.centres[1] + 1))
    centres = _uniform_inside(local, k, rng)
    share = rng.dirichlet(np.full(k, 2.0))
    spread = np.minimum(rng.uniform(*pattern.spread_m, k), 0.15 * size)
    shapely.prepare(geom)
    found: list[NDArray[np.float64]] = []
    have = 0
    for _ in range(_MAX_ROUNDS):
        m = (n - have) * 2 + 8
        lone = rng.random(m) < pattern.scattered
        which = rng.choice(k, size=m, p=share)
        xy = centres[which] + rng.normal(0.0, 1.0, (m, 2)) * spread[which, None]
        xy[lone] = _uniform_inside(local, int(lone.sum()), rng)
        lonlat = xy_to_wgs84(xy[:, 0], xy[:, 1], epsg)
        lonlat = lonlat[shapely.contains_xy(geom, lonlat[:, 0], lonlat[:, 1])]
        found.append(lonlat)
        have += len(lonlat)
        if have >= n:
            break
    out = np.concatenate(found)[:n]
    if len(out) < n:
        p = geom.representative_point()
        out = np.concatenate([out, np.tile([p.x, p.y], (n - len(out), 1))])
    return out


def synthetic_households(villages: gpd.GeoDataFrame, *, seed: int = 2023) -> gpd.GeoDataFrame:
    """Household points for each village, clustered around a few settlement centres.

    Parameters
    ----------
    villages
        EPSG:4326 frame with ``code`` (12-digit village code), ``households`` (count) and
        Polygon/MultiPolygon geometry.
    seed
        Random seed; with the village code it fixes every point.

    Returns
    -------
    GeoDataFrame
        One row per household: ``village_code``, ``household_no`` (1-based within the village),
        geometry (Point, EPSG:4326, inside the village), in village-code order.

    Raises
    ------
    ValueError
        For missing columns, a CRS other than EPSG:4326, or a negative household count.
    """
    for col in ("code", "households"):
        if col not in villages.columns:
            raise ValueError(f"villages need a {col!r} column")
    if villages.crs is None or villages.crs.to_epsg() != 4326:
        raise ValueError(f"villages must be EPSG:4326, got {villages.crs}")
    codes: list[str] = []
    numbers: list[NDArray[np.int64]] = []
    points: list[NDArray[np.float64]] = []
    rows = sorted(
        zip(villages["code"].astype(str), villages["households"], villages.geometry, strict=True),
        key=lambda r: r[0],
    )
    for code, count, geom in rows:
        n = int(count)
        if n < 0:
            raise ValueError(f"village {code}: negative household count {n}")
        if n == 0 or geom is None or geom.is_empty:
            continue
        points.append(_village_points(code, geom, n, seed))
        codes += [code] * n
        numbers.append(np.arange(1, n + 1))
    xy = np.concatenate(points) if points else np.zeros((0, 2))
    return gpd.GeoDataFrame(
        {
            "village_code": np.asarray(codes, dtype=object),
            "household_no": np.concatenate(numbers) if numbers else np.zeros(0, np.int64),
        },
        geometry=shapely.points(xy[:, 0], xy[:, 1]) if len(xy) else [],
        crs="EPSG:4326",
    )
