"""Rank responders for an incident: a KNN short list in PostGIS, ETAs from ``gis.dispatch``.

Vehicles come from ``device_state`` (latest fix, status and freshness in one table) by a KNN
scan on its GiST index (``shortlist``); exact great-circle distances and ETAs then decide, and
the nearer vehicles that cannot go are listed with their reasons. The grid worker of the
incident's grid is a candidate too, at their phone's fresh fix when a device has their phone
number as identifier, else at their grid.

The responder pool follows the escalation level: level 0 the incident's grids (vehicles
assigned to a grid holding the point, and the grid worker), then the village, township and
county (vehicles homed there). Before any escalation a dispatcher ranks only responders inside
their own scope; an escalated incident summons its level's responders whatever the scope, and
the caller records that widening.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.dispatch import ACTIVE, shortlist
from api.dispatch.routing import road_etas
from api.dispatch.shortlist import nearby_vehicles
from api.scope import Scope
from api.settings import DispatchSettings
from gis import dispatch as maths
from gis.units import METRES_PER_DEGREE_SPHERE

WORKER = sql.SQL(
    """
    SELECT st.id AS staff_id, st.name, st.phone, st.active, g.code AS grid_code,
           coalesce(ph.lon, ST_X(ST_PointOnSurface(g.geom))) AS lon,
           coalesce(ph.lat, ST_Y(ST_PointOnSurface(g.geom))) AS lat,
           ph.age_s, ph.lon IS NOT NULL AS located,
           EXISTS (SELECT 1 FROM incident o WHERE o.staff_id = st.id
                      AND o.status = ANY(%(active)s)) AS busy
      FROM grid g JOIN grid_layout l ON l.id = g.layout_id JOIN staff st ON st.id = g.worker_id
      LEFT JOIN LATERAL (
          SELECT s.lon, s.lat, extract(epoch FROM now() - s.fix_time)::float8 AS age_s
            FROM device d JOIN device_state s ON s.device_id = d.id
           WHERE (d.id = st.device_id OR d.identifier = st.phone)  -- the phone page's handheld,
             AND d.kind <> 'vehicle' AND d.enabled                 -- or a phone named by number
             AND s.fix_time > now() - %(max_age)s * interval '1 second'
           ORDER BY s.fix_time DESC LIMIT 1) ph ON true
     WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.code = %(grid)s AND {scope}
     ORDER BY length(nbs_prefix(l.area_code)) DESC LIMIT 1
    """
)
GRID_OF = """
SELECT (SELECT g.code FROM grid g JOIN grid_layout l ON l.id = g.layout_id
         WHERE l.status = 'active' AND l.purpose = 'patrol'
           AND ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326))
         ORDER BY length(nbs_prefix(l.area_code)) DESC LIMIT 1)
  FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS u(x, y, i) ORDER BY u.i
"""


@dataclass(frozen=True)
class Target:
    """What ranking needs to know about an incident."""

    id: int
    lon: float
    lat: float
    grid_code: str | None
    grid_codes: tuple[str, ...]
    village_code: str | None
    terrain: str
    level: int

    @classmethod
    def of(cls, incident: dict[str, Any]) -> Target:
        return cls(
            id=int(incident["id"]),
            lon=float(incident["lon"]),
            lat=float(incident["lat"]),
            grid_code=incident["grid_code"],
            grid_codes=tuple(incident.get("grid_codes") or ()),
            village_code=incident["village_code"],
            terrain=incident["terrain"],
            level=int(incident["escalation_level"]),
        )


@dataclass
class Ranking:
    """Ranked candidates, the excluded responders with reasons, and how it was computed."""

    mode: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    widened_to: str | None = None  # responders' unit beyond the caller's scope
    left_out: dict[str, Any] = field(default_factory=dict)


def eta_model(settings: DispatchSettings) -> maths.EtaModel:
    return maths.EtaModel(
        speeds_kmh=settings.speeds_kmh,
        worker_kmh=settings.worker_kmh,
        detour=settings.detour,
        offroad_kmh=settings.offroad_kmh,
    )


def level_pool(target: Target) -> tuple[sql.Composable, dict[str, Any], str | None]:
    """SQL predicate on ``d`` (device) for the vehicles of the target's escalation level
    (whatever the scope), its parameters and the level's unit code (None at the grid level)."""
    if target.level == 0:
        return (
            sql.SQL("d.assigned_grids && %(pool_grids)s::text[]"),
            {"pool_grids": list(target.grid_codes)},
            None,
        )
    unit = maths.unit_code(target.level, target.village_code)
    if unit is None:
        return sql.SQL("FALSE"), {}, None
    return sql.SQL("d.home_village LIKE %(pool_unit)s"), {"pool_unit": unit + "%"}, unit


