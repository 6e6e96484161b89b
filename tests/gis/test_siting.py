"""Alert-point siting: the optimal set covers at least as much as any set it could have chosen
(MCLP), is as close on average (p-median), matches brute force on small cases, is deterministic
and fast enough for a village, and refuses bad input."""

from __future__ import annotations

import itertools
import math
import time

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from gis.siting import (
    SitingError,
    candidate_grid,
    coverage_of,
    demand_from_cells,
    site_alert_points,
)

LON0, LAT0 = 116.0, 44.0
M_PER_DEG_LON = 111_320 * math.cos(math.radians(LAT0))
M_PER_DEG_LAT = 110_574


def points(xy_m: np.ndarray, **columns: object) -> gpd.GeoDataFrame:
    """Points given in metres east/north of (116 E, 44 N)."""
    lon = LON0 + xy_m[:, 0] / M_PER_DEG_LON
    lat = LAT0 + xy_m[:, 1] / M_PER_DEG_LAT
    return gpd.GeoDataFrame(columns, geometry=shapely.points(lon, lat), crs=4326)


def village(size_m: float = 12_000) -> Polygon:
    h = size_m / 2
    return Polygon(
        [
            (LON0 - h / M_PER_DEG_LON, LAT0 - h / M_PER_DEG_LAT),
            (LON0 + h / M_PER_DEG_LON, LAT0 - h / M_PER_DEG_LAT),
            (LON0 + h / M_PER_DEG_LON, LAT0 + h / M_PER_DEG_LAT),
            (LON0 - h / M_PER_DEG_LON, LAT0 + h / M_PER_DEG_LAT),
        ]
    )


def clustered(n: int, seed: int, spread_m: float = 5_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread_m, spread_m, (4, 2))
    return centres[rng.integers(0, 4, n)] + rng.normal(0, 800, (n, 2))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**16), st.integers(1, 6), st.floats(min_value=500, max_value=4_000))
def test_mclp_covers_at_least_the_current_points(seed: int, k: int, radius: float) -> None:
    rng = np.random.default_rng(seed)
    demand = points(clustered(200, seed))
    current = points(rng.uniform(-6_000, 6_000, (k, 2)))
    grid = candidate_grid(village(), 2_000)
    candidates = gpd.GeoDataFrame(geometry=list(grid.geometry) + list(current.geometry), crs=4326)
    result = site_alert_points(demand, candidates, k=k, radius_m=radius, method="mclp")
    assert len(result.chosen) == k
    assert result.coverage_pct >= coverage_of(current, demand, radius) - 1e-9
    assert result.coverage_pct == pytest.approx(coverage_of(result.chosen, demand, radius))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**16), st.integers(1, 5))
