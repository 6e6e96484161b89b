"""gis.units: China's local day, the PostgreSQL epoch and the distance units, checked against
the standard library's own calendar and clock; and the two coverage helpers built on them
(cells near points, seen bitmaps decoded)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np

from gis.cells import cell_centres, cells_near_points, grid_disks, latlng_to_cells
from gis.crs import haversine_m
from gis.units import (
    CHINA_OFFSET_SQL,
    CHINA_TZ,
    METRES_PER_DEGREE_SPHERE,
    PG_EPOCH_DAYS,
    PG_EPOCH_US,
    china_day_bounds,
    day_start_us,
    local_day,
)
from gis.visits import LayoutIndex

SHANGHAI = timezone(timedelta(hours=8))


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def test_local_day_turns_at_china_midnight_not_utc_midnight() -> None:
    before = datetime(2026, 3, 1, 23, 59, 59, tzinfo=SHANGHAI)
    after = before + timedelta(seconds=1)
    days = local_day(np.array([_us(before), _us(after)], dtype=np.int64))
    assert [date(1970, 1, 1) + timedelta(days=int(d)) for d in days] == [
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert int(day_start_us(days[1])) == _us(after)


def test_china_day_bounds_are_local_midnights_in_utc() -> None:
    start, end = china_day_bounds(date(2026, 1, 1))
    assert start == datetime(2026, 1, 1, tzinfo=SHANGHAI)
    assert end - start == timedelta(days=1)
    assert start.tzinfo is UTC
    assert datetime(2026, 1, 1, 9, tzinfo=UTC).astimezone(CHINA_TZ).hour == 17
    assert CHINA_OFFSET_SQL == "interval '28800 seconds'"


def test_postgres_epoch_is_2000_01_01_utc() -> None:
    assert _us(datetime(2000, 1, 1, tzinfo=UTC)) == PG_EPOCH_US
    assert (date(2000, 1, 1) - date(1970, 1, 1)).days == PG_EPOCH_DAYS


def test_a_degree_of_latitude_on_the_sphere_is_what_haversine_measures() -> None:
    assert abs(haversine_m(116.0, 44.0, 116.0, 45.0) - METRES_PER_DEGREE_SPHERE) < 1e-6


def test_cells_near_points_are_within_the_radius_or_the_points_own() -> None:
    rng = np.random.default_rng(7)
    lat, lon = 43.9 + rng.random(50) * 0.3, 116.0 + rng.random(50) * 0.3
    radius = 300.0
    point, cell = cells_near_points(lat, lon, res=10, radius_m=radius)
    clon, clat = cell_centres(cell)
    d = haversine_m(lon[point], lat[point], clon, clat)
    own = latlng_to_cells(lat, lon, 10)
    assert np.all((d <= radius * 1.001) | (cell == own[point]))
    assert np.all(np.isin(own, cell))  # every point has at least its own cell
    # and nothing well inside the radius is missed
    offsets, disk = grid_disks(own, 4)
    of = np.repeat(np.arange(len(own)), np.diff(offsets))
    dlon, dlat = cell_centres(disk)
    inside = haversine_m(lon[of], lat[of], dlon, dlat) <= radius * 0.99
    found = set(zip(point.tolist(), cell.tolist(), strict=True))
    assert all(
        (p, c) in found for p, c in zip(of[inside].tolist(), disk[inside].tolist(), strict=True)
    )


def test_seen_bitmaps_decode_per_grid_cell_in_h3_order() -> None:
    cells = np.array([50, 10, 40, 20, 30], dtype=np.int64)
    grids = np.array([2, 1, 2, 1, 1], dtype=np.int64)
    index = LayoutIndex.build(cells, grids)  # grid 1: 10, 20, 30; grid 2: 40, 50
    got, grid, seen = index.seen_cells(np.array([1, 2]), ["101", None])
    assert got.tolist() == [10, 20, 30, 40, 50]
    assert grid.tolist() == [1, 1, 1, 2, 2]
    assert seen.tolist() == [True, False, True, False, False]
    _, _, short = index.seen_cells(np.array([1]), ["1"])  # a short bitmap: the rest unseen
    assert short.tolist() == [True, False, False]