def pool(target: Target, scope: Scope) -> tuple[sql.Composable, dict[str, Any], str | None]:
    """SQL predicate on ``d`` (device) for the responders of the target's level, its
    parameters, and the unit code when the level reaches beyond the scope (widening)."""
    where, params, unit = level_pool(target)
    if unit is not None and not scope.covers_area(unit):
        return where, params, unit
    command = scope.where("d.home_village")
    return sql.SQL("({} AND {})").format(where, command), {**params, **scope.params()}, None


async def _worker(
    conn: AsyncConnection[Any], target: Target, scope: Scope, settings: DispatchSettings
) -> dict[str, Any] | None:
    """The incident grid's worker, when the grid has one the caller may command."""
    if not target.grid_code:
        return None
    command = sql.SQL("TRUE") if target.level > 0 else scope.where("st.village_code", "g.code")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            WORKER.format(scope=command),
            {
                **scope.params(),
                "grid": target.grid_code,
                "active": list(ACTIVE),
                "max_age": settings.max_age_s,
            },
        )
        return await cur.fetchone()


def _round(value: Any, digits: int = 1) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


async def rank_candidates(
    conn: AsyncConnection[Any],
    scope: Scope,
    target: Target,
    settings: DispatchSettings,
    *,
    k: int = 5,
    mode: str = "straight",
    dataset_id: int | None = None,
) -> Ranking:
    """The ``k`` responders who reach the incident first, and why nearer ones were left out.

    Parameters
    ----------
    conn : AsyncConnection
        Database connection (read only).
    scope : Scope
        The dispatcher's scope: before escalation only responders homed inside it rank.
    target : Target
        The incident.
    settings : DispatchSettings
        Freshness, speeds, limits.
    k : int
        How many candidates.
    mode : str
        ``straight`` (great-circle ETA) or ``road`` (pgRouting on the active road dataset, or
        ``dataset_id``); road falls back to straight, with a note, without a usable graph.

    Returns
    -------
    Ranking
        Candidates best first (``distance_m`` great-circle, ``eta_s``, ``age_s``), and
        excluded responders (reasons from ``gis.dispatch.REASONS``).
    """
    model = eta_model(settings)
    where, params, widened = pool(target, scope)
    rows = await nearby_vehicles(conn, (target.lon, target.lat), where, params, settings, k)
    worker = await _worker(conn, target, scope, settings)
    ranking = Ranking(mode="straight", widened_to=widened)
    lon = np.array([r["lon"] for r in rows], dtype=np.float64)
    lat = np.array([r["lat"] for r in rows], dtype=np.float64)
    age = np.array([np.nan if r["age_s"] is None else r["age_s"] for r in rows], dtype=float)
    dist = maths.great_circle_m(lon, lat, target.lon, target.lat)
    reason = maths.exclusion_reasons(
        [r["status"] for r in rows],
        age,
        [r["enabled"] for r in rows],
        max_age_s=settings.max_age_s,
        offline_after_s=settings.offline_after_s,
    )
    eta = np.where(reason == "", model.straight_eta_s(dist, target.terrain), np.nan)
    if mode == "road":
        eta, ranking.mode, ranking.note = await road_etas(
            conn, (target.lon, target.lat), lon, lat, eta, settings, model, dataset_id=dataset_id
        )
        reason[(reason == "") & np.isnan(eta)] = maths.NO_ROUTE
    reason[(reason == "") & (eta > settings.max_eta_s)] = maths.TOO_FAR
    ok = np.flatnonzero(reason == "")
    offered = _worker_offer(ranking, worker, target, model, settings)
    extra = [] if offered is None else [offered]
    order = maths.rank_order(
        np.r_[eta[ok], [c["eta_s"] for c in extra]],
        np.r_[dist[ok], [c["distance_m"] for c in extra]],
        np.r_[age[ok], [np.nan if c["age_s"] is None else c["age_s"] for c in extra]],
    )[:k]
    ranking.candidates = [
        _vehicle_out(rows[ok[j]], dist[ok[j]], eta[ok[j]], ranking.mode)
        if j < len(ok)
        else extra[0]
        for j in order
    ]
    reach = max((c["distance_m"] for c in ranking.candidates), default=np.inf)
    left_out = [
        i
        for i in np.argsort(dist, kind="stable")
        if reason[i] and (dist[i] <= reach or reason[i] in (maths.TOO_FAR, maths.NO_ROUTE))
    ]
    ranking.excluded = (
        ranking.excluded
        + [
            {
                "kind": "vehicle",
                "device_id": rows[i]["device_id"],
                "identifier": rows[i]["identifier"],
                "name": rows[i]["name"],
                "reason": str(reason[i]),
                "distance_m": _round(dist[i]),
                "age_s": _round(age[i]),
            }
            for i in left_out
        ]
    )[: settings.max_excluded]
    await _grids_of(conn, ranking.candidates)
    ranking.left_out = await left_out_counts(
        conn,
        target,
        scope,
        settings,
        within_m=reach if np.isfinite(reach) else shortlist.reach_m(settings),
        widened=widened is not None,
    )
    for rank, candidate in enumerate(ranking.candidates, 1):
        candidate["rank"] = rank
    return ranking


