"""Coverage engine: hand-built tracks with known answers, the pass and visit references, and
properties (order independence, batches combine to the whole, dwell and metres conserved)."""

from __future__ import annotations

import itertools

import h3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gis.cells import cell_centres, edge_length_m, latlng_to_cells
from gis.coverage import (
    CellVisits,
    cell_visits,
    combine,
    day_start_us,
    grid_visits,
    local_day,
    merge_intervals,
    window_with_context,
)
from gis.crs import haversine_m

US = 1_000_000
DAY = 20_415  # 2025-11-23, local (UTC+8)
T0 = int(day_start_us(DAY)) + 10 * 3_600 * US  # 10:00 local
M_PER_DEG = 111_195.0


def _fixes(points: list[tuple[float, float, float]], device: int = 1) -> tuple[np.ndarray, ...]:
    """(seconds after T0, lat, lon) → the four engine columns."""
    arr = np.array(points, dtype=float)
    t = T0 + np.round(arr[:, 0] * US).astype(np.int64)
    return np.full(len(arr), device, np.int64), t, arr[:, 1], arr[:, 2]


def _line(lat0: float, lon0: float, lat1: float, lon1: float, n: int) -> tuple[np.ndarray, ...]:
    f = np.linspace(0.0, 1.0, n)
    return lat0 + f * (lat1 - lat0), lon0 + f * (lon1 - lon0)


def _row(res: int = 9) -> list[int]:
    """Twelve H3 cells in a straight row (consecutive local i, same j)."""
    origin = h3.latlng_to_cell(44.0, 116.0, res)
    i, j = h3.cell_to_local_ij(origin, origin)
    return [h3.str_to_int(h3.local_ij_to_cell(origin, i + k, j)) for k in range(12)]


# --------------------------------------------------------------------------- known answers


def test_straight_drive_along_a_row_of_cells_sees_every_cell_once() -> None:
    row = _row()
    clon, clat = cell_centres(np.array(row, dtype=np.int64))
    lat, lon = _line(clat[0], clon[0], clat[-1], clon[-1], 181)  # ≈ 22 m steps, every 2 s
    device, t, _, _ = _fixes([(2.0 * k, 0.0, 0.0) for k in range(181)])
    visits = cell_visits(device, t, lat, lon)
    track_m = haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:]).sum()
    assert sorted(visits.cell.tolist()) == sorted(row)
    assert visits.metres.sum() == pytest.approx(track_m, rel=1e-9)
    assert visits.dwell_s.sum() == pytest.approx(360.0, abs=1e-6)
    assert visits.fixes.sum() == 181
    assert (visits.day == DAY).all()
    assert (visits.passes == 1).all()
    # the line runs centre to centre: each inner cell holds one centre spacing of it, the two
    # end cells half of one
    inner = ~np.isin(visits.cell, [row[0], row[-1]])
    assert visits.metres[inner] == pytest.approx(track_m / 11, rel=0.1)
    assert visits.dwell_s[inner] == pytest.approx(360.0 / 11, rel=0.1)


def test_cells_on_a_random_line_are_seen_except_corner_clips_shorter_than_a_step() -> None:
    lat, lon = _line(43.9, 115.95, 43.93, 116.02, 41)  # ≈ 6.3 km, 160 m steps at 16 m/s
    device, t, _, _ = _fixes([(10.0 * k, 0.0, 0.0) for k in range(41)])
    seen = set(cell_visits(device, t, lat, lon).cell.tolist())
    dense_lat, dense_lon = _line(43.9, 115.95, 43.93, 116.02, 200_001)
    truth, samples = np.unique(latlng_to_cells(dense_lat, dense_lon, 9), return_counts=True)
    chord_m = samples / 200_000 * haversine_m(115.95, 43.9, 116.02, 43.93)
    assert seen <= set(truth.tolist())  # nothing off the line
    assert set(truth[chord_m > edge_length_m(9) / 2].tolist()) <= seen


