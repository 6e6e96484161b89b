"""Grid division: every method tiles its village exactly (union = boundary, no overlaps, valid,
one piece per grid), keeps its promise (balance, household bounds, cell counts), numbers grids
west→east then north→south, and refuses bad input — on random villages around Xilingol."""

from __future__ import annotations

import math

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon, box

from gis.gridcells import cells_in_boundary, grid_cells
from gis.gridmethods import SQUARE_SLIVER_SHARE
from gis.grids import GridError, grid_rows, make_grids, number_grids

CODE = "152502100201"
OTHER = "152502100202"
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _star(lon0: float, lat0: float, area_km2: float, n: int, rough: float, seed: int) -> Polygon:
    rng = np.random.default_rng(seed)
    radius = math.sqrt(area_km2 * 1e6 / math.pi)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * (1 + rough * rng.uniform(-1, 1, n))
    x, y = r * np.cos(angles), r * np.sin(angles)
    lon = lon0 + x / (111_320 * math.cos(math.radians(lat0)))
    lat = lat0 + y / 110_574
    poly = shapely.make_valid(Polygon(np.column_stack([lon, lat])))
    return max((p for p in shapely.get_parts(poly) if isinstance(p, Polygon)), key=lambda p: p.area)


@st.composite
def villages(draw: st.DrawFn) -> Polygon:
    """Star-shaped villages of about 5–200 km² at 115–117 E, 43–45 N, sometimes concave."""
    return _star(
        draw(st.floats(min_value=115.0, max_value=117.0)),
        draw(st.floats(min_value=43.0, max_value=45.0)),
        draw(st.floats(min_value=5.0, max_value=200.0)),
        draw(st.integers(min_value=5, max_value=40)),
        draw(st.floats(min_value=0.0, max_value=0.45)),
        draw(st.integers(min_value=0, max_value=2**32 - 1)),
    )


def frame(
    *geoms: Polygon | MultiPolygon, codes: tuple[str, ...] = (CODE, OTHER)
) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"code": list(codes[: len(geoms)])}, geometry=list(geoms), crs=4326)


