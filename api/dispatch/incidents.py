"""Incidents (警情): create at a point, an alert point or a grid; read one; list as GeoJSON.

An incident is placed once, when created: the patrol grid holding its point (any active patrol
layout), the codes of every active layout's grid holding it (the grid-level responders), its
village, and the admin area that scopes it. A point outside every grid is still dispatchable:
it is flagged ``outside_grids`` and belongs to the nearest village (within
``max_outside_km``), so the village's responders and dispatchers see it.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, model_validator

from api import audit, geo
from api.auth import Principal
from api.dispatch import OPEN, STATUSES
from api.dispatch.escalation import notify
from api.errors import Forbidden, NotFound, Unprocessable
from api.scope import Scope
from api.settings import DispatchSettings
from gis.codes import CodeError, parse_grid_code
from gis.dispatch import terrain_class


class IncidentIn(BaseModel):
    """A new incident: what, how urgent, and where (exactly one of the three forms)."""

    kind: str = Field(min_length=1, max_length=64, description="e.g. theft, fire, injury")
    priority: int = Field(ge=1, le=5, description="1 most urgent … 5 least")
    description: str | None = Field(default=None, max_length=4000)
    reporter: str | None = Field(default=None, max_length=200, description="caller, phone")
    lon: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    lat: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    alert_point_id: int | None = Field(default=None, description="报警点 the call came from")
    grid_code: str | None = Field(default=None, description="15-digit grid code")

    @model_validator(mode="after")
    def _one_location(self) -> IncidentIn:
        if (self.lon is None) != (self.lat is None):
            missing = "lat" if self.lat is None else "lon"
            raise ValueError(
                f"{missing} is required together with {({'lat', 'lon'} - {missing}).pop()}"
            )
        forms = [self.lon is not None, self.alert_point_id is not None, self.grid_code is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one location: lon+lat, alert_point_id or grid_code")
        return self


SELECT = sql.SQL(
    """
    SELECT i.id, i.kind, i.priority, i.status, i.description, i.reporter,
           round(ST_X(i.geom)::numeric, 7)::float8 AS lon,
           round(ST_Y(i.geom)::numeric, 7)::float8 AS lat,
           i.grid_code, i.village_code, v.name_zh AS village_name, i.area_code,
           i.alert_point_id, i.escalation_level,
           (ARRAY['grid', 'village', 'township', 'county'])[i.escalation_level + 1]
               AS escalation,
           i.escalated_at, i.outside_grids, round(i.outside_m::numeric, 1)::float8 AS outside_m,
           i.terrain, i.device_id, i.staff_id,
           coalesce(d.name, d.identifier, st.name) AS responder, d.plate,
           i.arrival_radius_m, i.arrival_source, i.synthetic, i.created_by, i.created_at,
           i.dispatched_at, i.accepted_at, i.arrived_at, i.cleared_at, i.cancelled_at,
           i.source, i.reported_by, rep.name AS reported_by_name, i.outside_grid,
           (SELECT count(*) FROM incident_photo ph WHERE ph.incident_id = i.id)::int
               AS photos{extra}
      FROM incident i
      LEFT JOIN admin_area v ON v.code = i.village_code
      LEFT JOIN device d ON d.id = i.device_id
      LEFT JOIN staff st ON st.id = i.staff_id
      LEFT JOIN staff rep ON rep.id = i.reported_by
    """
)
LOCATE = """
WITH p AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS g)
SELECT
  (SELECT g.code FROM p, grid g JOIN grid_layout l ON l.id = g.layout_id
    WHERE l.status = 'active' AND l.purpose = 'patrol' AND ST_Covers(g.geom, p.g)
    ORDER BY length(nbs_prefix(l.area_code)) DESC, g.code LIMIT 1),
  (SELECT coalesce(array_agg(DISTINCT g.code), '{}') FROM p, grid g
     JOIN grid_layout l ON l.id = g.layout_id
    WHERE l.status = 'active' AND ST_Covers(g.geom, p.g)),
  (SELECT a.code FROM p, admin_area a WHERE ST_Covers(a.geom, p.g)
    ORDER BY length(nbs_prefix(a.code)) DESC LIMIT 1)
"""
NEAREST_VILLAGE = """
SELECT a.code, ST_Distance(a.geom::geography, p.g::geography)
  FROM admin_area a, (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS g) p
 WHERE a.level = 'village' ORDER BY a.geom <-> p.g LIMIT 1