def test_ten_minute_gap_is_not_densified() -> None:
    # 2 km in 600 s is a plausible speed, but the gap is longer than max_gap (300 s)
    device, t, lat, lon = _fixes([(0.0, 44.0, 116.0), (600.0, 44.018, 116.0)])
    visits = cell_visits(device, t, lat, lon)
    assert len(visits) == 2
    assert visits.fixes.tolist() == [1, 1]
    assert visits.dwell_s.sum() == 0.0
    assert visits.metres.sum() == 0.0
    denser = cell_visits(device, t, lat, lon, max_gap_s=900.0)
    assert len(denser) > 5
    assert denser.dwell_s.sum() == pytest.approx(600.0)


def test_fifty_km_jump_in_ten_seconds_is_not_counted() -> None:
    device, t, lat, lon = _fixes([(0.0, 44.0, 116.0), (10.0, 44.45, 116.0), (20.0, 44.0, 116.0)])
    visits = cell_visits(device, t, lat, lon)
    assert len(visits) == 2  # the start/end cell and the glitch's cell: both fixes count
    assert sorted(visits.fixes.tolist()) == [1, 2]
    assert visits.dwell_s.sum() == 0.0
    assert visits.metres.sum() == 0.0


def test_parked_vehicle_dwells_in_one_cell() -> None:
    cell = latlng_to_cells(np.array([44.0]), np.array([116.0]), 9)
    clon, clat = cell_centres(cell)
    rng = np.random.default_rng(1)
    jitter = rng.normal(0.0, 3.0, (2, 360)) / M_PER_DEG
    device, t, _, _ = _fixes([(10.0 * k, 0.0, 0.0) for k in range(360)])
    visits = cell_visits(device, t, clat[0] + jitter[0], clon[0] + jitter[1])
    assert visits.cell.tolist() == cell.tolist()
    assert visits.fixes.tolist() == [360]
    assert visits.dwell_s.tolist() == [3590.0]
    assert visits.first_seen[0] == t[0]
    assert visits.last_seen[0] == t[-1]
    assert visits.passes.tolist() == [1]


def test_midnight_in_china_splits_dwell_and_metres_between_days() -> None:
    midnight = int(day_start_us(DAY + 1))
    t = midnight + (np.arange(121) * 10 - 605) * US  # 23:49:55 … 00:09:55 local, fixes at :x5
    lat = np.full(121, 44.0) + np.arange(121) * 5.0 / M_PER_DEG  # north at 0.5 m/s
    lon = np.full(121, 116.0)
    device = np.ones(121, np.int64)
    visits = cell_visits(device, t, lat, lon)
    assert set(visits.day.tolist()) == {DAY, DAY + 1}
    before, after = visits.day == DAY, visits.day == DAY + 1
    assert visits.dwell_s[before].sum() == pytest.approx(605.0)
    assert visits.dwell_s[after].sum() == pytest.approx(595.0)
    assert visits.metres[before].sum() == pytest.approx(302.5 * 1.0, rel=1e-3)
    assert visits.fixes[before].sum() == 61
    assert visits.fixes[after].sum() == 60
    assert visits.last_seen[before].max() == midnight == visits.first_seen[after].min()
    assert (local_day(visits.first_seen) == visits.day).all()