def households_in(poly: Polygon, n: int, seed: int, code: str = CODE) -> gpd.GeoDataFrame:
    """``n`` households in 1–4 clusters inside ``poly`` (rejection sampling in lon/lat)."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = poly.bounds
    k = int(rng.integers(1, 5))
    centres = [poly.representative_point()]
    while len(centres) < k:
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if poly.contains(p):
            centres.append(p)
    pts: list[tuple[float, float]] = []
    spread = 0.15 * min(maxx - minx, maxy - miny)
    while len(pts) < n:
        c = centres[int(rng.integers(len(centres)))]
        x, y = c.x + rng.normal(0, spread), c.y + rng.normal(0, spread)
        if shapely.contains_xy(poly, x, y):
            pts.append((x, y))
    xy = np.array(pts)
    return gpd.GeoDataFrame(
        {"village_code": [code] * n}, geometry=shapely.points(xy[:, 0], xy[:, 1]), crs=4326
    )


def check_tiling(
    grids: gpd.GeoDataFrame, village: Polygon | MultiPolygon, code: str = CODE
) -> None:
    """Union = boundary (1e-6 relative), no overlaps, valid, well-formed codes in order."""
    mine = grids[grids["village_code"] == code]
    geoms = mine.geometry.to_numpy()
    total = village.area
    assert shapely.symmetric_difference(shapely.union_all(geoms), village).area <= 1e-6 * total
    assert abs(shapely.area(geoms).sum() - total) <= 1e-6 * total  # no overlaps
    assert shapely.is_valid(geoms).all()
    assert not shapely.is_empty(geoms).any()
    assert list(mine["seq"]) == list(range(1, len(mine) + 1))
    assert all(len(c) == 15 and c.isdigit() and c.startswith(code) for c in mine["code"])
    assert mine["code"].is_unique
    assert list(mine["code"]) == sorted(mine["code"])
    assert list(grids.columns) == [
        "village_code",
        "seq",
        "code",
        "area_m2",
        "households",
        "geometry",
    ]
    assert grids.crs.to_epsg() == 4326
    assert (mine["area_m2"] > 0).all()


def all_polygons(grids: gpd.GeoDataFrame) -> bool:
    return bool((grids.geometry.geom_type == "Polygon").all())


# --- balanced --------------------------------------------------------------------------------


@SLOW
@given(villages(), st.integers(min_value=1, max_value=12))
def test_balanced_gives_n_contiguous_equal_parts(village: Polygon, n: int) -> None:
    grids = make_grids(frame(village), method="balanced", per_village=n)
    assert len(grids) == n
    check_tiling(grids, village)
    assert all_polygons(grids)
    area = grids["area_m2"].to_numpy()
    assert np.all(np.abs(area / area.mean() - 1) <= 0.05)
    assert (grids["households"] == 0).all()


@SLOW
@given(villages(), st.integers(min_value=2, max_value=10), st.integers(0, 2**16))
def test_balanced_by_households(village: Polygon, n: int, seed: int) -> None:
    hh = households_in(village, 300, seed)
    grids = make_grids(frame(village), method="balanced", per_village=n, households=hh)
    check_tiling(grids, village)
    assert all_polygons(grids)
    counts = grids["households"].to_numpy()
    assert counts.sum() == 300
    assert np.all(np.abs(counts - 300 / n) <= max(0.05 * 300 / n, 1.0))


@settings(max_examples=10, deadline=None)
@given(villages())
def test_same_input_same_output(village: Polygon) -> None:
    for kw in ({"method": "balanced", "per_village": 8}, {"method": "squares", "size_m": 2500}):
        a = make_grids(frame(village), **kw)  # type: ignore[arg-type]
        b = make_grids(frame(village), **kw)  # type: ignore[arg-type]
        assert list(a["code"]) == list(b["code"])
        assert all(x.equals_exact(y, 0.0) for x, y in zip(a.geometry, b.geometry, strict=True))


# --- squares ---------------------------------------------------------------------------------


@SLOW
@given(villages(), st.floats(min_value=1_000, max_value=6_000))
def test_squares_tile_and_have_no_slivers(village: Polygon, size: float) -> None:
    grids = make_grids(frame(village), method="squares", size_m=size)
    check_tiling(grids, village)
    assert all_polygons(grids)
    if len(grids) > 1:  # every grid holds at least the 5 % core of one square
        assert grids["area_m2"].min() >= 0.99 * SQUARE_SLIVER_SHARE * size**2
    assert grids["area_m2"].max() <= 2.0 * size**2  # a square plus merged slivers


def test_squares_inside_are_full_squares() -> None:
    village = _star(116.0, 44.0, 150.0, 30, 0.1, 7)
    grids = make_grids(frame(village), method="squares", size_m=2_000)
    full = np.isclose(grids["area_m2"], 4e6, rtol=1e-3)
    assert full.sum() >= 15


# --- h3 --------------------------------------------------------------------------------------


@SLOW
@given(villages(), st.sampled_from(["center", "full", "overlap"]), st.sampled_from([7, 8]))
def test_h3_cells_clipped_to_the_boundary(village: Polygon, contain: str, res: int) -> None:
    grids = make_grids(frame(village), method="h3", resolution=res, containment=contain)
    check_tiling(grids, village)
    assert all_polygons(grids)
    chosen = h3i.h3shape_to_cells_experimental(h3i.geo_to_h3shape(village), res, contain)
    if chosen and contain != "overlap":  # one grid per chosen cell, the other clips merged in
        assert len(grids) == len(chosen)
    elif chosen:  # a cell that only touches the boundary has no clip
        assert 0 < len(grids) <= len(chosen)
    else:  # no cell chosen: falls back to every overlapping clip
        assert len(grids) >= 1


def test_h3_center_keeps_one_grid_per_centre_cell() -> None:
    village = _star(116.3, 43.9, 120.0, 25, 0.2, 3)
    grids = make_grids(frame(village), method="h3", resolution=8)
    centres = h3i.h3shape_to_cells_experimental(h3i.geo_to_h3shape(village), 8, "center")
    assert len(grids) == len(centres)
    hexagons = {h3i.latlng_to_cell(p.y, p.x, 8) for p in grids.geometry.representative_point()}
    assert len(hexagons) == len(grids)


@SLOW
@given(villages(), st.integers(min_value=2, max_value=15))
def test_h3_cells_grouped_into_contiguous_grids(village: Polygon, k: int) -> None:
    grids = make_grids(frame(village), method="h3", resolution=8, cells_per_grid=k)
    check_tiling(grids, village)
    assert all_polygons(grids)  # each group is one piece
    cells = len(make_grids(frame(village), method="h3", resolution=8))  # one grid per cell
    assert len(grids) <= max(1, math.ceil(cells / ((k + 1) // 2)))  # no group under k/2 cells


# --- households ------------------------------------------------------------------------------


@SLOW
@given(villages(), st.integers(min_value=51, max_value=600), st.integers(0, 2**16))
def test_household_groups_hold_5_to_50(village: Polygon, n: int, seed: int) -> None:
    hh = households_in(village, n, seed)
    grids = make_grids(frame(village), method="households", households=hh)
    check_tiling(grids, village)
    assert all_polygons(grids)
    assert grids["households"].sum() == n
    assert grids["households"].between(5, 50).all()


def test_household_bounds_are_parameters() -> None:
    village = _star(116.0, 44.0, 40.0, 20, 0.2, 11)
    hh = households_in(village, 240, 5)
    grids = make_grids(
        frame(village), method="households", households=hh, min_households=10, max_households=20
    )
    assert grids["households"].between(10, 20).all()
    assert grids["households"].sum() == 240


def test_a_village_with_too_few_households_is_one_grid() -> None:
    village = _star(116.0, 44.0, 40.0, 20, 0.2, 11)
    grids = make_grids(frame(village), method="households", households=households_in(village, 3, 1))
    assert len(grids) == 1
    assert grids["households"].iloc[0] == 3
    assert grids.geometry.iloc[0].equals(village)


def test_household_counts_weighted_and_located() -> None:
    village = _star(116.0, 44.0, 40.0, 20, 0.2, 11)
    hh = households_in(village, 120, 9).drop(columns="village_code")  # placed by location
    hh["count"] = 2
    grids = make_grids(frame(village), method="households", households=hh)
    assert grids["households"].sum() == 240
    assert grids["households"].between(5, 50).all()


def test_a_point_with_more_households_than_a_group_is_refused() -> None:
    village = _star(116.0, 44.0, 40.0, 20, 0.2, 11)
    hh = households_in(village, 10, 1)
    hh["count"] = [60] + [1] * 9
    with pytest.raises(GridError, match="more than max_households"):
        make_grids(frame(village), method="households", households=hh)


# --- several villages, multipart, progress ---------------------------------------------------


def test_several_villages_each_tiled_and_numbered() -> None:
    a, b = _star(116.0, 44.0, 60.0, 20, 0.3, 1), _star(116.3, 44.2, 30.0, 12, 0.2, 2)
    calls: list[int] = []
    grids = make_grids(frame(a, b), method="balanced", per_village=8, progress=calls.append)
    assert calls == [1, 1]
    check_tiling(grids, a, CODE)
    check_tiling(grids, b, OTHER)
    assert list(grids["code"]) == sorted(grids["code"])
    assert grids.groupby("village_code").size().to_dict() == {CODE: 8, OTHER: 8}


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "balanced", "per_village": 5},
        {"method": "squares", "size_m": 1500},
        {"method": "h3", "resolution": 8},
        {"method": "h3", "resolution": 8, "containment": "full", "cells_per_grid": 6},
    ],
)
def test_multipart_village(kw: dict[str, object]) -> None:
    islands = MultiPolygon(
        [_star(116.0, 44.0, 40.0, 16, 0.2, 1), _star(116.2, 44.0, 2.0, 10, 0.1, 2)]
    )
    grids = make_grids(frame(islands), **kw)  # type: ignore[arg-type]
    check_tiling(grids, islands)


def test_single_part_multipolygon_gives_polygons() -> None:
    village = MultiPolygon([_star(116.0, 44.0, 50.0, 20, 0.3, 4)])
    grids = make_grids(frame(village), method="balanced", per_village=8)
    assert all_polygons(grids)


# --- numbering -------------------------------------------------------------------------------


def test_numbering_reads_west_to_east_then_north_to_south() -> None:
    rng = np.random.default_rng(0)
    cells = [(col, row) for row in range(3) for col in range(4)]  # row 0 is the north row
    boxes = [
        box(116 + 0.01 * c, 44 - 0.01 * r, 116.01 + 0.01 * c, 44.01 - 0.01 * r) for c, r in cells
    ]
    shuffled = rng.permutation(len(boxes))
    grids = gpd.GeoDataFrame(
        {"village_code": [CODE] * 12}, geometry=[boxes[i] for i in shuffled], crs=4326
    )
    numbered = number_grids(grids)
    expected = [boxes.index(g) for g in numbered.geometry]
    assert expected == list(range(12))
    assert numbered["code"].iloc[0] == CODE + "001"
    assert numbered["code"].iloc[-1] == CODE + "012"


def test_ragged_rows_still_group_by_band() -> None:
    # centroids wobble by a fifth of a grid height: still one row each
    x = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    y = np.array([10.0, 10.2, 9.8, 9.0, 8.8, 9.1])
    rows = grid_rows(x, y, np.ones(6))
    assert list(rows) == [0, 0, 0, 1, 1, 1]


@SLOW
@given(villages(), st.sampled_from(["balanced", "squares"]))
def test_codes_follow_rows_of_centroids(village: Polygon, method: str) -> None:
    grids = make_grids(frame(village), method=method, per_village=9, size_m=2_500)
    cent = shapely.centroid(grids.geometry.to_numpy())
    x, y = shapely.get_x(cent), shapely.get_y(cent)
    bounds = shapely.bounds(grids.geometry.to_numpy())
    rows = grid_rows(x, y, bounds[:, 3] - bounds[:, 1])
    # in code order: rows never go back north, and inside a row x never goes back west
    assert np.all(np.diff(rows) >= 0)
    same = np.diff(rows) == 0
    assert np.all(np.diff(x)[same] >= 0)
    # rows are bands: every centroid of a row lies south of every centroid of the row before
    by_row = pd.Series(y).groupby(rows)
    assert np.all(by_row.max().to_numpy()[1:] < by_row.min().to_numpy()[:-1])


def test_more_than_999_grids_is_refused() -> None:
    village = _star(116.0, 44.0, 150.0, 20, 0.1, 1)
    with pytest.raises(GridError, match="999"):
        make_grids(frame(village), method="h3", resolution=9)
    with pytest.raises(GridError, match="999"):
        make_grids(frame(village), method="squares", size_m=300)


# --- fine-cell membership --------------------------------------------------------------------


@SLOW
@given(villages(), st.sampled_from(["balanced", "squares", "h3"]))
def test_membership_counts_equal_cells_in_boundary(village: Polygon, method: str) -> None:
    grids = make_grids(frame(village), method=method, per_village=8, size_m=3_000, resolution=7)
    members = grid_cells(grids, resolution=9)
    expected = cells_in_boundary(village, 9)
    assert members["h3"].is_unique
    assert np.array_equal(np.sort(members["h3"].to_numpy()), expected)
    assert set(members["grid"]) <= set(grids["code"])
    assert members["h3"].dtype == np.int64
    # every centre lies in (or on the edge of) the grid it is mapped to
    sample = members.iloc[:: max(1, len(members) // 200)]
    by_code = dict(zip(grids["code"], grids.geometry, strict=True))
    for cell, code in zip(sample["h3"], sample["grid"], strict=True):
        lat, lon = h3i.cell_to_latlng(int(cell))
        assert by_code[code].distance(Point(lon, lat)) < 1e-9


def test_membership_of_two_villages_with_given_boundaries() -> None:
    a, b = _star(116.0, 44.0, 60.0, 20, 0.3, 1), _star(116.3, 44.2, 30.0, 12, 0.2, 2)
    villages_frame = frame(a, b)
    grids = make_grids(villages_frame, method="balanced", per_village=8)
    members = grid_cells(grids, boundaries=villages_frame)
    per_village = members["grid"].str[:12].value_counts().to_dict()
    assert per_village == {CODE: len(cells_in_boundary(a)), OTHER: len(cells_in_boundary(b))}
    assert members.equals(grid_cells(grids))


@settings(max_examples=20, deadline=None)
@given(villages())
def test_vectorised_polyfill_matches_h3(village: Polygon) -> None:
    ours = cells_in_boundary(village, 8)
    theirs = np.sort(np.array(h3i.h3shape_to_cells(h3i.geo_to_h3shape(village), 8), dtype=np.int64))
    assert np.array_equal(ours, theirs)


# --- bad input -------------------------------------------------------------------------------

GOOD = _star(116.0, 44.0, 20.0, 12, 0.2, 1)


@pytest.mark.parametrize(
    ("villages_", "kw", "message"),
    [
        (frame(GOOD), {"method": "voronoi"}, "choose one of: balanced, h3, households, squares"),
        (frame(GOOD), {"method": "balanced", "per_village": 0}, "per_village"),
        (frame(GOOD), {"method": "balanced"}, "per_village"),
        (frame(GOOD), {"method": "balanced", "per_village": 5000}, "999"),
        (
            frame(GOOD),
            {"method": "balanced", "per_village": 8, "min_part_m2": 5e6},
            "cannot hold 8 grids",
        ),
        (frame(GOOD), {"method": "squares"}, "size_m"),
        (frame(GOOD), {"method": "squares", "size_m": -5.0}, "size_m"),
        (frame(GOOD), {"method": "h3", "containment": "inside"}, "containment"),
        (frame(GOOD), {"method": "h3", "resolution": 16}, "resolution"),
        (frame(GOOD), {"method": "households"}, "needs household points"),
        (frame(Polygon()), {"method": "balanced", "per_village": 2}, "empty"),
        (
            frame(GOOD.boundary),  # type: ignore[arg-type]
            {"method": "balanced", "per_village": 2},
            "LineString",
        ),
        (
            frame(Polygon([(116, 44), (116.1, 44.1), (116.1, 44), (116, 44.1)])),
            {"method": "balanced", "per_village": 2},
            "invalid boundary",
        ),
        (frame(GOOD).to_crs(32650), {"method": "balanced", "per_village": 2}, "EPSG:32650"),
        (
            gpd.GeoDataFrame(
                {"code": [CODE]}, geometry=[box(500_000, 4_800_000, 510_000, 4_810_000)], crs=4326
            ),
            {"method": "balanced", "per_village": 2},
            "outside the lon/lat range",
        ),
        (
            gpd.GeoDataFrame({"code": [CODE]}, geometry=[GOOD]),
            {"method": "balanced", "per_village": 2},
            "no CRS",
        ),
        (
            frame(GOOD, codes=("152502100000",)),
            {"method": "balanced", "per_village": 2},
            "township",
        ),
        (frame(GOOD, codes=("15250210020",)), {"method": "balanced", "per_village": 2}, "12-digit"),
        (
            frame(GOOD, codes=("15250210020X",)),
            {"method": "balanced", "per_village": 2},
            "12-digit",
        ),
        (
            frame(GOOD, GOOD, codes=(CODE, CODE)),
            {"method": "balanced", "per_village": 2},
            "duplicate",
        ),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    villages_: gpd.GeoDataFrame, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(GridError, match=message):
        make_grids(villages_, **kw)  # type: ignore[arg-type]


def test_households_in_another_crs_are_refused() -> None:
    hh = households_in(GOOD, 20, 1).to_crs(32650)
    with pytest.raises(GridError, match="households are in EPSG:32650"):
        make_grids(frame(GOOD), method="households", households=hh)


def test_bad_input_returns_nothing_partial() -> None:
    good, bad = frame(GOOD), frame(Polygon(), codes=(OTHER,))
    with pytest.raises(GridError, match=OTHER):
        make_grids(pd.concat([good, bad], ignore_index=True), method="balanced", per_village=2)
