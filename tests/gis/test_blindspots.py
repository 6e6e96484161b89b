"""The blind-spot outline: exact at fine scales, generalised (never invented) at coarse ones."""

from __future__ import annotations

import h3
import numpy as np
import shapely

from gis.blindspots import display_resolution, outline, shown_cells
from gis.cells import cell_centres


def _disk(lat: float, lon: float, res: int, k: int) -> np.ndarray:
    return np.array(
        sorted(int(c, 16) for c in h3.grid_disk(h3.latlng_to_cell(lat, lon, res), k)),
        dtype=np.uint64,
    )


def test_small_areas_are_drawn_cell_for_cell() -> None:
    cells = _disk(43.9, 116.0, 9, 6)  # a village-sized patch, ≈ 2.5 km across
    blind = cells[::2]
    assert display_resolution(9, 2_500.0) == 9
    shape = outline(blind, cells)
    lon, lat = cell_centres(blind.view(np.int64))
    assert shapely.contains_xy(shape, lon, lat).all()
    seen = np.setdiff1d(cells, blind)
    lon, lat = cell_centres(seen.view(np.int64))
    assert not shapely.contains_xy(shape, lon, lat).any()


def test_a_league_sized_extent_is_drawn_at_a_coarser_resolution() -> None:
    assert display_resolution(9, 700_000.0) < 9
    assert display_resolution(9, 700_000.0) >= 5


def test_coarse_cells_are_blind_when_at_least_half_their_cells_are() -> None:
    parent = h3.latlng_to_cell(43.9, 116.0, 7)
    children = np.array(sorted(int(c, 16) for c in h3.cell_to_children(parent, 9)), np.uint64)
    other = h3.latlng_to_cell(44.5, 117.0, 7)
    others = np.array(sorted(int(c, 16) for c in h3.cell_to_children(other, 9)), np.uint64)
    cells = np.concatenate([children, others])
    blind = np.concatenate([children[: len(children) // 2 + 1], others[:3]])
    shown = shown_cells(blind, cells, 7)
    assert [hex(int(c))[2:] for c in shown] == [parent]


def test_nothing_blind_draws_nothing() -> None:
    cells = _disk(43.9, 116.0, 9, 2)
    assert outline(np.empty(0, np.uint64), cells).is_empty
