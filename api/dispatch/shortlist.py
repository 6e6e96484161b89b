"""The short list of vehicles near an incident: KNN scans of ``device_state`` on its GiST index.

One scan returns the nearest vehicles in any state (for the ranking and for saying why nearer
ones were left out). Planar degrees (what ``geom <-> point`` orders by) understate east–west
distances, so the list is checked against a lower bound of the true distance of anything it
did not reach; when the ``k`` nearest eligible vehicles might lie beyond it, or too few
eligible ones are among the nearest, a second scan asks for eligible vehicles only, within
the distance an ETA limit allows, as many as it takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.settings import DispatchSettings
from gis import dispatch as maths
from gis.units import METRES_PER_DEGREE_SPHERE

VEHICLE_COLUMNS = sql.SQL(
    "s.device_id, d.identifier, d.name, d.plate, d.home_village, d.enabled, s.status, s.lon, "
    "s.lat, extract(epoch FROM now() - s.fix_time)::float8 AS age_s, "
    "s.geom <-> ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS knn"
)
NEAREST = sql.SQL(
    """
    SELECT {cols} FROM device_state s JOIN device d ON d.id = s.device_id
     WHERE d.kind = 'vehicle' AND {pool}{eligible}
     ORDER BY s.geom <-> ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) LIMIT %(n)s
    """
)
ELIGIBLE = sql.SQL(
    " AND s.status = 'available' AND d.enabled "
    "AND s.fix_time > now() - %(max_age)s * interval '1 second' "
    "AND s.geom && ST_Expand(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), %(dx)s, %(dy)s)"
)
MAX_SHORT_LIST = 4096


async def nearby_vehicles(
    conn: AsyncConnection[Any],
    point: tuple[float, float],
    where: sql.Composable,
    params: dict[str, Any],
    settings: DispatchSettings,
    k: int,
) -> list[dict[str, Any]]:
    """The nearest vehicles of the pool in any state, and enough eligible ones that the ``k``
    nearest eligible vehicles are certainly among them (one KNN scan in the usual case)."""
    n = k * settings.prefilter
    limit = n + settings.max_excluded
    reach = reach_m(settings)
    dy = reach / METRES_PER_DEGREE_SPHERE
    dx = dy / max(np.cos(np.radians(min(abs(point[1]) + dy, 89.0))), 0.01)
    values = {**params, "lon": point[0], "lat": point[1], "max_age": settings.max_age_s}
    values.update(dx=dx, dy=dy)
    rows = await _nearest(conn, where, {**values, "n": limit}, eligible=False)
    if len(rows) < limit:
        return rows  # the whole pool
    if _exact([r for r in rows if _eligible(r, settings)], rows[-1]["knn"], point, k):
        return rows
    # few eligible vehicles among the nearest (or one could hide behind the short list): ask
    # for eligible ones within reach of an ETA limit, as many as it takes to be sure
    while True:
        more = await _nearest(conn, where, {**values, "n": n}, eligible=True)
        if len(more) < n or n >= MAX_SHORT_LIST or _exact(more, more[-1]["knn"], point, k):
            break
        n *= 4
    seen = {r["device_id"] for r in rows}
    return rows + [r for r in more if r["device_id"] not in seen]


def reach_m(settings: DispatchSettings) -> float:
    """The farthest a vehicle can be and still arrive within ``max_eta_s`` (straight line)."""
    fastest = max(settings.speeds_kmh.values()) / 3.6
    return settings.max_eta_s * fastest / settings.detour


def _exact(eligible: list[dict[str, Any]], knn: float, point: tuple[float, float], k: int) -> bool:
    """True when the ``k`` nearest of ``eligible`` are surely the ``k`` nearest of all eligible
    vehicles, given that every vehicle within ``knn`` planar degrees was looked at."""
    if len(eligible) < k:
        return False
    dist = np.sort(
        maths.great_circle_m([r["lon"] for r in eligible], [r["lat"] for r in eligible], *point)
    )
    return bool(dist[k - 1] <= maths.knn_lower_bound_m(knn, point[1]))


async def _nearest(
    conn: AsyncConnection[Any], where: sql.Composable, values: dict[str, Any], *, eligible: bool
) -> list[dict[str, Any]]:
    query = NEAREST.format(
        cols=VEHICLE_COLUMNS, pool=where, eligible=ELIGIBLE if eligible else sql.SQL("")
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, values)
        return await cur.fetchall()


def _eligible(row: dict[str, Any], settings: DispatchSettings) -> bool:
    age = row["age_s"]
    return bool(
        row["status"] == "available"
        and row["enabled"]
        and age is not None
        and age <= settings.max_age_s
    )
