"""Gridding: cut every demo village into 草原110's 8 balanced squares, then map all of Xilingol's
H3 res-9 fine cells to those grids; the baseline is a bare H3 polygon-to-cells call on the county
boundaries in the same run (h3-py, and h3ronpy's vectorised one).

``--quick``: one county (锡林浩特市) instead of the whole league.
"""

from __future__ import annotations

import time

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np

from api.demo import COUNTIES_FILE, read_nbs
from bench.common import write_result
from gis.boundaries import read_boundaries
from gis.gridcells import cells_in_boundary, grid_cells
from gis.grids import make_grids
from gis.synthetic import demo_hierarchy

QUICK_COUNTY = "152502"  # 锡林浩特市
RESOLUTION = 9
PER_VILLAGE = 8


def _bare_h3(counties: gpd.GeoDataFrame) -> int:
    return sum(
        len(h3i.h3shape_to_cells_experimental(h3i.geo_to_h3shape(g), RESOLUTION, "center"))
        for g in counties.geometry
    )


def _bare_h3ronpy(counties: gpd.GeoDataFrame) -> int:
    return sum(len(cells_in_boundary(g, RESOLUTION)) for g in counties.geometry)


def run(quick: bool) -> None:
    counties, _ = read_boundaries(COUNTIES_FILE)
    start = time.perf_counter()
    hierarchy = demo_hierarchy(
        counties, read_nbs("counties"), read_nbs("townships"), read_nbs("villages")
    )
    build_s = time.perf_counter() - start
    villages = hierarchy[hierarchy["level"] == "village"][["code", "geometry"]]
    county_polys = hierarchy[hierarchy["level"] == "county"]
    if quick:
        villages = villages[villages["code"].str.startswith(QUICK_COUNTY)]
        county_polys = county_polys[county_polys["code"].str.startswith(QUICK_COUNTY)]
    print(f"demo hierarchy built in {build_s:.1f}s; {len(villages)} villages", flush=True)

    start = time.perf_counter()
    grids = make_grids(villages, method="balanced", per_village=PER_VILLAGE)
    balanced_s = time.perf_counter() - start
    spread = grids.groupby("village_code")["area_m2"].agg(lambda a: float((a / a.mean()).max()))
    print(f"balanced split: {len(grids)} grids in {balanced_s:.1f}s", flush=True)

    start = time.perf_counter()
    cells = grid_cells(grids, resolution=RESOLUTION)
    fine_cells_s = time.perf_counter() - start
    start = time.perf_counter()
    with_boundaries = grid_cells(grids, resolution=RESOLUTION, boundaries=villages)
    fine_cells_given_boundaries_s = time.perf_counter() - start
    print(f"fine cells: {len(cells)} in {fine_cells_s:.1f}s", flush=True)

    start = time.perf_counter()
    bare = _bare_h3(county_polys)
    baseline_s = time.perf_counter() - start
    start = time.perf_counter()
    bare_rs = _bare_h3ronpy(county_polys)
    baseline_h3ronpy_s = time.perf_counter() - start

    write_result(
        "gridding",
        {
            "quick": quick,
            "villages": len(villages),
            "grids": len(grids),
            "per_village": PER_VILLAGE,
            "balanced_split_s": round(balanced_s, 3),
            "balanced_villages_per_s": round(len(villages) / balanced_s, 1),
            "balanced_max_area_ratio_to_mean": round(float(spread.max()), 6),
            "resolution": RESOLUTION,
            "fine_cells": len(cells),
            "fine_cells_s": round(fine_cells_s, 3),
            "fine_cells_per_s": round(len(cells) / fine_cells_s),
            "fine_cells_given_boundaries_s": round(fine_cells_given_boundaries_s, 3),
            "fine_cells_equal_given_boundaries": bool(
                np.array_equal(cells["h3"].to_numpy(), with_boundaries["h3"].to_numpy())
            ),
            "baseline": "bare h3 polygon-to-cells (h3-py h3shape_to_cells_experimental, center) "
            "over the county polygons",
            "baseline_cells": bare,
            "baseline_s": round(baseline_s, 3),
            "ratio_to_bare_h3": round(fine_cells_s / baseline_s, 3),
            "baseline_h3ronpy_s": round(baseline_h3ronpy_s, 3),
            "ratio_to_bare_h3ronpy": round(fine_cells_s / baseline_h3ronpy_s, 3),
            "baseline_h3ronpy_cells": bare_rs,
            "demo_hierarchy_s": round(build_s, 3),
        },
    )
