"""The fleet simulator: deterministic, inside the patrol area, plausible, with the advertised
noise (GCJ-02 terminals, spikes, gaps)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from gis.crs import gcj02_to_wgs84, haversine_m
from gis.simulation import detour, simulate_fleet
from gis.units import METRES_PER_DEGREE

AREA = box(116.0, 43.9, 116.25, 44.05)  # ≈ 20 km × 17 km near Xilinhot
START = 1_764_000_000_000_000


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a = simulate_fleet([AREA] * 4, hours=2, start_us=START, seed=7)
    b = simulate_fleet([AREA] * 4, hours=2, start_us=START, seed=7)
    c = simulate_fleet([AREA] * 4, hours=2, start_us=START, seed=8)
    assert np.array_equal(a.lat, b.lat)
    assert np.array_equal(a.time_us, b.time_us)
    assert not np.array_equal(a.lat[:100], c.lat[:100])


def test_tracks_stay_inside_and_move_at_patrol_speeds() -> None:
    f = simulate_fleet([AREA] * 10, hours=4, interval_s=10, start_us=START, seed=1, gcj02_share=0.0)
    ok = ~f.spike
    inside = shapely.contains_xy(AREA.buffer(0.001), f.true_lon, f.true_lat)
    assert inside.all()
    assert np.nanmax(f.speed[ok]) < 60 / 3.6 + 2  # 20–60 km/h plus a little GPS noise
    assert (np.diff(f.time_us)[np.diff(f.vehicle) == 0] > 0).all()  # time-ordered per vehicle
    assert f.time_us.max() <= START + 4 * 3600 * 1e6


def test_gcj02_terminals_send_offset_coordinates() -> None:
    f = simulate_fleet([AREA] * 50, hours=0.5, start_us=START, seed=3, gcj02_share=0.3)
    on = f.gcj02[f.vehicle]
    assert 0.1 < f.gcj02.mean() < 0.6
    offset = haversine_m(f.lon, f.lat, f.true_lon, f.true_lat)
    assert np.all(offset[on & ~f.spike] > 400)
    assert np.all(offset[~on & ~f.spike] == 0)
    clean = on & ~f.spike
    back = gcj02_to_wgs84(f.lon[clean], f.lat[clean])
    assert np.all(haversine_m(*back, f.true_lon[clean], f.true_lat[clean]) < 0.01)


def test_spikes_and_gaps_are_there() -> None:
    f = simulate_fleet(
        [AREA] * 20, hours=6, start_us=START, seed=5, spike_rate=0.01, gap_rate_per_h=1.0
    )
    assert 0.005 < f.spike.mean() < 0.02
    same = np.diff(f.vehicle) == 0
    gaps = np.diff(f.time_us)[same] / 1e6
    assert (gaps > 120).sum() >= 20


def _eastward(metres_per_s: float, rows: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A track heading east from (116.0, 44.0) at a steady speed, a fix a second."""
    time_us = START + np.arange(rows, dtype=np.int64) * 1_000_000
    east = np.arange(rows) * metres_per_s / (METRES_PER_DEGREE * np.cos(np.radians(44.0)))
    return time_us, 116.0 + east, np.full(rows, 44.0)


def test_a_detour_drives_to_the_call_stays_and_meets_its_track_again() -> None:
    time_us, lon, lat = _eastward(10.0)
    goal = (float(lon[99]), 44.0 + 500.0 / METRES_PER_DEGREE)  # 500 m north of row 99
    d = detour(time_us, lon, lat, start=100, goal=goal, speed_ms=20.0, dwell_s=30.0)
    assert d.distance_m == pytest.approx(500, abs=2)
    assert d.arrive_s == pytest.approx(25, abs=0.1)
    assert d.start == 100
    assert 100 < d.end < len(lon)
    assert len(d.lon) == len(d.lat) == len(d.speed) == d.end - d.start
    # the vehicle's whole track: untouched before the first row still to be sent and after it
    # meets its own track again
    x, y = lon.copy(), lat.copy()
    x[d.start : d.end], y[d.start : d.end] = d.lon, d.lat
    # it reaches the goal, stays the dwell there, and never drives faster than asked
    at_goal = haversine_m(x, y, goal[0], goal[1]) < 1.0
    assert at_goal[124:126].any()
    assert at_goal.sum() == pytest.approx(31, abs=2)
    step = haversine_m(x[:-1], y[:-1], x[1:], y[1:])
    assert step[99 : d.end].max() <= 20.0 * 1.001
    assert d.speed == pytest.approx(step[99 : d.end - 1], abs=0.01)  # as a terminal derives it
    assert d.speed.max() <= 20.0 * 1.001
    assert step[d.end :] == pytest.approx(10.0, abs=0.05)  # back on its own track


def test_a_detour_that_cannot_catch_its_track_stays_at_the_call() -> None:
    time_us, lon, lat = _eastward(30.0, rows=300)  # faster than the vehicle drives back
    goal = (float(lon[49]), 44.001)
    d = detour(time_us, lon, lat, start=50, goal=goal, speed_ms=20.0, dwell_s=10.0)
    assert (d.start, d.end) == (50, len(lon))
    assert haversine_m(d.lon[-1], d.lat[-1], goal[0], goal[1]) < 1.0
