"""Moving coverage rows between numpy and PostgreSQL: cell_visit and grid_visit, fixes.

``cell_visit`` rows are written with binary COPY built per pass count (each count is one fixed
numpy layout, so a million rows cost a few array assignments) and read back through ``unnest``
of the pass arrays (fixed-width again), then regrouped. ``grid_visit`` rows carry a bitmap and
visit arrays of varying length; there are only tens of thousands a day, built per row.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, sql

from api.db.copyio import (
    HEADER,
    TRAILER,
    fill_int8_array,
    int8_array_field,
    read_grouped,
    read_rows,
    write_rows,
)
from api.ingest.fixes import from_time_us
from gis.coverage import CellVisits
from gis.units import PG_EPOCH_DAYS, PG_EPOCH_US
from gis.visits import GridDays

CELL_VISIT_COLUMNS = [
    "device_id", "day", "h3", "first_seen", "last_seen", "fixes", "dwell_s", "metres",
    "sight_only", "pass_start", "pass_end",
]  # fmt: skip
GRID_VISIT_COLUMNS = [
    "layout_id", "day", "grid_id", "device_id", "fixes", "dwell_s", "metres", "first_seen",
    "last_seen", "seen", "visit_start", "visit_end",
]  # fmt: skip
_FIXED = [
    ("_n", ">i2"), ("_l_dev", ">i4"), ("dev", ">i4"), ("_l_day", ">i4"), ("day", ">i4"),
    ("_l_h3", ">i4"), ("h3", ">i8"), ("_l_fs", ">i4"), ("fs", ">i8"), ("_l_ls", ">i4"),
    ("ls", ">i8"), ("_l_fx", ">i4"), ("fx", ">i4"), ("_l_dw", ">i4"), ("dw", ">f4"),
    ("_l_m", ">i4"), ("m", ">f4"), ("_l_so", ">i4"), ("so", "u1"),
]  # fmt: skip


def encode_cell_visits(visits: CellVisits) -> bytes:
    """Binary COPY payload of ``cell_visit`` rows (all of ``visits``)."""
    counts = np.diff(visits.pass_offsets)
    chunks = [HEADER]
    for k in np.unique(counts):
        rows = np.flatnonzero(counts == k)
        layout = np.dtype(
            [
                *_FIXED,
                ("_l_ps", ">i4"),
                *int8_array_field("ps", int(k)),
                ("_l_pe", ">i4"),
                *int8_array_field("pe", int(k)),
            ]
        )
        rec = np.zeros(len(rows), dtype=layout)
        rec["_n"] = len(CELL_VISIT_COLUMNS)
        rec["_l_dev"], rec["_l_day"], rec["_l_fx"], rec["_l_dw"], rec["_l_m"] = 4, 4, 4, 4, 4
        rec["_l_h3"], rec["_l_fs"], rec["_l_ls"], rec["_l_so"] = 8, 8, 8, 1
        rec["dev"] = visits.device[rows]
        rec["day"] = visits.day[rows] - PG_EPOCH_DAYS
        rec["h3"] = visits.cell[rows]
        rec["fs"] = visits.first_seen[rows] - PG_EPOCH_US
        rec["ls"] = visits.last_seen[rows] - PG_EPOCH_US
        rec["fx"] = visits.fixes[rows]
        rec["dw"] = visits.dwell_s[rows]
        rec["m"] = visits.metres[rows]
        rec["so"] = visits.sight_only[rows]
        idx = visits.pass_offsets[rows][:, None] + np.arange(int(k))[None, :]
        fill_int8_array(rec, "ps", visits.pass_start[idx])
        fill_int8_array(rec, "pe", visits.pass_end[idx])
        chunks.append(rec.tobytes())
    chunks.append(TRAILER)
    return b"".join(chunks)


async def write_cell_visits(conn: AsyncConnection[Any], visits: CellVisits) -> None:
    if len(visits):
        await write_rows(conn, "cell_visit", CELL_VISIT_COLUMNS, encode_cell_visits(visits))


async def read_cell_visits(
    conn: AsyncConnection[Any],
    *,
    days: list[int],
    res: int,
    visit_gap_s: float,
    devices: list[int] | None = None,
) -> CellVisits:
    """``cell_visit`` rows of the given days (days since 1970, local) back as CellVisits."""
    query = sql.SQL(
        """
        SELECT c.device_id, c.day, c.h3, c.first_seen, c.last_seen, c.fixes, c.dwell_s,
               c.metres, c.sight_only, p.s, p.e
          FROM cell_visit c, unnest(c.pass_start, c.pass_end) AS p(s, e)
         WHERE c.day = ANY({days}::date[]) {devices}
         ORDER BY c.h3, c.device_id, c.day, p.s
        """
    ).format(
        days=sql.Literal([_date(d) for d in days]),
        devices=sql.SQL("AND c.device_id = ANY({})").format(sql.Literal(devices))
        if devices is not None
        else sql.SQL(""),
    )
    fields = [
        ("device", "int4"),
        ("day", "date"),
        ("cell", "int8"),
        ("first", "timestamptz"),
        ("last", "timestamptz"),
        ("fixes", "int4"),
        ("dwell", "float4"),
        ("metres", "float4"),
        ("sight", "bool"),
        ("s", "int8"),
        ("e", "int8"),
    ]
    rows = await read_rows(conn, query, fields)
    if len(rows) == 0:
        return CellVisits.empty(res, visit_gap_s)
    key_change = np.ones(len(rows), dtype=bool)
    key_change[1:] = (
        (rows["cell"][1:] != rows["cell"][:-1])
        | (rows["device"][1:] != rows["device"][:-1])
        | (rows["day"][1:] != rows["day"][:-1])
    )
    first = np.flatnonzero(key_change)
    head = rows[first]
    return CellVisits(
        cell=head["cell"].astype(np.int64),
        device=head["device"].astype(np.int64),
        day=(head["day"] + PG_EPOCH_DAYS).astype(np.int32),
        first_seen=head["first"].astype(np.int64) + PG_EPOCH_US,
        last_seen=head["last"].astype(np.int64) + PG_EPOCH_US,
        fixes=head["fixes"].astype(np.int32),
        dwell_s=head["dwell"].astype(np.float64),
        metres=head["metres"].astype(np.float64),
        sight_only=head["sight"].astype(bool),
        pass_offsets=np.r_[first, len(rows)].astype(np.int64),
        pass_start=rows["s"].astype(np.int64),
        pass_end=rows["e"].astype(np.int64),
        res=res,
        visit_gap_s=visit_gap_s,
    )


def _date(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def encode_grid_days(layout_id: int, days: GridDays) -> bytes:
    """Binary COPY payload of ``grid_visit`` rows (bitmaps and visit arrays vary per row)."""
    fixed = _GRID_VISIT_FIXED
    out = [HEADER]
    for i in range(len(days)):
        a, b = days.bitmap_offsets[i], days.bitmap_offsets[i + 1]
        bits = days.bitmaps[a:b].tobytes()
        va, vb = days.visit_offsets[i], days.visit_offsets[i + 1]
        out.append(
            fixed.pack(
                len(GRID_VISIT_COLUMNS),
                4,
                layout_id,
                4,
                int(days.day[i]) - PG_EPOCH_DAYS,
                4,
                int(days.grid[i]),
                4,
                int(days.device[i]),
                4,
                int(days.fixes[i]),
                4,
                float(days.dwell_s[i]),
                4,
                float(days.metres[i]),
                8,
                int(days.first_seen[i]) - PG_EPOCH_US,
                8,
                int(days.last_seen[i]) - PG_EPOCH_US,
            )
        )
        out.append(struct.pack(">ii", 4 + len(bits), int(days.n_bits[i])) + bits)
        out.append(_int8_array(days.visit_start[va:vb]))
        out.append(_int8_array(days.visit_end[va:vb]))
    out.append(TRAILER)
    return b"".join(out)


# field count, then (length, value) for layout, day, grid, device, fixes, dwell, metres, first, last
_GRID_VISIT_FIXED = struct.Struct(">h" + "ii" * 5 + "if" * 2 + "iq" * 2)


def _int8_array(values: NDArray[np.int64]) -> bytes:
    k = len(values)
    body = np.zeros(k, dtype=[("l", ">i4"), ("v", ">i8")])
    body["l"], body["v"] = 8, values
    if k == 0:
        return struct.pack(">iiii", 12, 0, 0, 20)  # an empty array has no dimensions
    return struct.pack(">iiiiii", 20 + 12 * k, 1, 0, 20, k, 1) + body.tobytes()


async def write_grid_days(conn: AsyncConnection[Any], layout_id: int, days: GridDays) -> None:
    if len(days):
        await write_rows(conn, "grid_visit", GRID_VISIT_COLUMNS, encode_grid_days(layout_id, days))


async def read_fixes(
    conn: AsyncConnection[Any], devices: list[int], start_us: int, end_us: int
) -> NDArray[np.void]:
    """Fixes of ``devices`` in [start, end) as (device, t raw PostgreSQL µs, lat, lon), grouped
    by device, any order within."""
    query = sql.SQL(
        "SELECT device_id, array_agg(fix_time), array_agg(lat), array_agg(lon) FROM position "
        "WHERE device_id = ANY({devices}) AND fix_time >= {lo} AND fix_time < {hi} "
        "GROUP BY device_id"
    ).format(
        devices=sql.Literal(devices),
        lo=sql.Literal(from_time_us(start_us)),
        hi=sql.Literal(from_time_us(end_us)),
    )
    return await read_grouped(
        conn,
        query,
        [("device", "int4")],
        [("t", "timestamptz"), ("lat", "float8"), ("lon", "float8")],
    )
