"""Validate a grid layout: do the grids tile their villages exactly, and follow the rules?

Checks, each reported as a ``Violation`` with the offending geometry so a map can show it:
invalid or empty geometry, a grid in several pieces (when its village is one piece), grids
overlapping each other, gaps (village area no grid covers), a grid reaching outside its
village, area or household bounds, a grid without a worker, and codes that are duplicated or
do not follow the rule (the village's 12 digits + a 3-digit sequence, 001–999). Areas are
measured in the village's UTM zone; the tolerance is relative to the village area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from gis.codes import CodeError, parse_grid_code
from gis.crs import utm_crs

DEFAULT_TOLERANCE = 1e-6  # of the village area
DENSIFY_DEG = 0.001  # ≈ 100 m: lon/lat and UTM straight lines then agree to millimetres


@dataclass(frozen=True)
class Violation:
    """One problem: its kind, the grid(s) concerned, why, and where (WGS-84 geometry)."""

    kind: str
    codes: tuple[str, ...]
    reason: str
    geometry: BaseGeometry | None = None
    area_m2: float = 0.0
    village: str | None = None  # the village it was found in (a page re-validating one village
    # replaces that village's problems)

    def feature(self) -> dict[str, Any]:
        return {
            "type": "Feature",
            "properties": {
                "kind": self.kind,
                "codes": list(self.codes),
                "reason": self.reason,
                "area_m2": round(self.area_m2, 1),
                "village": self.village,
            },
            "geometry": None if self.geometry is None else shapely.geometry.mapping(self.geometry),
        }


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.violations

    def feature_collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": [v.feature() for v in self.violations]}

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}


@dataclass(frozen=True)
class Bounds:
    """Optional limits on a grid's area (m²) and households; ``None`` = no limit."""

    min_area_m2: float | None = None
    max_area_m2: float | None = None
    min_households: int | None = None
    max_households: int | None = None
    require_worker: bool = True


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _local(
    geoms: list[BaseGeometry], village: BaseGeometry
) -> tuple[list[BaseGeometry], BaseGeometry, Any]:
    """Project to the village's UTM zone, densified first: a long straight edge in lon/lat is
    a curve in UTM, and comparing chords of sparse edges would invent gaps and overlaps."""
    centre = village.representative_point()
    crs = utm_crs(centre.x, centre.y)
    dense = shapely.segmentize(np.array([village, *geoms], dtype=object), DENSIFY_DEG)
    series = gpd.GeoSeries(list(dense), crs="EPSG:4326").to_crs(crs)
    # the inputs were checked valid in lon/lat; a sliver thinner than the projection's rounding
    # can turn invalid in metres, which only the overlay operations below would notice (GEOS
    # refuses them), so repair it here
    local = [g if g.is_valid else shapely.make_valid(g) for g in series]
    return local[1:], local[0], crs


def _back(geom: BaseGeometry, crs: Any) -> BaseGeometry:
    return gpd.GeoSeries([geom], crs=crs).to_crs("EPSG:4326").iloc[0]


def check_codes(grids: gpd.GeoDataFrame) -> list[Violation]:
    """Codes unique, 15 digits, starting with the grid's village code, sequence 001–999."""
    out: list[Violation] = []
    counts = grids["code"].value_counts()
    for code in counts[counts > 1].index:
        geom = shapely.union_all(grids.loc[grids["code"] == code, "geometry"].to_numpy())
        out.append(
            Violation("duplicate_code", (str(code),), f"code {code} is used by several grids", geom)
        )
    for code, village, geom in zip(
        grids["code"], grids["village_code"], grids.geometry, strict=True
    ):
        try:
            parsed = parse_grid_code(str(code))
        except CodeError as exc:
            out.append(Violation("bad_code", (str(code),), str(exc), geom))
            continue
        if parsed.village != village:
            out.append(
                Violation(
                    "bad_code",
                    (str(code),),
                    f"code {code} does not start with its village code {village}",
                    geom,
                )
            )
    return out


