"""Synthetic households: the asked number per village, all inside it, clustered, deterministic."""

from __future__ import annotations

import math

import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from gis.households import synthetic_households

GACHA = "152502100201"  # digits 10–12 in 200–399: 嘎查/村
COMMUNITY = "152502001001"  # 001: 社区


def _village(lon0: float, lat0: float, area_km2: float, seed: int) -> Polygon:
    rng = np.random.default_rng(seed)
    n = 24
    radius = math.sqrt(area_km2 * 1e6 / math.pi)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * (1 + 0.3 * rng.uniform(-1, 1, n))
    lon = lon0 + r * np.cos(angles) / (111_320 * math.cos(math.radians(lat0)))
    lat = lat0 + r * np.sin(angles) / 110_574
    poly = shapely.make_valid(Polygon(np.column_stack([lon, lat])))
    return max((p for p in shapely.get_parts(poly) if isinstance(p, Polygon)), key=lambda p: p.area)


def villages(*rows: tuple[str, int, Polygon]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": [r[0] for r in rows], "households": [r[1] for r in rows]},
        geometry=[r[2] for r in rows],
        crs=4326,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.floats(min_value=115.0, max_value=117.0),
    st.floats(min_value=43.0, max_value=45.0),
    st.floats(min_value=1.0, max_value=300.0),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=0, max_value=2**16),
)
def test_every_household_inside_its_village(
    lon: float, lat: float, area: float, n: int, seed: int
) -> None:
    poly = _village(lon, lat, area, seed)
    frame = villages((GACHA, n, poly), (COMMUNITY, n // 3, _village(lon + 0.5, lat, 2.0, seed)))
    hh = synthetic_households(frame, seed=seed)
    counts = hh["village_code"].value_counts().to_dict()
    assert counts.get(GACHA, 0) == n
    assert counts.get(COMMUNITY, 0) == n // 3
    for code, geom in zip(frame["code"], frame.geometry, strict=True):
        pts = hh[hh["village_code"] == code].geometry.to_numpy()
        assert shapely.contains_xy(geom, shapely.get_x(pts), shapely.get_y(pts)).all()
    assert hh.crs.to_epsg() == 4326
    assert list(hh.columns) == ["village_code", "household_no", "geometry"]


def test_same_seed_same_points_other_seed_other_points() -> None:
    frame = villages((GACHA, 300, _village(116.0, 44.0, 80.0, 1)))
    a = synthetic_households(frame, seed=7)
    b = synthetic_households(frame, seed=7)
    c = synthetic_households(frame, seed=8)
    assert a.geometry.geom_equals_exact(b.geometry, 0.0).all()
    assert not a.geometry.geom_equals_exact(c.geometry, 0.0).all()
    assert list(a["household_no"]) == list(range(1, 301))


def test_communities_are_dense_and_gacha_scattered() -> None:
    gacha = _village(116.0, 44.0, 100.0, 3)
    community = _village(116.0, 44.0, 100.0, 3)  # the same land, to compare like with like
    g = synthetic_households(villages((GACHA, 400, gacha)))
    c = synthetic_households(villages((COMMUNITY, 400, community)))
    assert _cells(c.geometry.x, c.geometry.y) < _cells(g.geometry.x, g.geometry.y) / 2
    # clustered, not uniform: 400 households share far fewer fine cells than 400 random points
    rng = np.random.default_rng(0)
    minx, miny, maxx, maxy = gacha.bounds
    lon, lat = rng.uniform(minx, maxx, 4000), rng.uniform(miny, maxy, 4000)
    keep = shapely.contains_xy(gacha, lon, lat)
    uniform = _cells(lon[keep][:400], lat[keep][:400])
    assert _cells(g.geometry.x, g.geometry.y) < uniform / 2


def _cells(lon: object, lat: object) -> int:
    return len({h3.latlng_to_cell(y, x, 9) for x, y in zip(lon, lat, strict=True)})  # type: ignore[call-overload]


def test_zero_households_gives_no_points() -> None:
    hh = synthetic_households(villages((GACHA, 0, _village(116.0, 44.0, 10.0, 1))))
    assert len(hh) == 0
    assert list(hh.columns) == ["village_code", "household_no", "geometry"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (villages((GACHA, 10, _village(116.0, 44.0, 10.0, 1))).to_crs(32650), "EPSG:4326"),
        (
            villages((GACHA, 10, _village(116.0, 44.0, 10.0, 1))).drop(columns="households"),
            "households",
        ),
        (villages((GACHA, -1, _village(116.0, 44.0, 10.0, 1))), "negative"),
    ],
)
def test_bad_input(frame: gpd.GeoDataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_households(frame)