def _vehicle_out(row: dict[str, Any], dist: float, eta: float, mode: str) -> dict[str, Any]:
    return {
        "kind": "vehicle",
        "device_id": row["device_id"],
        "identifier": row["identifier"],
        "name": row["name"] or row["identifier"],
        "plate": row["plate"],
        "home_village": row["home_village"],
        "distance_m": _round(dist),
        "eta_s": _round(eta),
        "eta_basis": mode,
        "age_s": _round(row["age_s"]),
        "lon": round(float(row["lon"]), 7),
        "lat": round(float(row["lat"]), 7),
        "position": "fix",
    }


def _worker_offer(
    ranking: Ranking,
    worker: dict[str, Any] | None,
    target: Target,
    model: maths.EtaModel,
    settings: DispatchSettings,
) -> dict[str, Any] | None:
    """The grid worker as a candidate at a straight-line ETA (on foot, horse or motorbike);
    a busy, inactive or too distant worker goes to ``ranking.excluded`` instead."""
    if worker is None:
        return None
    dist = float(maths.great_circle_m(worker["lon"], worker["lat"], target.lon, target.lat))
    eta = float(model.straight_eta_s(dist, target.terrain, worker=True))
    reason = (
        maths.INACTIVE
        if not worker["active"]
        else maths.BUSY
        if worker["busy"]
        else maths.TOO_FAR
        if eta > settings.max_eta_s
        else ""
    )
    if reason:
        ranking.excluded.append(
            {
                "kind": "worker",
                "device_id": None,
                "staff_id": worker["staff_id"],
                "identifier": worker["phone"],
                "name": worker["name"],
                "reason": reason,
                "distance_m": _round(dist),
                "age_s": _round(worker["age_s"]),
            }
        )
        return None
    return {
        "kind": "worker",
        "staff_id": worker["staff_id"],
        "name": worker["name"],
        "phone": worker["phone"],
        "distance_m": _round(dist),
        "eta_s": _round(eta),
        "eta_basis": "straight",
        "age_s": _round(worker["age_s"]),
        "lon": round(float(worker["lon"]), 7),
        "lat": round(float(worker["lat"]), 7),
        "position": "fix" if worker["located"] else "grid",
        "grid_code": worker["grid_code"],
    }


async def _grids_of(conn: AsyncConnection[Any], candidates: list[dict[str, Any]]) -> None:
    """The patrol grid each candidate is in (workers at their grid keep theirs)."""
    todo = [c for c in candidates if c.get("position") == "fix"]
    if not todo:
        return
    rows = await (
        await conn.execute(GRID_OF, ([c["lon"] for c in todo], [c["lat"] for c in todo]))
    ).fetchall()
    for candidate, row in zip(todo, rows, strict=True):
        candidate["grid_code"] = row[0]


LEFT_OUT = sql.SQL(
    """
    SELECT count(*) FILTER (WHERE NOT x.in_level)::int AS outside_level,
           count(*) FILTER (WHERE x.in_level AND NOT x.in_scope)::int AS outside_scope
      FROM (SELECT coalesce({level}, false) AS in_level, coalesce({scope}, false) AS in_scope
              FROM device_state s JOIN device d ON d.id = s.device_id
             WHERE d.kind = 'vehicle' AND d.enabled AND s.status = 'available'
               AND s.fix_time > now() - %(max_age)s * interval '1 second'
               AND s.geom && ST_Expand(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326),
                                       %(dx)s, %(dy)s)
               AND ST_DWithin(s.geom::geography,
                              ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography,
                              %(within)s)) x
    """
)


async def left_out_counts(
    conn: AsyncConnection[Any],
    target: Target,
    scope: Scope,
    settings: DispatchSettings,
    *,
    within_m: float,
    widened: bool,
) -> dict[str, Any]:
    """How many free, fresh vehicles within ``within_m`` of the incident were left out because
    they are beyond the escalation level's unit (``outside_level``: escalating summons them)
    or homed outside the caller's scope (``outside_scope``).

    Counts only: vehicles outside the scope are never named to a scoped caller.
    """
    level, params, _ = level_pool(target)
    in_scope = sql.SQL("TRUE") if widened else scope.where("d.home_village")
    dy = within_m / METRES_PER_DEGREE_SPHERE
    dx = dy / max(float(np.cos(np.radians(min(abs(target.lat) + dy, 89.0)))), 0.01)
    row = await (
        await conn.execute(
            LEFT_OUT.format(level=level, scope=in_scope),
            {
                **params,
                **scope.params(),
                "lon": target.lon,
                "lat": target.lat,
                "dx": dx,
                "dy": dy,
                "within": within_m,
                "max_age": settings.max_age_s,
            },
        )
    ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns one row
    return {
        "within_m": round(float(within_m), 1),
        "outside_level": int(row[0]),
        "outside_scope": int(row[1]),
        "level": maths.LEVELS[target.level],
    }