def check_village(
    village_code: str,
    village: BaseGeometry,
    grids: gpd.GeoDataFrame,
    *,
    bounds: Bounds | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[Violation]:
    """Check that ``grids`` (one village's, EPSG:4326, columns code, households, worker_id)
    tile ``village`` and respect ``bounds``."""
    bounds = bounds or Bounds()
    out: list[Violation] = []
    codes = [str(c) for c in grids["code"]]
    raw = list(grids.geometry)
    for code, geom in zip(codes, raw, strict=True):
        if geom is None or geom.is_empty:
            out.append(Violation("empty", (code,), f"grid {code} has no geometry"))
        elif not geom.is_valid:
            out.append(
                Violation("invalid", (code,), f"grid {code}: {shapely.is_valid_reason(geom)}", geom)
            )
    if out:
        return out
    local, vlocal, crs = _local(raw, village)
    v_area = float(vlocal.area)
    tol = tolerance * v_area
    village_parts = len(shapely.get_parts(_polygonal(vlocal)))
    for code, geom, g in zip(codes, local, raw, strict=True):
        pieces = [p for p in shapely.get_parts(geom) if p.area > tol]
        if len(pieces) > max(village_parts, 1) or (village_parts == 1 and len(pieces) > 1):
            out.append(
                Violation("not_contiguous", (code,), f"grid {code} is in {len(pieces)} pieces", g)
            )
        outside = shapely.difference(geom, vlocal)
        if outside.area > tol:
            out.append(
                Violation(
                    "outside_village",
                    (code,),
                    f"grid {code} reaches {outside.area:,.0f} m² outside village {village_code}",
                    _back(outside, crs),
                    float(outside.area),
                )
            )
    tree = shapely.STRtree(local)
    left, right = tree.query(local, predicate="intersects")
    for i, j in zip(left, right, strict=True):
        if i < j:
            inter = shapely.intersection(local[i], local[j])
            if inter.area > tol:
                out.append(
                    Violation(
                        "overlap",
                        (codes[i], codes[j]),
                        f"grids {codes[i]} and {codes[j]} overlap by {inter.area:,.0f} m²",
                        _back(_polygonal(inter), crs),
                        float(inter.area),
                    )
                )
    gap = shapely.difference(vlocal, shapely.union_all(local))
    out.extend(
        Violation(
            "gap",
            (),
            f"{piece.area:,.0f} m² of village {village_code} is in no grid",
            _back(piece, crs),
            float(piece.area),
        )
        for piece in shapely.get_parts(gap)
        if piece.area > tol
    )
    out += _check_bounds(codes, local, raw, grids, bounds)
    return out


def _check_bounds(
    codes: list[str],
    local: list[BaseGeometry],
    raw: list[BaseGeometry],
    grids: gpd.GeoDataFrame,
    bounds: Bounds,
) -> list[Violation]:
    out: list[Violation] = []
    households = grids["households"].to_numpy() if "households" in grids else np.zeros(len(codes))
    workers = grids["worker_id"].to_numpy() if "worker_id" in grids else np.full(len(codes), None)
    for code, geom, g, hh, worker in zip(codes, local, raw, households, workers, strict=True):
        area = float(geom.area)
        if bounds.min_area_m2 is not None and area < bounds.min_area_m2:
            out.append(
                Violation(
                    "area",
                    (code,),
                    f"grid {code} has {area:,.0f} m² < {bounds.min_area_m2:,.0f}",
                    g,
                    area,
                )
            )
        if bounds.max_area_m2 is not None and area > bounds.max_area_m2:
            out.append(
                Violation(
                    "area",
                    (code,),
                    f"grid {code} has {area:,.0f} m² > {bounds.max_area_m2:,.0f}",
                    g,
                    area,
                )
            )
        if bounds.min_households is not None and hh < bounds.min_households:
            out.append(
                Violation(
                    "households",
                    (code,),
                    f"grid {code} has {hh} households < {bounds.min_households}",
                    g,
                )
            )
        if bounds.max_households is not None and hh > bounds.max_households:
            out.append(
                Violation(
                    "households",
                    (code,),
                    f"grid {code} has {hh} households > {bounds.max_households}",
                    g,
                )
            )
        if bounds.require_worker and (worker is None or pd.isna(worker)):
            out.append(Violation("no_worker", (code,), f"grid {code} has no worker (一格一员)", g))
    return out


def validate(
    grids: gpd.GeoDataFrame,
    villages: gpd.GeoDataFrame,
    *,
    bounds: Bounds | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    on_village: Callable[[str], None] | None = None,
) -> Report:
    """Validate a layout: ``grids`` (code, village_code, geometry[, households, worker_id]) and
    the villages they cut (``code``, geometry), both EPSG:4326.

    ``on_village`` is called with each village's code once it is checked (progress bars)."""
    report = Report(
        [
            replace(v, village=str(grids.loc[grids["code"] == v.codes[0], "village_code"].iloc[0]))
            for v in check_codes(grids)
        ]
    )
    by_code = dict(zip(villages["code"], villages.geometry, strict=True))
    for village_code, group in grids.groupby("village_code", sort=True):
        village = by_code.get(village_code)
        if village is None:
            report.violations.append(
                Violation(
                    "unknown_village",
                    tuple(map(str, group["code"])),
                    f"village {village_code} of these grids is not in the layout's area",
                    shapely.union_all(group.geometry.to_numpy()),
                    village=str(village_code),
                )
            )
            continue
        report.violations += [
            replace(v, village=str(village_code))
            for v in check_village(
                str(village_code), village, group, bounds=bounds, tolerance=tolerance
            )
        ]
        if on_village is not None:
            on_village(str(village_code))
    missing = sorted(set(by_code) - set(grids["village_code"]))
    report.violations += [
        Violation("gap", (), f"village {code} has no grids at all", by_code[code], village=code)
        for code in missing
    ]
    return report
