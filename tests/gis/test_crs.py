"""GCJ-02 and BD-09 are undone exactly (< 0.1 m), not with the 1–2 m one-step inverse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gis import crs

lons = st.floats(min_value=73.5, max_value=135.0)
lats = st.floats(min_value=18.0, max_value=53.5)


@settings(max_examples=300, deadline=None)
@given(lons, lats)
def test_gcj02_round_trip_is_exact(lon: float, lat: float) -> None:
    back = crs.gcj02_to_wgs84(*crs.wgs84_to_gcj02(lon, lat))
    assert crs.haversine_m(lon, lat, *back) < 0.01


@settings(max_examples=300, deadline=None)
@given(lons, lats)
def test_bd09_round_trip_is_exact(lon: float, lat: float) -> None:
    back = crs.bd09_to_wgs84(*crs.wgs84_to_bd09(lon, lat))
    assert crs.haversine_m(lon, lat, *back) < 0.01


def test_xilingol_offsets_match_the_programme_figures() -> None:
    lon, lat = np.array([116.08]), np.array([43.94])  # Xilinhot
    gcj = crs.wgs84_to_gcj02(lon, lat)
    bd = crs.wgs84_to_bd09(lon, lat)
    assert 500 < crs.haversine_m(lon, lat, *gcj)[0] < 700  # ≈ 600 m
    assert 1200 < crs.haversine_m(lon, lat, *bd)[0] < 1600  # GCJ-02 + ≈ 845 m more


def test_the_one_step_inverse_would_not_be_good_enough() -> None:
    lon, lat = np.array([116.08]), np.array([43.94])
    glon, glat = crs.wgs84_to_gcj02(lon, lat)
    flon, flat = crs.wgs84_to_gcj02(glon, glat)
    one_step = (2 * glon - flon, 2 * glat - flat)  # the usual shortcut: subtract the offset once
    assert crs.haversine_m(lon, lat, *one_step)[0] > 0.1
    assert crs.haversine_m(lon, lat, *crs.gcj02_to_wgs84(glon, glat))[0] < 1e-3


def test_no_offset_outside_china() -> None:
    lon, lat = np.array([-97.74]), np.array([30.27])  # Austin
    assert crs.wgs84_to_gcj02(lon, lat) == (lon, lat)
    assert crs.to_wgs84(lon, lat, "gcj02")[0][0] == pytest.approx(-97.74)


def test_utm_zones_of_xilingol() -> None:
    assert crs.utm_epsg(113.5, 43.0) == 32649
    assert crs.utm_epsg(116.1, 43.9) == 32650
    with pytest.raises(ValueError, match="no UTM zone"):
        crs.utm_epsg(116.0, 89.0)


def test_unknown_crs_names_the_choices() -> None:
    with pytest.raises(ValueError, match="wgs84, cgcs2000, gcj02, bd09"):
        crs.to_wgs84([1.0], [2.0], "mars")
