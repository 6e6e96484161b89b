"""Visits: presence intervals merged per group (cell passes, grid visits), vectorised.

A visit is a stretch of presence; presences at most ``gap`` apart are one visit. These helpers
merge intervals per group without a Python loop per group (sort, segmented running maximum,
run starts), and give the reference results the visit SQL is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gis.cells import us
from gis.units import US_PER_S

if TYPE_CHECKING:
    from gis.coverage import CellVisits

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def firsts_lasts(new: BoolArray) -> tuple[IntArray, IntArray]:
    """Index of the first and last element of each run, given the run-start flags."""
    first = np.flatnonzero(new)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    if len(first):
        last[-1] = len(new) - 1
    return first, last


def merge_grouped(
    group: IntArray, start: IntArray, end: IntArray, gap: int, *, ordered: bool = False
) -> tuple[IntArray, IntArray, IntArray]:
    """Merge intervals within each group when at most ``gap`` apart.

    Returns (group, start, end) of the merged intervals, ordered by (group, start).
    ``ordered``: the input is already sorted by (group, start).
    """
    if len(start) == 0:
        return group[:0], start[:0], end[:0]
    if not ordered:
        order = np.lexsort((start, group))
        group, start, end = group[order], start[order], end[order]
    new_group = np.ones(len(group), dtype=bool)
    new_group[1:] = group[1:] != group[:-1]
    reach = _segmented_cummax(end, start, new_group)
    new = new_group.copy()
    new[1:] |= start[1:] - reach[:-1] > gap
    first, last = firsts_lasts(new)
    return group[first], start[first], reach[last]


def _segmented_cummax(end: IntArray, start: IntArray, new_group: BoolArray) -> IntArray:
    """Running maximum of ``end`` restarting at each group (input sorted by group, start)."""
    first, _ = firsts_lasts(new_group)
    rank = np.cumsum(new_group) - 1
    rel = end - start[first][rank]  # ≥ 0: the first start of a group is its minimum
    span = int(rel.max()) + 1
    per_chunk = max(1, (1 << 62) // span)  # groups whose lifted keys fit in int64
    out = np.empty_like(end)
    for lo in range(0, len(first), per_chunk):
        a = first[lo]
        b = first[lo + per_chunk] if lo + per_chunk < len(first) else len(end)
        lifted = (rank[a:b] - rank[a]) * span + rel[a:b]
        out[a:b] = np.maximum.accumulate(lifted) - (rank[a:b] - rank[a]) * span
    return out + start[first][rank]


def merge_intervals(starts: ArrayLike, ends: ArrayLike, gap: float) -> tuple[IntArray, IntArray]:
    """Union of intervals, joining those at most ``gap`` apart (reference for the visit SQL).

    Parameters
    ----------
    starts, ends
        Interval bounds, int64 (UTC µs in this module; any one unit works), ``ends >= starts``.
    gap
        Largest separation that still joins two intervals, same unit (``> gap`` splits).

    Returns
    -------
    starts, ends
        The merged, disjoint intervals in time order.
    """
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    if s.shape != e.shape or s.ndim != 1:
        raise ValueError("starts and ends must be 1-D arrays of equal length")
    if np.any(e < s):
        raise ValueError("every interval needs end >= start")
    _, ms, me = merge_grouped(np.zeros(len(s), np.int64), s, e, int(gap))
    return ms, me


@dataclass(frozen=True, eq=False)
class GridVisits:
    """Visits to each grid: the passes of all its fine cells (and devices) merged.

    Attributes
    ----------
    grid : int64
        Grid ids that were seen, ascending.
    visits : int32
        Distinct visits (presences more than the gap apart are separate visits).
    first_start, last_end : int64
        Start of the first and end of the last visit, UTC µs.
    revisit_mean_s : float64
        Mean time from one visit's start to the next one's, s; NaN with fewer than two visits.
    visit_offsets, visit_start, visit_end : int64
        CSR visit intervals, UTC µs, as ``CellVisits``' passes.
    """

    grid: IntArray
    visits: NDArray[np.int32]
    first_start: IntArray
    last_end: IntArray
    revisit_mean_s: FloatArray
    visit_offsets: IntArray
    visit_start: IntArray
    visit_end: IntArray


def grid_visits(
    visits: CellVisits,
    cells: ArrayLike,
    grids: ArrayLike,
    *,
    visit_gap_s: float | None = None,
    include_sight: bool = True,
) -> GridVisits:
    """Visits per grid of a layout (reference for the ``cell_visit ⨝ grid_cell`` SQL).

    Parameters
    ----------
    visits
        Cell visits, already filtered to the window and devices of interest (``select``).
    cells, grids
        The layout: fine cell (int64 H3 at ``visits.res``) → grid id (int64); a cell in one grid.
    visit_gap_s
        Presences more than this many seconds apart are separate visits; default the
        result's own ``visit_gap_s`` (30 min).
    include_sight
        Count rows seen only within the sight radius.
    """
    cell_arr = np.asarray(cells, dtype=np.int64)
    grid_arr = np.asarray(grids, dtype=np.int64)
    gap = visits.visit_gap_s if visit_gap_s is None else visit_gap_s
    order = np.argsort(cell_arr)
    cell_arr, grid_arr = cell_arr[order], grid_arr[order]
    pos = np.minimum(np.searchsorted(cell_arr, visits.cell), max(len(cell_arr) - 1, 0))
    hit = (cell_arr[pos] == visits.cell) if len(cell_arr) else np.zeros(len(visits), bool)
    if not include_sight:
        hit &= ~visits.sight_only
    counts = np.diff(visits.pass_offsets)
    owner = np.repeat(np.arange(len(visits)), counts)
    take = hit[owner]
    row_grid = grid_arr[pos] if len(cell_arr) else np.zeros(len(visits), np.int64)
    vg, vs, ve = merge_grouped(
        row_grid[owner[take]], visits.pass_start[take], visits.pass_end[take], us(gap)
    )
    new = np.ones(len(vg), dtype=bool)
    new[1:] = vg[1:] != vg[:-1]
    first, last = firsts_lasts(new)
    n = last - first + 1
    span = (vs[last] - vs[first]).astype(np.float64) / US_PER_S
    with np.errstate(invalid="ignore", divide="ignore"):
        revisit = np.where(n > 1, span / np.maximum(n - 1, 1), np.nan)
    return GridVisits(
        grid=vg[first],
        visits=n.astype(np.int32),
        first_start=vs[first],
        last_end=ve[last],
        revisit_mean_s=revisit,
        visit_offsets=np.append(first, len(vg)).astype(np.int64),
        visit_start=vs,
        visit_end=ve,
    )


@dataclass(frozen=True)
class LayoutIndex:
    """A layout's fine cells: ``h3`` sorted, the grid id of each, and its bit position within
    the grid (0 … n−1, a grid's cells in ``h3`` order), plus each grid's cell count."""

    h3: IntArray
    grid: IntArray
    pos: NDArray[np.int32]
    grid_ids: IntArray  # sorted distinct grid ids
    n_cells: NDArray[np.int32]  # per grid_ids entry

    @classmethod
    def build(cls, h3: ArrayLike, grid: ArrayLike) -> LayoutIndex:
        cells = np.asarray(h3, dtype=np.int64)
        owner = np.asarray(grid, dtype=np.int64)
        by_grid = np.lexsort((cells, owner))
        grid_ids, start, counts = np.unique(owner[by_grid], return_index=True, return_counts=True)
        pos = np.empty(len(cells), dtype=np.int32)
        pos[by_grid] = np.arange(len(cells)) - np.repeat(start, counts)
        order = np.argsort(cells, kind="stable")
        return cls(cells[order], owner[order], pos[order], grid_ids, counts.astype(np.int32))

    def locate(self, cells: IntArray) -> tuple[BoolArray, IntArray, NDArray[np.int32]]:
        """(found, grid id, bit position) of each cell."""
        at = np.minimum(np.searchsorted(self.h3, cells), max(len(self.h3) - 1, 0))
        found = self.h3[at] == cells if len(self.h3) else np.zeros(len(cells), bool)
        return found, self.grid[at], self.pos[at]

    def seen_cells(
        self, grid_ids: IntArray, seen: Sequence[str | None]
    ) -> tuple[IntArray, IntArray, BoolArray]:
        """The cells of some grids with whether each one's bit is set, decoded at once.

        Parameters
        ----------
        grid_ids
            Sorted grid ids.
        seen
            Per grid id, its ``grid_visit.seen`` (or an OR of several) as PostgreSQL prints
            ``bit varying`` (``'0110…'``, bit i = the grid's i-th cell in ``h3`` order), or
            ``None`` when nothing of the grid was seen. A bitmap shorter than the grid leaves
            its missing cells unseen.

        Returns
        -------
        cells, grid, was_seen
            The grids' cells in ``h3`` order, each one's grid id and whether it was seen.
        """
        ids = np.asarray(grid_ids, dtype=np.int64)
        in_set = np.isin(self.grid, ids)
        cells, grid, pos = self.h3[in_set], self.grid[in_set], self.pos[in_set]
        row = np.searchsorted(ids, grid)
        lengths = np.array([len(s) if s else 0 for s in seen], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        bits = np.frombuffer("".join(s or "" for s in seen).encode(), dtype=np.uint8) == ord("1")
        has = lengths[row] > pos
        was_seen = np.zeros(len(cells), dtype=bool)
        was_seen[has] = bits[offsets[row[has]] + pos[has]]
        return cells, grid, was_seen


@dataclass(frozen=True)
class GridDays:
    """Per (grid, device, day): sums, a bitmap of the grid's cells seen (MSB-first bytes, as
    PostgreSQL ``bit varying``), and the merged visit intervals; rows sorted by the key."""

    grid: IntArray
    device: IntArray
    day: NDArray[np.int32]
    fixes: NDArray[np.int64]
    dwell_s: FloatArray
    metres: FloatArray
    first_seen: IntArray
    last_seen: IntArray
    n_bits: NDArray[np.int32]
    bitmap_offsets: IntArray
    bitmaps: NDArray[np.uint8]
    visit_offsets: IntArray
    visit_start: IntArray
    visit_end: IntArray

    def __len__(self) -> int:
        return len(self.grid)


def grid_days(
    visits: CellVisits, index: LayoutIndex, *, visit_gap_s: float | None = None
) -> GridDays:
    """Aggregate cell visits to the grids of a layout, per device and day.

    Cells outside the layout are left out; rows seen only within the sight radius mark their
    cells as seen but add no fixes, dwell or metres (they have none).
    """
    gap = us(visits.visit_gap_s if visit_gap_s is None else visit_gap_s)
    found, grid, pos = index.locate(visits.cell)
    rows = np.flatnonzero(found)
    g, d, day = grid[rows], visits.device[rows], visits.day[rows]
    order = np.lexsort((day, d, g))
    rows, g, d, day, pos = rows[order], g[order], d[order], day[order], pos[rows][order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (d[1:] != d[:-1]) | (day[1:] != day[:-1])
    first, _ = firsts_lasts(new)
    group = np.cumsum(new) - 1
    n_groups = len(first)

    def total(values: NDArray) -> NDArray:
        return np.add.reduceat(values[rows], first) if n_groups else values[:0]

    n_bits = index.n_cells[np.searchsorted(index.grid_ids, g[first])].astype(np.int32)
    n_bytes = (n_bits.astype(np.int64) + 7) // 8
    offsets = np.r_[0, np.cumsum(n_bytes)]
    bitmaps = np.zeros(int(offsets[-1]), dtype=np.uint8)
    np.bitwise_or.at(bitmaps, offsets[group] + pos // 8, (0x80 >> (pos % 8)).astype(np.uint8))
    idx, owner = _pass_index(visits.pass_offsets, rows, group)
    vg, vs, ve = merge_grouped(owner, visits.pass_start[idx], visits.pass_end[idx], gap)
    visit_offsets = np.searchsorted(vg, np.arange(n_groups + 1)).astype(np.int64)
    return GridDays(
        grid=g[first],
        device=d[first],
        day=day[first].astype(np.int32),
        fixes=total(visits.fixes.astype(np.int64)),
        dwell_s=total(visits.dwell_s),
        metres=total(visits.metres),
        first_seen=_reduce(np.minimum, visits.first_seen[rows], first),
        last_seen=_reduce(np.maximum, visits.last_seen[rows], first),
        n_bits=n_bits,
        bitmap_offsets=offsets.astype(np.int64),
        bitmaps=bitmaps,
        visit_offsets=visit_offsets,
        visit_start=vs,
        visit_end=ve,
    )


def _pass_index(offsets: IntArray, rows: IntArray, group: IntArray) -> tuple[IntArray, IntArray]:
    """Indices of the passes of ``rows`` (CSR ``offsets``) and the group of each."""
    counts = offsets[rows + 1] - offsets[rows]
    before = np.cumsum(counts) - counts
    idx = np.repeat(offsets[rows] - before, counts) + np.arange(int(counts.sum()))
    return idx, np.repeat(group, counts)


def _reduce(ufunc: np.ufunc, values: IntArray, first: IntArray) -> IntArray:
    return ufunc.reduceat(values, first) if len(first) else values[:0]