"""
INSERT = """
INSERT INTO incident (kind, priority, description, reporter, geom, alert_point_id, grid_code,
                      grid_codes, village_code, area_code, outside_grids, outside_m, terrain,
                      arrival_radius_m, synthetic, created_by)
VALUES (%(kind)s, %(priority)s, %(description)s, %(reporter)s,
        ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), %(alert_point_id)s, %(grid_code)s,
        %(grid_codes)s, %(village_code)s, %(area_code)s, %(outside_grids)s, %(outside_m)s,
        %(terrain)s, %(radius)s, %(synthetic)s, %(created_by)s)
RETURNING id
"""


def incident_scope(scope: Scope) -> sql.Composable:
    """The scope predicate on incidents (their area code, or their grid for grid users)."""
    return scope.where("i.area_code", "i.grid_code")


async def _point_of(conn: AsyncConnection[Any], body: IncidentIn) -> tuple[float, float]:
    """The incident's point from whichever location form the body gives (404 if unknown)."""
    if body.lon is not None and body.lat is not None:
        return body.lon, body.lat
    if body.alert_point_id is not None:
        row = await (
            await conn.execute(
                "SELECT ST_X(geom), ST_Y(geom) FROM alert_point WHERE id = %s",
                (body.alert_point_id,),
            )
        ).fetchone()
        if row is None:
            raise NotFound(f"no alert point {body.alert_point_id}", field="alert_point_id")
        return float(row[0]), float(row[1])
    code = str(body.grid_code).strip()
    try:
        parse_grid_code(code)
    except CodeError as exc:
        raise Unprocessable(str(exc), field="grid_code") from exc
    row = await (
        await conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(g.geom) AS p FROM grid g "
            "JOIN grid_layout l ON l.id = g.layout_id WHERE l.status = 'active' AND g.code = %s "
            "ORDER BY (l.purpose = 'patrol') DESC LIMIT 1) x",
            (code,),
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"no grid {code} in an active layout", field="grid_code")
    return float(row[0]), float(row[1])


async def locate(
    conn: AsyncConnection[Any], lon: float, lat: float, *, max_outside_km: float
) -> dict[str, Any]:
    """Grid, grid codes, village and scoping area of a point.

    Raises
    ------
    Unprocessable
        When the point lies more than ``max_outside_km`` from every village (admin areas
        loaded but the point far away from all of them).
    """
    row = await (await conn.execute(LOCATE, {"lon": lon, "lat": lat})).fetchone()
    assert row is not None  # noqa: S101 - scalar subqueries return one row
    grid_code, grid_codes, area_code = row
    village = grid_code[:12] if grid_code else None
    outside_m = None
    if village is None and area_code is not None and area_code[9:] != "000":
        village = area_code
    if village is None:
        near = await (await conn.execute(NEAREST_VILLAGE, {"lon": lon, "lat": lat})).fetchone()
        if near is not None:
            if area_code is None and near[1] > max_outside_km * 1000:
                raise Unprocessable(
                    f"({lon}, {lat}) lies {near[1] / 1000:.0f} km from the nearest village; "
                    f"at most {max_outside_km:g} km outside the admin areas is accepted",
                    field="lon",
                )
            village, outside_m = near[0], float(near[1])
    return {
        "grid_code": grid_code,
        "grid_codes": list(grid_codes),
        "village_code": village,
        "area_code": village or area_code,
        "outside_grids": grid_code is None,
        "outside_m": outside_m,
    }


def require_write(scope: Scope, grid_code: str | None, area_code: str | None) -> None:
    """403 unless the scope covers the incident's grid or area."""
    if scope.unrestricted:
        return
    if grid_code and scope.covers_grid(grid_code):
        return
    if area_code and scope.covers_area(area_code):
        return
    raise Forbidden(
        f"the incident's place ({grid_code or area_code or 'no area'}) is outside your scope"
    )


