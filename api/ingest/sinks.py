"""What follows from stored fixes: the ingest *sinks*, run in the storing transaction.

``api.ingest.store`` writes the fixes that passed its filters, then calls each sink registered
with its ``Ingestor`` with the same connection, inside the same transaction: a fix and
everything it implies commit together or not at all. The store knows no sink by name; a role
or a test registers others (or none) with ``Ingestor(sinks=…)``.

The standard sinks, in their order:

- ``live_state`` — each device's newest fix (``device_state``: the live map, freshness);
- ``coverage_marks`` — the (device, China-local day) pairs whose coverage must be recomputed
  (``coverage_dirty``, taken by the worker role's coverage updater);
- ``arrivals`` — an assigned responder's fix inside its incident's radius marks the arrival
  (``api.dispatch.arrival``).

A small group's transaction is pipelined (``api.ingest.store``): statements go out without
waiting for their answers. A sink that reads (``arrivals`` reads the open assignments) is
therefore last: its read is the round trip that brings every result before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, sql

from api.dispatch.arrival import arrive, open_assignments
from gis.units import CHINA_OFFSET_US, DAY_US


@dataclass(frozen=True)
class StoredFixes:
    """The fixes of a batch that passed the filters, in WGS-84, with their optional columns
    (``api.ingest.copybin.OPTIONAL``, NaN = none) and extras (JSON text or None)."""

    device_id: NDArray[np.int64]
    time_us: NDArray[np.int64]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    optional: dict[str, NDArray[np.float64]]
    extras: NDArray[np.object_]
    authenticated: NDArray[np.bool_]


Sink = Callable[[AsyncConnection[Any], StoredFixes, str], Awaitable[None]]
"""``sink(conn, fixes, protocol)``: act on the fixes just stored, in their transaction."""

LIVE_STATE = """
INSERT INTO device_state AS s (device_id, fix_time, lat, lon, geom, speed, course, received_at,
                               protocol)
SELECT d, 'epoch'::timestamptz + t * interval '1 microsecond', la, lo,
       ST_SetSRID(ST_MakePoint(lo, la), 4326), sp, co, now(), %(protocol)s
  FROM unnest(%(device)s::int[], %(t)s::bigint[], %(lat)s::float8[], %(lon)s::float8[],
              %(speed)s::real[], %(course)s::real[]) AS u(d, t, la, lo, sp, co)
ON CONFLICT (device_id) DO UPDATE SET
    fix_time = EXCLUDED.fix_time, lat = EXCLUDED.lat, lon = EXCLUDED.lon, geom = EXCLUDED.geom,
    speed = EXCLUDED.speed, course = EXCLUDED.course, received_at = EXCLUDED.received_at,
    protocol = EXCLUDED.protocol
 WHERE s.fix_time < EXCLUDED.fix_time
"""


async def live_state(conn: AsyncConnection[Any], fixes: StoredFixes, protocol: str) -> None:
    """Each device's newest fix of the batch, computed here, upserted if newer."""
    order = np.lexsort((fixes.time_us, fixes.device_id))
    ids = fixes.device_id[order]
    last = order[np.r_[ids[1:] != ids[:-1], True]]

    def floats(values: NDArray[np.float64]) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in values]

    await conn.execute(
        LIVE_STATE,
        {
            "protocol": protocol,
            "device": fixes.device_id[last].tolist(),
            "t": fixes.time_us[last].tolist(),
            "lat": fixes.lat[last].tolist(),
            "lon": fixes.lon[last].tolist(),
            "speed": floats(fixes.optional["speed"][last]),
            "course": floats(fixes.optional["course"][last]),
        },
    )


# A fix this close to local midnight changes the segment into or out of the next/previous day
# (the coverage engine bridges gaps up to GRIDPATROL_COVERAGE_MAX_GAP_S ≤ 1 h).
MIDNIGHT_MARGIN_US = 3_600_000_000


# A mark already there is locked until the marking transaction commits (so an update step
# skips it, never reading before these fixes are visible); if an update step has claimed it,
# ``remarked`` keeps it for another recompute (see api.coverage.update).
REMARK = sql.SQL(
    " ON CONFLICT (device_id, day) DO UPDATE SET remarked = true "
    "WHERE coverage_dirty.claimed_at IS NOT NULL"
)


async def mark_dirty(
    conn: AsyncConnection[Any], device_id: NDArray[np.int64], time_us: NDArray[np.int64]
) -> None:
    """Mark the (device, local day) pairs whose cell visits these new fixes change."""
    if len(device_id) == 0:
        return
    local = time_us + CHINA_OFFSET_US  # coverage days are China local days (gis.units)
    day = local // DAY_US
    tod = local % DAY_US
    devices = np.r_[
        device_id, device_id[tod < MIDNIGHT_MARGIN_US], device_id[tod > DAY_US - MIDNIGHT_MARGIN_US]
    ]
    days = np.r_[day, day[tod < MIDNIGHT_MARGIN_US] - 1, day[tod > DAY_US - MIDNIGHT_MARGIN_US] + 1]
    pairs = np.unique(np.stack([devices, days], axis=1), axis=0)
    await conn.execute(
        sql.SQL(
            "INSERT INTO coverage_dirty (device_id, day) "
            "SELECT d, date '1970-01-01' + n FROM unnest(%s::int[], %s::int[]) AS u(d, n)"
        )
        + REMARK,
        (pairs[:, 0].tolist(), pairs[:, 1].tolist()),
    )


async def coverage_marks(
    conn: AsyncConnection[Any],
    fixes: StoredFixes,
    protocol: str,  # noqa: ARG001 - every protocol's fixes count
) -> None:
    """The coverage marks of the stored fixes (``mark_dirty``)."""
    await mark_dirty(conn, fixes.device_id, fixes.time_us)


async def arrivals(
    conn: AsyncConnection[Any],
    fixes: StoredFixes,
    protocol: str,  # noqa: ARG001 - authentication, not the protocol, decides
) -> None:
    """Arrivals of assigned responders (only authenticated fixes may mark one)."""
    assignments = await open_assignments(conn, fixes.device_id)
    await arrive(
        conn,
        assignments,
        fixes.device_id,
        fixes.time_us,
        fixes.lat,
        fixes.lon,
        authenticated=fixes.authenticated,
    )


STANDARD_SINKS: tuple[Sink, ...] = (live_state, coverage_marks, arrivals)
