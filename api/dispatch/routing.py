"""Road travel times with pgRouting: one Dijkstra from the incident's node to many responders.

Travel runs from each responder to the incident, so the search runs on the reversed graph
(``cost`` and ``reverse_cost`` swapped) from the incident's nearest node: one-to-many, one
search. Only edges in the box around the incident and the responders (plus a margin) are
loaded, which keeps a county-sized graph fast; responders unreachable inside that box are
tried once more in a box four times the margin before they count as ``no_route``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection

from api.settings import DispatchSettings
from gis.dispatch import EtaModel
from gis.units import METRES_PER_DEGREE_SPHERE as M_PER_DEG

SNAP = """
SELECT u.i, n.id, ST_Distance(n.geom::geography,
                              ST_SetSRID(ST_MakePoint(u.x, u.y), 4326)::geography)
  FROM unnest(%(x)s::float8[], %(y)s::float8[]) WITH ORDINALITY AS u(x, y, i)
 CROSS JOIN LATERAL (SELECT id, geom FROM road_node WHERE dataset_id = %(dataset)s
                      ORDER BY geom <-> ST_SetSRID(ST_MakePoint(u.x, u.y), 4326) LIMIT 1) n
 ORDER BY u.i
"""
COSTS = """
SELECT end_vid, agg_cost FROM pgr_dijkstraCost(%(edges)s, %(origin)s::bigint,
                                               %(targets)s::bigint[], directed => true)
"""
EDGES = (
    "SELECT id, source, target, reverse_cost AS cost, cost AS reverse_cost FROM road_edge "
    "WHERE dataset_id = {dataset:d} AND geom && ST_MakeEnvelope({x0!r}, {y0!r}, {x1!r}, {y1!r}, "
    "4326)"
)


@dataclass(frozen=True)
class RoadTimes:
    """Network seconds from each responder's node to the incident's node (NaN: no route),
    the off-road distances to the nodes, and the incident's own distance to its node."""

    network_s: NDArray[np.float64]
    access_m: NDArray[np.float64]
    incident_access_m: float


async def active_dataset(conn: AsyncConnection[Any]) -> int | None:
    """The road graph dispatch routes on (the active dataset), if any and if pgRouting is
    installed."""
    row = await (
        await conn.execute(
            "SELECT (SELECT id FROM road_dataset WHERE active), "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgrouting')"
        )
    ).fetchone()
    if row is None or row[0] is None or not row[1]:
        return None
    return int(row[0])


async def snap(
    conn: AsyncConnection[Any], dataset_id: int, lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Nearest road node of each point and its distance (metres); empty graph → empty arrays."""
    rows = await (
        await conn.execute(SNAP, {"x": lon.tolist(), "y": lat.tolist(), "dataset": dataset_id})
    ).fetchall()
    if len(rows) != len(lon):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.array([r[1] for r in rows], dtype=np.int64), np.array([r[2] for r in rows])


def _box(
    lon: NDArray[np.float64], lat: NDArray[np.float64], margin_m: float
) -> tuple[float, float, float, float]:
    dy = margin_m / M_PER_DEG
    dx = dy / max(np.cos(np.radians(float(np.max(np.abs(lat))))), 0.05)
    return (
        float(lon.min() - dx),
        float(lat.min() - dy),
        float(lon.max() + dx),
        float(lat.max() + dy),
    )


async def _costs(
    conn: AsyncConnection[Any],
    dataset_id: int,
    origin: int,
    targets: NDArray[np.int64],
    box: tuple[float, float, float, float],
) -> dict[int, float]:
    x0, y0, x1, y1 = box
    edges = EDGES.format(dataset=dataset_id, x0=x0, y0=y0, x1=x1, y1=y1)
    rows = await (
        await conn.execute(
            COSTS,
            {"edges": edges, "origin": origin, "targets": np.unique(targets).tolist()},
        )
    ).fetchall()
    return {int(r[0]): float(r[1]) for r in rows}


async def road_times(
    conn: AsyncConnection[Any],
    dataset_id: int,
    incident: tuple[float, float],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    *,
    margin_m: float,
) -> RoadTimes:
    """Network times from responders at (``lon``, ``lat``) to the incident.

    Parameters
    ----------
    conn : AsyncConnection
        A connection to the database holding the graph.
    dataset_id : int
        The road dataset to route on.
    incident : (float, float)
        Incident lon/lat (WGS-84).
    lon, lat : ndarray
        Responder positions.
    margin_m : float
        Edges within this margin of the box around all points are searched.

    Returns
    -------
    RoadTimes
        Seconds per responder (NaN where no route), off-road distances.
    """
    all_lon = np.r_[incident[0], lon]
    all_lat = np.r_[incident[1], lat]
    nodes, access = await snap(conn, dataset_id, all_lon, all_lat)
    if len(nodes) == 0:
        nan = np.full(len(lon), np.nan)
        return RoadTimes(nan, nan, float("nan"))
    origin, targets = int(nodes[0]), nodes[1:]
    cost = await _costs(conn, dataset_id, origin, targets, _box(all_lon, all_lat, margin_m))
    missing = np.array([t != origin and t not in cost for t in targets.tolist()], dtype=bool)
    if missing.any():
        wider = _box(all_lon, all_lat, max(margin_m, 1000.0) * 4)
        cost.update(await _costs(conn, dataset_id, origin, targets[missing], wider))
    network = np.array(
        [0.0 if t == origin else cost.get(t, np.nan) for t in targets.tolist()], dtype=np.float64
    )
    return RoadTimes(network, access[1:], float(access[0]))


async def road_etas(
    conn: AsyncConnection[Any],
    incident: tuple[float, float],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    straight: NDArray[np.float64],
    settings: DispatchSettings,
    model: EtaModel,
    *,
    dataset_id: int | None = None,
) -> tuple[NDArray[np.float64], str, str | None]:
    """Road ETAs for the responders with a finite ``straight`` ETA (NaN elsewhere, and where no
    route exists), with the mode used and a note; without a usable graph the straight ETAs
    come back with mode ``straight`` and a note saying why."""
    dataset = dataset_id if dataset_id is not None else await active_dataset(conn)
    if dataset is None:
        return straight, "straight", "no road graph (or no pgRouting): straight-line ETAs"
    ok = np.flatnonzero(np.isfinite(straight))
    if len(ok) == 0:
        return straight, "road", None
    times = await road_times(
        conn, dataset, incident, lon[ok], lat[ok], margin_m=settings.road_margin_m
    )
    if not times.incident_access_m <= settings.road_snap_m:
        return straight, "straight", "the incident is far from every road: straight-line ETAs"
    eta = np.full(len(lon), np.nan)
    eta[ok] = model.road_eta_s(times.network_s, times.access_m, times.incident_access_m)
    return eta, "road", None