def test_passes_split_by_two_hours_and_merge_within_ten_minutes() -> None:
    a, b = (44.0, 116.0), (44.05, 116.05)  # 7 km apart: reached by a jump, not a drive

    def presences(second_visit_s: float) -> CellVisits:
        pts = [(10.0 * k, *a) for k in range(31)]  # 5 min in A
        pts += [(310.0 + 10.0 * k, *b) for k in range(int((second_visit_s - 310) / 10))]
        pts += [(second_visit_s + 10.0 * k, *a) for k in range(31)]
        return cell_visits(*_fixes(pts))

    cell_a = latlng_to_cells(np.array([a[0]]), np.array([a[1]]), 9)[0]
    far = presences(7_200.0 + 300.0)
    row = int(np.flatnonzero(far.cell == cell_a)[0])
    assert far.passes[row] == 2
    starts, ends = far.passes_of(row)
    assert (ends - starts).tolist() == [300 * US, 300 * US]
    near = presences(900.0)
    row = int(np.flatnonzero(near.cell == cell_a)[0])
    assert near.passes[row] == 1
    assert near.dwell_s[row] == 600.0  # two 5-min stays; the jumps carry no dwell
    assert near.passes_of(row)[1][0] - near.passes_of(row)[0][0] == 1_200 * US


def test_duplicate_fixes_count_once_and_any_order_gives_the_same_rows() -> None:
    device, t, lat, lon = _fixes([(10.0 * k, 44.0, 116.0 + k * 1e-3) for k in range(20)])
    once = cell_visits(device, t, lat, lon)
    twice = cell_visits(*(np.concatenate([x, x[::-1]]) for x in (device, t, lat, lon)))
    _assert_same(once, twice)
    # a duplicate time with other coordinates: the least (lat, lon) wins, in any order
    moved = lat.copy()
    moved[5] += 0.01
    a = cell_visits(
        *(np.concatenate(x) for x in ((device, device), (t, t), (lat, moved), (lon, lon)))
    )
    b = cell_visits(
        *(np.concatenate(x) for x in ((device, device), (t, t), (moved, lat), (lon, lon)))
    )
    _assert_same(a, once)
    _assert_same(b, once)


def test_rows_select_and_pass_lists_keep_passes_with_their_rows() -> None:
    pts = [(0.0, 44.0, 116.0), (10.0, 44.0, 116.0), (5_000.0, 44.0, 116.0), (9_000.0, 44.3, 116.3)]
    visits = cell_visits(*_fixes(pts))
    starts, ends = visits.pass_lists()
    assert [len(s) for s in starts] == [len(e) for e in ends] == visits.passes.tolist()
    two = visits.passes == 2
    picked = visits.select(two)
    assert len(picked) == 1
    assert picked.pass_start.tolist() == [T0, T0 + 5_000 * US]
    assert picked.pass_end.tolist() == [T0 + 10 * US, T0 + 5_000 * US]
    assert combine([visits.select(two), visits.select(~two)]).cell.tolist() == visits.cell.tolist()
    with pytest.raises(ValueError, match="different res"):
        combine([visits, cell_visits(*_fixes(pts), res=8)])


def test_sight_radius_adds_nearby_cells_as_sight_only() -> None:
    lat, lon = _line(44.0, 116.0, 44.0, 116.03, 31)  # ≈ 2.4 km east
    device, t, _, _ = _fixes([(10.0 * k, 0.0, 0.0) for k in range(31)])
    path = cell_visits(device, t, lat, lon)
    sight = cell_visits(device, t, lat, lon, sight_m=300.0)
    assert set(path.cell.tolist()) < set(sight.cell.tolist())
    assert not sight.sight_only[np.isin(sight.cell, path.cell)].any()
    extra = sight.sight_only
    assert extra.sum() == len(sight) - len(path)
    assert (sight.fixes[extra] == 0).all()
    assert (sight.dwell_s[extra] == 0).all()
    # brute force: every cell near the line, centre within 300 m of it
    near = h3.grid_disk(h3.int_to_str(int(path.cell[0])), 20)
    cells = np.array([h3.str_to_int(c) for c in near], dtype=np.int64)
    clon, clat = cell_centres(cells)
    x = (clon - 116.0) * np.cos(np.radians(44.0)) * M_PER_DEG
    y = (clat - 44.0) * M_PER_DEG
    length = 0.03 * np.cos(np.radians(44.0)) * M_PER_DEG
    dist = np.hypot(np.clip(x, 0.0, length) - x, y)
    expected = set(cells[dist <= 300.0].tolist()) | set(path.cell.tolist())
    assert set(sight.cell.tolist()) == expected


