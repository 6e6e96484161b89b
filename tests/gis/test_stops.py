"""Stops of a track: known stays found with their times, drive-bys and short halts not."""

from __future__ import annotations

import numpy as np
import pytest

from gis.stops import detect_stops

S = 1_000_000  # µs per second
LAT = 44.0
M_PER_DEG_LON = 111_195.0 * np.cos(np.radians(LAT))


def _drive(t0: int, n: int, lon0: float, metres_per_fix: float) -> tuple[list[int], list[float]]:
    return [t0 + i * 10 * S for i in range(n)], [
        lon0 + i * metres_per_fix / M_PER_DEG_LON for i in range(n)
    ]


def _track() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drive 2 km, park 12 min (GPS jitter ≤ 15 m), drive on, halt 3 min, drive on."""
    rng = np.random.default_rng(7)
    t, lon = _drive(0, 20, 116.0, 100.0)
    park_lon = lon[-1] + 100.0 / M_PER_DEG_LON
    t += [t[-1] + (i + 1) * 10 * S for i in range(72)]
    lon += list(park_lon + rng.uniform(-15, 15, 72) / M_PER_DEG_LON)
    t2, lon2 = _drive(t[-1] + 10 * S, 20, park_lon + 100.0 / M_PER_DEG_LON, 100.0)
    t += t2
    lon += lon2
    halt = lon[-1] + 100.0 / M_PER_DEG_LON
    t += [t[-1] + (i + 1) * 10 * S for i in range(18)]
    lon += [halt] * 18
    t3, lon3 = _drive(t[-1] + 10 * S, 10, halt + 100.0 / M_PER_DEG_LON, 100.0)
    t += t3
    lon += lon3
    return np.array(t), np.array(lon), np.full(len(t), LAT)


def test_the_long_park_is_one_stop_and_the_short_halt_none() -> None:
    t, lon, lat = _track()
    stops = detect_stops(t, lon, lat, min_duration_s=300, radius_m=50)
    assert len(stops) == 1
    assert stops.first_index[0] == 20  # the first parked fix
    assert stops.fixes[0] == 72
    assert stops.duration_s[0] == pytest.approx(710, abs=1)
    park_lon = lon[20:92].mean()
    assert stops.lon[0] == pytest.approx(park_lon, abs=1e-7)


def test_a_shorter_minimum_finds_the_halt_too() -> None:
    t, lon, lat = _track()
    stops = detect_stops(t, lon, lat, min_duration_s=150, radius_m=50)
    assert len(stops) == 2
    assert stops.duration_s[1] == pytest.approx(170, abs=1)


def test_a_gap_while_parked_counts_as_staying() -> None:
    t = np.array([0, 10, 20, 1800, 1810]) * S  # terminal off for half an hour
    lon = np.array([116.0, 116.00001, 116.00002, 116.00001, 116.0])
    stops = detect_stops(t, lon, np.full(5, LAT), min_duration_s=600, radius_m=30)
    assert len(stops) == 1
    assert stops.duration_s[0] == 1810


def test_constant_driving_has_no_stops() -> None:
    t, lon = _drive(0, 500, 116.0, 80.0)
    assert len(detect_stops(t, lon, np.full(500, LAT))) == 0


def test_empty_and_single_fix_tracks() -> None:
    assert len(detect_stops([], [], [])) == 0
    assert len(detect_stops([0], [116.0], [LAT])) == 0


@pytest.mark.parametrize(
    ("t", "kwargs"),
    [([0, 20, 10], {}), ([0, 10, 20], {"radius_m": 0}), ([0, 10, 20], {"min_duration_s": -1})],
)
def test_bad_input(t: list[int], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"ascending|positive"):
        detect_stops(t, [116.0] * 3, [LAT] * 3, **kwargs)