async def create_incident(
    conn: AsyncConnection[Any],
    actor: Principal,
    body: IncidentIn,
    settings: DispatchSettings,
    *,
    synthetic: bool = False,
) -> dict[str, Any]:
    """Create an incident, record it, notify its grid (网格预警); returns the incident JSON."""
    async with conn.transaction():
        lon, lat = await _point_of(conn, body)
        place = await locate(conn, lon, lat, max_outside_km=settings.max_outside_km)
        if body.grid_code is not None and not place["grid_code"]:
            place["grid_code"] = body.grid_code.strip()
        require_write(actor.scope, place["grid_code"], place["area_code"])
        row = await (
            await conn.execute(
                INSERT,
                {
                    **body.model_dump(exclude={"lon", "lat", "grid_code"}),
                    **place,
                    "lon": lon,
                    "lat": lat,
                    "terrain": terrain_class(place["village_code"]),
                    "radius": settings.arrival_radius_m,
                    "synthetic": synthetic,
                    "created_by": actor.name,
                },
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        incident_id = int(row[0])
        await add_event(conn, incident_id, "created", level=0, actor=actor.name)
        await notify(conn, [incident_id], [0])
        await audit.record(
            conn,
            actor,
            "incident.create",
            object_type="incident",
            object_id=incident_id,
            detail={"kind": body.kind, "priority": body.priority, **place},
        )
    return await get_incident(conn, actor.scope, incident_id)


async def add_event(
    conn: AsyncConnection[Any],
    incident_id: int,
    kind: str,
    *,
    level: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one step to the incident's history (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO incident_event (incident_id, kind, level, actor, detail) "
        "VALUES (%s, %s, %s, %s, %s)",
        (incident_id, kind, level, actor, Jsonb(detail) if detail is not None else None),
    )


async def get_incident(
    conn: AsyncConnection[Any], scope: Scope, incident_id: int, *, lock: bool = False
) -> dict[str, Any]:
    """The incident JSON; 404 when unknown or outside the scope. ``lock`` takes its row lock
    (call inside a transaction) so concurrent changes to it serialise."""
    query = sql.SQL("{select} WHERE i.id = %(id)s AND {scope}{lock}").format(
        select=SELECT.format(extra=sql.SQL(", i.grid_codes")),
        scope=incident_scope(scope),
        lock=sql.SQL(" FOR UPDATE OF i") if lock else sql.SQL(""),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "id": incident_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    return row


async def incident_detail(
    conn: AsyncConnection[Any], scope: Scope, incident_id: int
) -> dict[str, Any]:
    """The incident with its dispatch history, events and notifications."""
    incident = await get_incident(conn, scope, incident_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, device_id, staff_id, responder, rank, mode, distance_m, eta_s, "
            "escalation_level, assigned_by, assigned_at, accepted_at, arrived_at, ended_at, "
            "outcome, terminal, text_command_id, track_command_id, candidates, candidates_at "
            "FROM dispatch WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        )
        incident["dispatches"] = await cur.fetchall()
        await cur.execute(
            "SELECT at, kind, level, actor, detail FROM incident_event "
            "WHERE incident_id = %s ORDER BY at, id",
            (incident_id,),
        )
        incident["events"] = await cur.fetchall()
        await cur.execute(
            "SELECT id, level, unit_code, recipient, message, created_at, delivered_at, "
            "attempts, last_error FROM notification WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        )
        incident["notifications"] = await cur.fetchall()
    return incident


async def incidents_geojson(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    status: str = "open",
    bbox: tuple[float, float, float, float] | None = None,
    limit: int = 1000,
) -> str:
    """Incidents in the scope as a GeoJSON FeatureCollection, newest first.

    ``status`` is ``open`` (new … arrived), ``all``, or one status name.
    """
    if status == "open":
        statuses: list[str] = list(OPEN)
    elif status == "all":
        statuses = list(STATUSES)
    elif status in STATUSES:
        statuses = [status]
    else:
        raise Unprocessable(
            f"status must be open, all or one of {', '.join(STATUSES)}", field="status"
        )
    inner = sql.SQL(
        "{select} WHERE i.status = ANY(%(statuses)s) AND {scope} AND {bbox} "
        "ORDER BY i.created_at DESC, i.id DESC LIMIT %(limit)s"
    ).format(
        select=SELECT.format(extra=sql.SQL(", i.geom")),
        scope=incident_scope(scope),
        bbox=geo.bbox_filter("i.geom"),
    )
    query = sql.SQL(
        "SELECT json_build_object('type', 'FeatureCollection', 'features', "
        "coalesce(json_agg(ST_AsGeoJSON(t.*, 'geom', 7)::json ORDER BY t.created_at DESC, "
        "t.id DESC), '[]'::json))::text FROM ({inner}) t"
    ).format(inner=inner)
    params = {
        **scope.params(),
        "statuses": statuses,
        "bbox": list(bbox) if bbox else None,
        "limit": limit,
    }
    return await geo.fetch_text(conn, query, params)