def test_bad_input_is_refused() -> None:
    device, t, lat, lon = _fixes([(0.0, 44.0, 116.0), (10.0, 44.0, 116.001)])
    with pytest.raises(TypeError, match="microseconds"):
        cell_visits(device, t / US, lat, lon)
    with pytest.raises(ValueError, match="out of range"):
        cell_visits(device, t, np.array([44.0, 91.0]), lon)
    with pytest.raises(ValueError, match="equal length"):
        cell_visits(device, t, lat[:1], lon)
    assert len(cell_visits(device[:0], t[:0], lat[:0], lon[:0])) == 0


# --------------------------------------------------------------------------- intervals, grids


@pytest.mark.parametrize(
    ("starts", "ends", "gap", "want"),
    [
        ([], [], 5, []),
        ([0], [10], 5, [(0, 10)]),
        ([0, 15], [10, 20], 5, [(0, 20)]),  # exactly gap apart: one
        ([0, 16], [10, 20], 5, [(0, 10), (16, 20)]),  # more than gap: two
        ([16, 0], [20, 10], 5, [(0, 10), (16, 20)]),  # any order
        ([0, 2, 30], [100, 5, 40], 0, [(0, 100)]),  # nested and inside
        ([0, 10, 10], [10, 10, 12], 0, [(0, 12)]),  # touching, zero-length
    ],
)
def test_merge_intervals(starts: list, ends: list, gap: int, want: list) -> None:
    s, e = merge_intervals(starts, ends, gap)
    assert list(zip(s.tolist(), e.tolist(), strict=True)) == want


def test_grid_visits_merge_passes_of_all_cells_and_devices() -> None:
    a, b = (44.0, 116.0), (44.05, 116.05)
    cell_a, cell_b = latlng_to_cells(np.array([a[0], b[0]]), np.array([a[1], b[1]]), 9)
    one = _fixes([(10.0 * k, *a) for k in range(10)], device=1)  # [0, 90] s in A
    two = _fixes([(1_000.0 + 10.0 * k, *b) for k in range(10)], device=2)  # B, 910 s later
    three = _fixes([(9_000.0, *a)], device=3)  # A again, > 2 h later
    visits = cell_visits(*(np.concatenate(cols) for cols in zip(one, two, three, strict=True)))
    grids = grid_visits(visits, [cell_a, cell_b], [7, 7])
    assert grids.grid.tolist() == [7]
    assert grids.visits.tolist() == [2]
    assert grids.visit_start.tolist() == [T0, T0 + 9_000 * US]
    assert grids.visit_end.tolist() == [T0 + 1_090 * US, T0 + 9_000 * US]
    assert grids.revisit_mean_s.tolist() == [9_000.0]
    only_b = grid_visits(visits, [cell_b], [8], visit_gap_s=60.0)
    assert only_b.visits.tolist() == [1]
    assert np.isnan(only_b.revisit_mean_s[0])


# --------------------------------------------------------------------------- properties


Fleet = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # device, t_us, lat, lon


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    """1–3 vehicles around a local midnight: drives, stops, gaps, jumps and duplicate fixes."""
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    vehicles = draw(st.integers(min_value=1, max_value=3))
    rng = np.random.default_rng(seed)
    cols: list[list[np.ndarray]] = [[], [], [], []]
    for v in range(vehicles):
        n = int(rng.integers(1, 60))
        dt = rng.choice([1.0, 5.0, 10.0, 30.0, 120.0, 400.0], n, p=[0.1, 0.2, 0.5, 0.1, 0.05, 0.05])
        speed = rng.choice([0.0, 5.0, 15.0, 30.0, 500.0], n, p=[0.2, 0.3, 0.3, 0.15, 0.05])
        heading = rng.uniform(0, 2 * np.pi, n)
        step = dt * speed * rng.uniform(0.5, 1.0, n)
        lat = 44.0 + np.cumsum(step * np.cos(heading)) / M_PER_DEG
        lon = 116.0 + np.cumsum(step * np.sin(heading)) / (M_PER_DEG * np.cos(np.radians(44)))
        t = int(day_start_us(DAY + 1)) + np.round((np.cumsum(dt) - rng.uniform(0, 900)) * US)
        dup = rng.random(n) < 0.1
        for col, x in zip(cols, (np.full(n, 10 + v), t.astype(np.int64), lat, lon), strict=True):
            col.append(np.concatenate([x, x[dup]]))
    device, t, lat, lon = (np.concatenate(c) for c in cols)
    return device, t, lat, lon