def test_pmedian_is_as_close_as_the_current_points(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    demand = points(clustered(150, seed))
    current = points(rng.uniform(-6_000, 6_000, (k, 2)))
    candidates = gpd.GeoDataFrame(
        geometry=list(candidate_grid(village(), 2_000).geometry) + list(current.geometry),
        crs=4326,
    )
    result = site_alert_points(demand, candidates, k=k, radius_m=2_000, method="pmedian")
    now = site_alert_points(demand, current, k=k, radius_m=2_000, method="pmedian")
    assert result.mean_distance_m <= now.mean_distance_m + 1e-6


def _cost(demand: gpd.GeoDataFrame, candidates: gpd.GeoDataFrame) -> np.ndarray:
    """Distances in metres in UTM 50N, the zone siting uses here."""
    d, c = demand.to_crs(32650).geometry, candidates.to_crs(32650).geometry
    return np.hypot(
        d.x.to_numpy()[:, None] - c.x.to_numpy()[None, :],
        d.y.to_numpy()[:, None] - c.y.to_numpy()[None, :],
    )


def _brute(cost: np.ndarray, w: np.ndarray, k: int, radius: float) -> tuple[float, float]:
    best_cov, best_sum = 0.0, math.inf
    for combo in itertools.combinations(range(cost.shape[1]), k):
        d = cost[:, combo].min(axis=1)
        best_cov = max(best_cov, float(w[d <= radius].sum()))
        best_sum = min(best_sum, float(w @ d))
    return best_cov, best_sum


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_cases_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d_xy = clustered(60, seed)
    c_xy = rng.uniform(-6_000, 6_000, (12, 2))
    w = rng.integers(1, 5, 60).astype(float)
    demand = points(d_xy, hh=w)
    candidates = points(c_xy)
    best_cov, best_sum = _brute(_cost(demand, candidates), w, 3, 2_500)
    mclp = site_alert_points(demand, candidates, k=3, radius_m=2_500, demand_weight="hh")
    assert mclp.coverage_pct == pytest.approx(100 * best_cov / w.sum())
    pmed = site_alert_points(
        demand, candidates, k=3, radius_m=2_500, method="pmedian", demand_weight="hh"
    )
    assert pmed.mean_distance_m == pytest.approx(best_sum / w.sum())


def test_weights_pull_the_point() -> None:
    demand = points(np.array([[0.0, 0.0], [5_000.0, 0.0]]), hh=[1.0, 50.0])
    candidates = points(np.array([[0.0, 0.0], [5_000.0, 0.0]]))
    result = site_alert_points(demand, candidates, k=1, radius_m=500, demand_weight="hh")
    assert result.chosen.index.tolist() == [1]
    assert result.coverage_pct == pytest.approx(100 * 50 / 51)
    assert result.mean_distance_m == pytest.approx(5_000 / 51, rel=1e-2)
    assert result.distance_m[1] == pytest.approx(0.0, abs=1e-6)


def test_a_village_of_300_households_is_sited_quickly_and_deterministically() -> None:
    demand = points(clustered(300, 42))
    candidates = candidate_grid(village(14_000), 1_400)
    assert 80 <= len(candidates) <= 120
    site_alert_points(demand, candidates, k=6, radius_m=2_000)  # warm up imports
    for method in ("mclp", "pmedian"):
        start = time.perf_counter()
        a = site_alert_points(demand, candidates, k=6, radius_m=2_000, method=method)
        assert time.perf_counter() - start < 2.0
        b = site_alert_points(demand, candidates, k=6, radius_m=2_000, method=method)
        assert a.chosen.index.tolist() == b.chosen.index.tolist()
        assert 0 < a.coverage_pct <= 100


def test_pmedian_on_many_demand_points_is_near_optimal() -> None:
    # above the exact size the model runs on binned demand, then swaps on the full demand
    demand = points(clustered(400, 5))
    candidates = candidate_grid(village(), 3_000)
    result = site_alert_points(demand, candidates, k=2, radius_m=2_000, method="pmedian")
    cost = _cost(demand, candidates)
    _, best_sum = _brute(cost, np.ones(len(demand)), 2, 2_000)
    assert result.mean_distance_m <= best_sum / len(demand) * 1.01


def test_coverage_of_counts_within_the_radius() -> None:
    demand = points(np.array([[0.0, 0.0], [900.0, 0.0], [1_100.0, 0.0], [5_000.0, 0.0]]))
    alert = points(np.array([[0.0, 0.0]]))
    assert coverage_of(alert, demand, 1_000) == pytest.approx(50.0)
    assert coverage_of(alert.iloc[:0], demand, 1_000) == 0.0


def test_candidate_grid_lies_inside_the_village() -> None:
    poly = village(10_000)
    grid = candidate_grid(poly, 2_000)
    assert 16 <= len(grid) <= 36
    assert grid.within(poly).all()
    tiny = village(300)
    assert len(candidate_grid(tiny, 2_000)) == 1


def test_fine_cell_centres_as_demand() -> None:
    cells = np.array(h3i.grid_disk(h3i.latlng_to_cell(LAT0, LON0, 9), 3), dtype=np.int64)
    demand = demand_from_cells(cells)
    assert len(demand) == 37
    result = site_alert_points(demand, points(np.array([[0.0, 0.0]])), k=1, radius_m=1_500)
    assert result.coverage_pct == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"k": 1, "radius_m": 1_000, "method": "greedy"}, "choose one of: mclp, pmedian"),
        ({"k": 0, "radius_m": 1_000}, "between 1 and"),
        ({"k": 99, "radius_m": 1_000}, "between 1 and"),
        ({"k": 1, "radius_m": 0.0}, "radius_m"),
        ({"k": 1, "radius_m": 1_000, "demand_weight": "people"}, "no column 'people'"),
    ],
)
def test_bad_input(kw: dict[str, object], message: str) -> None:
    demand = points(clustered(20, 1))
    candidates = points(np.array([[0.0, 0.0], [1_000.0, 0.0]]))
    with pytest.raises(SitingError, match=message):
        site_alert_points(demand, candidates, **kw)  # type: ignore[arg-type]


def test_wrong_crs_is_refused() -> None:
    demand = points(clustered(20, 1))
    with pytest.raises(SitingError, match="EPSG:4326"):
        site_alert_points(demand, demand.to_crs(32650), k=1, radius_m=1_000)
