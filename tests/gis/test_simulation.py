"""The fleet simulator: deterministic, inside the patrol area, plausible, with the advertised
noise (GCJ-02 terminals, spikes, gaps)."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import box

from gis.crs import gcj02_to_wgs84, haversine_m
from gis.simulation import simulate_fleet

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