def _assert_same(a: CellVisits, b: CellVisits, *, exact: bool = True) -> None:
    for name in ("cell", "device", "day", "first_seen", "last_seen", "fixes", "sight_only"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("pass_offsets", "pass_start", "pass_end"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("dwell_s", "metres"):
        if exact:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        else:
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-6)


PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(fleets(), st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from([0.0, 250.0]))
def test_any_input_order_gives_identical_output(fleet: Fleet, seed: int, sight_m: float) -> None:
    order = np.random.default_rng(seed).permutation(len(fleet[0]))
    a = cell_visits(*fleet, sight_m=sight_m)
    b = cell_visits(*(x[order] for x in fleet), sight_m=sight_m)
    _assert_same(a, b)


@PROPERTY
@given(fleets(), st.sampled_from([0.0, 250.0]))
def test_batches_of_whole_devices_combine_to_the_whole(fleet: Fleet, sight_m: float) -> None:
    device = fleet[0]
    parts = [cell_visits(*(x[device == d] for x in fleet), sight_m=sight_m) for d in set(device)]
    _assert_same(combine(parts), cell_visits(*fleet, sight_m=sight_m))


@PROPERTY
@given(
    fleets(),
    st.lists(st.integers(min_value=-900, max_value=3_000), max_size=4),
    st.sampled_from([0.0, 250.0]),
)
def test_time_windows_with_context_combine_to_the_whole(
    fleet: Fleet, cuts_s: list[int], sight_m: float
) -> None:
    edges = [-(2**62), *sorted(int(day_start_us(DAY + 1)) + c * US for c in cuts_s), 2**62]
    parts = []
    for lo, hi in itertools.pairwise(edges):
        *cols, context = window_with_context(*fleet, lo, hi)
        parts.append(cell_visits(*cols, context=context, sight_m=sight_m))
    _assert_same(combine(parts), cell_visits(*fleet, sight_m=sight_m), exact=False)


@PROPERTY
@given(fleets())
def test_dwell_metres_and_fixes_are_conserved(fleet: Fleet) -> None:
    device, t, lat, lon = fleet
    visits = cell_visits(device, t, lat, lon)
    _, first = np.unique(np.column_stack([device, t]), axis=0, return_index=True)
    device, t, lat, lon = device[first], t[first], lat[first], lon[first]  # sorted, unique
    same = device[1:] == device[:-1]
    dt_s = np.diff(t) / US
    length = haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:])
    ok = same & (dt_s <= 300.0) & (length <= 40.0 * dt_s)
    assert visits.fixes.sum() == len(t)
    assert visits.dwell_s.sum() == pytest.approx(dt_s[ok].sum(), abs=1e-6)
    assert visits.metres.sum() == pytest.approx(length[ok].sum(), rel=1e-9, abs=1e-6)
    assert (visits.first_seen <= visits.last_seen).all()
    assert (visits.dwell_s <= (visits.last_seen - visits.first_seen) / US + 1e-6).all()
    keys = np.column_stack([visits.cell, visits.device, visits.day])
    assert (np.diff(np.lexsort(keys.T[::-1])) == 1).all()  # sorted by (cell, device, day)
