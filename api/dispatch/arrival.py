"""Arrival detection on the ingest path: a dispatched vehicle's fix within R of its incident.

Called by ``Ingestor`` in the transaction that stores the fixes, so an arrival commits with the
fix that proves it. One indexed query finds the open assignments of the batch's devices (none
in the usual case, and then that is all it costs; it is sent with the storing statements and
read after them); the distances are numpy over those devices' fixes; one statement marks the
arrivals. A fix taken before the dispatch does not count, nor does an unauthenticated one (an
OsmAnd fix of a legacy device that presented no key: anyone knowing the id could have sent it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection, AsyncCursor

from gis.crs import haversine_m

OPEN_ASSIGNMENTS = """
SELECT i.id, i.device_id, ST_X(i.geom), ST_Y(i.geom), i.arrival_radius_m,
       (extract(epoch FROM i.dispatched_at) * 1e6)::bigint
  FROM incident i
 WHERE i.device_id = ANY(%s) AND i.status IN ('dispatched', 'accepted', 'arrived')
   AND i.status <> 'arrived'
"""
ARRIVE = """
WITH hit AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(t)s::bigint[], %(m)s::float8[]) AS u(id, t, m)
), moved AS (
    UPDATE incident i
       SET status = 'arrived', arrival_source = 'fix',
           arrived_at = 'epoch'::timestamptz + hit.t * interval '1 microsecond'
      FROM hit WHERE i.id = hit.id AND i.status IN ('dispatched', 'accepted')
    RETURNING i.id, i.device_id, i.arrived_at, hit.m
), stamped AS (
    UPDATE dispatch d SET arrived_at = moved.arrived_at
      FROM moved WHERE d.incident_id = moved.id AND d.ended_at IS NULL
)
INSERT INTO incident_event (incident_id, at, kind, actor, detail)
SELECT id, arrived_at, 'arrived', 'fix',
       jsonb_build_object('device_id', device_id, 'distance_m', round(m::numeric, 1))
  FROM moved
"""


async def open_assignments(
    conn: AsyncConnection[Any], device_id: NDArray[np.int64]
) -> AsyncCursor[Any]:
    """Send the query for the open assignments of these devices; the rows are fetched later
    (``arrive``), so on a pipelined connection it shares a round trip with the storing."""
    return await conn.execute(OPEN_ASSIGNMENTS, (np.unique(device_id).tolist(),))


async def arrive(
    conn: AsyncConnection[Any],
    assignments: AsyncCursor[Any],
    device_id: NDArray[np.int64],
    time_us: NDArray[np.int64],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    *,
    authenticated: NDArray[np.bool_] | None = None,
) -> int:
    """Mark incidents arrived whose assigned vehicle (a row of ``assignments``) has a fix in
    this batch within the incident's arrival radius, taken after the dispatch; returns how many.

    Parameters
    ----------
    conn : AsyncConnection
        The storing transaction's connection.
    assignments : AsyncCursor
        From ``open_assignments`` on the same devices.
    device_id, time_us, lat, lon : ndarray
        The stored fixes (WGS-84, UTC microseconds).
    authenticated : ndarray of bool, optional
        Per fix, whether its sender proved to be the device (default: all). Only those count.
    """
    rows = await assignments.fetchall()  # read even when no fix counts: it ends the pipeline
    if authenticated is not None and not authenticated.all():
        device_id, time_us = device_id[authenticated], time_us[authenticated]
        lat, lon = lat[authenticated], lon[authenticated]
    if not rows or len(device_id) == 0:
        return 0
    incident = np.array([r[0] for r in rows], dtype=np.int64)
    devices = np.array([r[1] for r in rows], dtype=np.int64)
    order = np.argsort(devices)
    devices, incident = devices[order], incident[order]
    facts = np.array([r[2:6] for r in rows], dtype=np.float64)[order]
    which = np.searchsorted(devices, device_id).clip(0, len(devices) - 1)
    mine = np.flatnonzero(devices[which] == device_id)
    k = which[mine]
    metres = haversine_m(lon[mine], lat[mine], facts[k, 0], facts[k, 1])
    inside = (metres <= facts[k, 2]) & (time_us[mine] >= facts[k, 3])
    if not inside.any():
        return 0
    first = np.full(len(incident), np.iinfo(np.int64).max)
    np.minimum.at(first, k[inside], time_us[mine][inside])
    closest = np.full(len(incident), np.inf)
    np.minimum.at(closest, k[inside], metres[inside])
    hit = np.flatnonzero(first < np.iinfo(np.int64).max)
    await conn.execute(
        ARRIVE,
        {"ids": incident[hit].tolist(), "t": first[hit].tolist(), "m": closest[hit].tolist()},
    )
    return len(hit)
