"""Coverage engine: GPS fixes → per fine H3 cell × device × day visit aggregates (``cell_visit``).

A fine cell (H3, ``res``) is *seen* by a vehicle when one of its fixes lies in it, or the straight
segment between two consecutive fixes passes through it and the segment is *plausible* (time gap
≤ ``max_gap_s``, implied speed ≤ ``max_speed_mps``). Implausible segments (GPS jumps, data gaps)
are neither densified nor given dwell or metres; their end fixes still count. A plausible segment
whose end fixes share a cell lies wholly in it (cells are convex) and goes to it whole; any other
is cut into ``ceil(L / step)`` equal pieces, ``step`` = half the average edge length at ``res``,
each piece's time and length going to the cell of its midpoint (so a cell the line only clips at
a corner, for less than about a step, may be missed). Segments are first cut at local midnight.
With ``sight_m`` > 0, cells whose *centre* lies within ``sight_m`` of the path count as seen too
(at res 9 that adds cells only beyond ≈ 175 m, the cells' inradius).

Layout (the columns of ``cell_visit``)
--------------------------------------
- time: ``int64`` microseconds since 1970-01-01 UTC, as ingest's ``time_us``; ``dwell_s``
  (seconds) and ``metres`` are ``float64``; ``fixes`` ``int32``; ``sight_only`` ``bool``.
- day: ``int32`` local calendar day in China (UTC+8) since 1970-01-01,
  ``(t_us + 8 h) // 24 h``; ``date '1970-01-01' + day`` in SQL.
- cell: ``int64`` H3 index (``BIGINT``); device: ``int64``.
- passes: the presence of the device in the cell that day as intervals, merged when at most
  ``visit_gap_s`` apart. CSR: row ``i`` owns ``pass_start[pass_offsets[i]:pass_offsets[i + 1]]``
  and the same slice of ``pass_end`` (UTC µs) — two ``bigint[]`` columns per row in PostgreSQL
  (``CellVisits.pass_lists``). A row's presence includes sight: path rows keep fixes, dwell and
  metres from the path only.
- rows sorted by (cell, device, day); the same fixes in any order give identical output.

Batches ``combine`` exactly when each holds complete devices, or a time window of fixes plus,
per device, the last fix before it marked as context (``window_with_context``). Batches of
complete device-days alone lose the segment across each midnight between two batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gis.cells import (
    Track,
    cells_near_segments,
    edge_length_m,
    latlng_to_cells,
    sorted_fixes,
    us,
)
from gis.units import US_PER_S, day_start_us, local_day
from gis.visits import (
    GridVisits,
    firsts_lasts,
    grid_visits,
    merge_grouped,
    merge_intervals,
)

__all__ = [
    "CellVisits",
    "GridVisits",
    "cell_visits",
    "combine",
    "day_start_us",
    "grid_visits",
    "local_day",
    "merge_intervals",
    "window_with_context",
]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

DEFAULT_RES = 9
DEFAULT_MAX_GAP_S = 300.0
DEFAULT_MAX_SPEED_MPS = 40.0  # 144 km/h
DEFAULT_VISIT_GAP_S = 1_800.0
_ROW_FIELDS = (
    "cell", "device", "day", "first_seen", "last_seen", "fixes", "dwell_s", "metres", "sight_only",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class CellVisits:
    """Per (cell, device, day) visit aggregates: equal-length row arrays plus CSR passes.

    Attributes
    ----------
    cell, device : int64
        H3 index at ``res``; device id.
    day : int32
        Local (UTC+8) calendar day, days since 1970-01-01.
    first_seen, last_seen : int64
        First and last time the cell was seen that day, UTC µs.
    fixes : int32
        Raw fixes in the cell.
    dwell_s, metres : float64
        Time (s) and path length (m) of plausible segment pieces attributed to the cell.
    sight_only : bool
        Seen only within the sight radius, never on the path (then fixes, dwell, metres are 0).
    pass_offsets : int64, length rows + 1
        Row ``i``'s passes are ``pass_start[pass_offsets[i]:pass_offsets[i + 1]]`` (and pass_end).
    pass_start, pass_end : int64
        Pass intervals, UTC µs, in time order within a row.
    res : int
        H3 resolution of ``cell``.
    visit_gap_s : float
        Presences at most this far apart (s) merged into one pass.
    """

    cell: IntArray
    device: IntArray
    day: NDArray[np.int32]
    first_seen: IntArray
    last_seen: IntArray
    fixes: NDArray[np.int32]
    dwell_s: FloatArray
    metres: FloatArray
    sight_only: BoolArray
    pass_offsets: IntArray
    pass_start: IntArray
    pass_end: IntArray
    res: int = DEFAULT_RES
    visit_gap_s: float = DEFAULT_VISIT_GAP_S

    def __len__(self) -> int:
        return len(self.cell)

    @property
    def passes(self) -> NDArray[np.int32]:
        """Number of passes per row."""
        return np.diff(self.pass_offsets).astype(np.int32)

    def passes_of(self, row: int) -> tuple[IntArray, IntArray]:
        """(starts, ends) of the passes of one row, UTC µs."""
        lo, hi = self.pass_offsets[row], self.pass_offsets[row + 1]
        return self.pass_start[lo:hi], self.pass_end[lo:hi]

    def pass_lists(self) -> tuple[list[IntArray], list[IntArray]]:
        """Per-row pass starts and ends as arrays (views), e.g. for two ``bigint[]`` columns."""
        cuts = self.pass_offsets[1:-1]
        return np.split(self.pass_start, cuts), np.split(self.pass_end, cuts)

    def select(self, mask: ArrayLike) -> CellVisits:
        """The rows where ``mask`` (bool, one per row) holds, with their passes."""
        keep = np.asarray(mask, dtype=bool)
        counts = np.diff(self.pass_offsets)
        owned = np.repeat(keep, counts)
        offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        rows = {name: getattr(self, name)[keep] for name in _ROW_FIELDS}
        return CellVisits(
            **rows,
            pass_offsets=offsets,
            pass_start=self.pass_start[owned],
            pass_end=self.pass_end[owned],
            res=self.res,
            visit_gap_s=self.visit_gap_s,
        )

    @classmethod
    def empty(cls, res: int = DEFAULT_RES, visit_gap_s: float = DEFAULT_VISIT_GAP_S) -> CellVisits:
        """No rows."""
        i64 = np.empty(0, dtype=np.int64)
        return cls(
            cell=i64, device=i64, day=np.empty(0, np.int32), first_seen=i64, last_seen=i64,
            fixes=np.empty(0, np.int32), dwell_s=np.empty(0), metres=np.empty(0),
            sight_only=np.empty(0, bool), pass_offsets=np.zeros(1, np.int64),
            pass_start=i64, pass_end=i64, res=res, visit_gap_s=visit_gap_s,
        )  # fmt: skip


# --------------------------------------------------------------------------------- intervals


def _aggregate(
    rows: dict[str, NDArray], iv_row: IntArray, iv_start: IntArray, iv_end: IntArray,
    *, res: int, visit_gap_s: float,
) -> CellVisits:  # fmt: skip
    """Sum rows of equal (cell, device, day), in any order, and merge their intervals."""
    if len(rows["cell"]) == 0:
        return CellVisits.empty(res, visit_gap_s)
    order = np.lexsort((rows["day"], rows["device"], rows["cell"]))
    cell, device, day = rows["cell"][order], rows["device"][order], rows["day"][order]
    new = np.ones(len(cell), dtype=bool)
    new[1:] = (cell[1:] != cell[:-1]) | (device[1:] != device[:-1]) | (day[1:] != day[:-1])
    first, _ = firsts_lasts(new)
    group_of = np.empty(len(cell), dtype=np.int64)
    group_of[order] = np.cumsum(new) - 1
    pg, ps, pe = merge_grouped(group_of[iv_row], iv_start, iv_end, us(visit_gap_s))
    return CellVisits(
        cell=cell[first],
        device=device[first],
        day=day[first],
        first_seen=np.minimum.reduceat(rows["first_seen"][order], first),
        last_seen=np.maximum.reduceat(rows["last_seen"][order], first),
        fixes=np.add.reduceat(rows["fixes"][order], first).astype(np.int32),
        dwell_s=np.add.reduceat(rows["dwell_s"][order], first),
        metres=np.add.reduceat(rows["metres"][order], first),
        sight_only=np.logical_and.reduceat(rows["sight_only"][order], first),
        pass_offsets=np.searchsorted(pg, np.arange(len(first) + 1)).astype(np.int64),
        pass_start=ps,
        pass_end=pe,
        res=res,
        visit_gap_s=visit_gap_s,
    )


def combine(parts: Sequence[CellVisits]) -> CellVisits:
    """Aggregate partial results (e.g. of batches) into one.

    Rows of equal (cell, device, day) are summed (fixes, dwell, metres), their first/last seen
    widened, ``sight_only`` kept only if all parts say so, and their passes merged again.
    Exact when the parts come from complete devices, or from time windows given with
    ``window_with_context``; otherwise a segment between two batches is lost.

    Raises
    ------
    ValueError
        When the parts differ in ``res`` or ``visit_gap_s``.
    """
    if not parts:
        return CellVisits.empty()
    res, gap = parts[0].res, parts[0].visit_gap_s
    if any(p.res != res or p.visit_gap_s != gap for p in parts):
        raise ValueError("cannot combine results of different res or visit_gap_s")
    rows = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _ROW_FIELDS}
    counts = np.concatenate([np.diff(p.pass_offsets) for p in parts])
    iv_row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    iv_start = np.concatenate([p.pass_start for p in parts])
    iv_end = np.concatenate([p.pass_end for p in parts])
    return _aggregate(rows, iv_row, iv_start, iv_end, res=res, visit_gap_s=gap)


# ------------------------------------------------------------------------------------ engine


def _records(track: Track, cells: IntArray, res: int) -> dict[str, NDArray]:
    """Records in (device, time) order: each counted fix ``[t, t]`` in its cell, each segment
    piece ``[start, end]`` in its midpoint's cell. A plausible segment within one cell is one
    piece; the pieces of all others are located with one H3 call. ``device_at``: index of the
    first record of each device (``device``)."""
    n = len(track.t)
    cross = track.ok & (cells[:-1] != cells[1:])
    s_x = np.flatnonzero(cross)
    m_x = np.maximum(1, np.ceil(track.length[s_x] / (edge_length_m(res) / 2)).astype(np.int64))
    pieces = np.zeros(n, dtype=np.int64)
    pieces[:-1] = track.ok
    pieces[s_x] = m_x
    own = track.own.astype(np.int64)
    count = own + pieces
    off = np.cumsum(count) - count  # each point's first record
    total = int(off[-1] + count[-1])
    cell, start, end = (np.empty(total, dtype=np.int64) for _ in range(3))
    metres = np.zeros(total, dtype=np.float64)
    is_fix = np.zeros(total, dtype=np.int32)
    fix = np.flatnonzero(track.own)
    at = off[fix]
    cell[at], start[at], end[at], is_fix[at] = cells[fix], track.t[fix], track.t[fix], 1
    s_1 = np.flatnonzero(track.ok & ~cross)
    at = off[s_1] + own[s_1]
    cell[at], start[at], end[at] = cells[s_1], track.t[s_1], track.t[s_1 + 1]
    metres[at] = track.length[s_1]
    cut = track.pieces(s_x, m_x)
    at = off[cut.seg] + own[cut.seg] + cut.k
    start[at], end[at] = cut.start, cut.end
    cell[at] = latlng_to_cells(*track.at(cut.seg, (cut.k + 0.5) / cut.m), res)
    metres[at] = np.repeat(track.length[s_x] / m_x, m_x)
    device_first = np.flatnonzero(track.dev[1:] != track.dev[:-1]) + 1
    return {
        "cell": cell, "start": start, "end": end, "metres": metres, "is_fix": is_fix,
        "device_at": np.concatenate([[0], off[device_first]]),
        "device": np.concatenate([track.dev[:1], track.dev[device_first]]),
    }  # fmt: skip


def _runs(rec: dict[str, NDArray], *, visit_gap_s: float) -> dict[str, NDArray]:
    """Records collapsed into runs: one device in one cell on one day, no gap > visit_gap_s."""
    cell, start, end, device_at = rec["cell"], rec["start"], rec["end"], rec["device_at"]
    total = len(cell)
    if total == 0:  # context fixes only: nothing counted
        return {"cell": cell}
    day = local_day(start + (end - start) // 2)
    new = np.ones(total, dtype=bool)
    new[1:] = (cell[1:] != cell[:-1]) | (day[1:] != day[:-1])
    new[1:] |= start[1:] - end[:-1] > us(visit_gap_s)
    new[device_at[device_at < total]] = True
    first, last = firsts_lasts(new)
    return {
        "cell": cell[first],
        "device": rec["device"][np.searchsorted(device_at, first, side="right") - 1],
        "day": day[first],
        "start": start[first],
        "end": end[last],
        "fixes": np.add.reduceat(rec["is_fix"], first),
        "dwell_us": np.add.reduceat(end - start, first),
        "metres": np.add.reduceat(rec["metres"], first),
    }


def _rows(runs: dict[str, NDArray], *, res: int, visit_gap_s: float) -> CellVisits:
    """Runs → rows. A stable sort by cell keeps (device, day, time) order inside each cell, so
    passes need no further sorting."""
    if len(runs["cell"]) == 0:
        return CellVisits.empty(res, visit_gap_s)
    order = np.argsort(runs["cell"], kind="stable")
    cell, device, day = runs["cell"][order], runs["device"][order], runs["day"][order]
    start, end = runs["start"][order], runs["end"][order]
    new_row = np.ones(len(cell), dtype=bool)
    new_row[1:] = (cell[1:] != cell[:-1]) | (device[1:] != device[:-1]) | (day[1:] != day[:-1])
    new_pass = new_row.copy()
    new_pass[1:] |= start[1:] - end[:-1] > us(visit_gap_s)
    first, last = firsts_lasts(new_row)
    p_first, p_last = firsts_lasts(new_pass)
    return CellVisits(
        cell=cell[first],
        device=device[first],
        day=day[first],
        first_seen=start[first],
        last_seen=end[last],
        fixes=np.add.reduceat(runs["fixes"][order], first).astype(np.int32),
        dwell_s=np.add.reduceat(runs["dwell_us"][order], first) / US_PER_S,
        metres=np.add.reduceat(runs["metres"][order], first),
        sight_only=np.zeros(len(first), dtype=bool),
        pass_offsets=np.append((np.cumsum(new_pass) - 1)[first], len(p_first)).astype(np.int64),
        pass_start=start[p_first],
        pass_end=end[p_last],
        res=res,
        visit_gap_s=visit_gap_s,
    )


def _sight(track: Track, *, res: int, sight_m: float, visit_gap_s: float) -> CellVisits:
    """Cells whose centre is within ``sight_m`` of the path, in sight while a piece is.

    Plausible segments are cut into pieces of at most half a cell edge; a fix on no plausible
    segment is a piece of its own (the others are piece ends, covered by their pieces).
    """
    ok = np.flatnonzero(track.ok)
    counts = np.maximum(1, np.ceil(track.length[ok] / (edge_length_m(res) / 2))).astype(np.int64)
    cut = track.pieces(ok, counts)
    alat, alon = track.at(cut.seg, cut.k / cut.m)
    blat, blon = track.at(cut.seg, (cut.k + 1) / cut.m)
    on_segment = np.zeros(len(track.t), dtype=bool)
    on_segment[:-1] |= track.ok
    on_segment[1:] |= track.ok
    lone = np.flatnonzero(track.own & ~on_segment)
    alat, alon = np.append(alat, track.lat[lone]), np.append(alon, track.lon[lone])
    blat, blon = np.append(blat, track.lat[lone]), np.append(blon, track.lon[lone])
    ta, tb = np.append(cut.start, track.t[lone]), np.append(cut.end, track.t[lone])
    dev = track.dev[np.append(cut.seg, lone)]
    piece, cell = cells_near_segments(alat, alon, blat, blon, res=res, radius_m=sight_m)
    n, ta, tb = len(piece), ta[piece], tb[piece]
    rows: dict[str, NDArray] = {
        "cell": cell, "device": dev[piece], "day": local_day(ta + (tb - ta) // 2),
        "first_seen": ta, "last_seen": tb, "fixes": np.zeros(n, np.int32),
        "dwell_s": np.zeros(n), "metres": np.zeros(n), "sight_only": np.ones(n, dtype=bool),
    }  # fmt: skip
    return _aggregate(rows, np.arange(n), ta, tb, res=res, visit_gap_s=visit_gap_s)


def cell_visits(
    device: ArrayLike,
    t_us: ArrayLike,
    lat: ArrayLike,
    lon: ArrayLike,
    *,
    res: int = DEFAULT_RES,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    max_speed_mps: float = DEFAULT_MAX_SPEED_MPS,
    visit_gap_s: float = DEFAULT_VISIT_GAP_S,
    sight_m: float = 0.0,
    context: ArrayLike | None = None,
) -> CellVisits:
    """Per (fine cell, device, local day) visit aggregates of GPS fixes.

    Parameters
    ----------
    device
        Device ids, integers.
    t_us
        Fix times, integer microseconds since 1970-01-01 UTC.
    lat, lon
        WGS-84 degrees. Fixes may come in any order, mixed across devices; exact duplicate
        (device, t_us) fixes count once.
    res
        H3 resolution of the fine cells (9: ≈ 0.1 km², edge ≈ 200 m).
    max_gap_s
        Longest plausible time between consecutive fixes, s (at most a day).
    max_speed_mps
        Highest plausible implied speed, m/s (40 m/s = 144 km/h).
    visit_gap_s
        Presences of a device in a cell at most this far apart (s) form one pass.
    sight_m
        Sight radius, m: cells whose centre is within it of the path count as seen too.
    context
        Optional bool per fix marking, per device, the last fix before the batch's time window
        (``window_with_context``): it only starts the segment into the window.

    Returns
    -------
    CellVisits
        Rows sorted by (cell, device, day).

    Raises
    ------
    ValueError
        For unequal lengths, coordinates out of range, or parameters out of range.
    TypeError
        For non-integer ``device`` or ``t_us``.
    """
    if not 0 <= res <= 15:
        raise ValueError(f"res must be 0..15, got {res}")
    if not 0.0 < max_gap_s <= 86_400.0:
        raise ValueError(f"max_gap_s must be in (0, 86400], got {max_gap_s}")
    if max_speed_mps <= 0.0 or visit_gap_s < 0.0 or sight_m < 0.0:
        raise ValueError("max_speed_mps must be > 0, visit_gap_s and sight_m >= 0")
    dev, t, la, lo, ctx = sorted_fixes(device, t_us, lat, lon, context)
    if len(t) == 0:
        return CellVisits.empty(res, visit_gap_s)
    track = Track.of(dev, t, la, lo, ctx, max_gap_s=max_gap_s, max_speed_mps=max_speed_mps)
    cells = latlng_to_cells(track.lat, track.lon, res)
    runs = _runs(_records(track, cells, res), visit_gap_s=visit_gap_s)
    visits = _rows(runs, res=res, visit_gap_s=visit_gap_s)
    if sight_m > 0.0:
        sight = _sight(track, res=res, sight_m=sight_m, visit_gap_s=visit_gap_s)
        visits = combine([visits, sight])
    return visits


def window_with_context(
    device: ArrayLike, t_us: ArrayLike, lat: ArrayLike, lon: ArrayLike, start_us: int, end_us: int
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, BoolArray]:
    """Fixes with ``start_us <= t < end_us``, plus each device's last earlier fix as context.

    Give the five arrays to ``cell_visits(..., context=...)``; the results of consecutive
    windows then ``combine`` to the result of all fixes at once.

    Returns
    -------
    device, t_us, lat, lon, context
        Sorted by (device, t); ``context`` marks the prepended fixes.
    """
    dev, t, la, lo, _ = sorted_fixes(device, t_us, lat, lon)
    before = t < start_us
    next_other = np.append(dev[1:] != dev[:-1], True)
    last_before = before & (next_other | np.append(~before[1:], True))
    keep = ((t >= start_us) & (t < end_us)) | last_before
    return dev[keep], t[keep], la[keep], lo[keep], last_before[keep]
