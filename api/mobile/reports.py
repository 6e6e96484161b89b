"""Event reports (上报): a worker's report with photos becomes an incident at their grid.

The incident is placed by its point like any other (``api.dispatch.incidents.locate``), starts
at escalation level 0 (网格预警, the grid warns) with a notification to the grid, and then
escalates by the existing rules (``api.dispatch.escalation``) while nobody accepts it. It
carries ``source = 'worker'``, the reporting worker, the phone's client id (a replay finds the
incident, nothing new is written) and ``outside_grid`` when the point lies outside the grid the
worker reported for (allowed: the worker may see something across the border, but flagged).
Everything — the incident, its photos, its first event and notification, the audit entry — is
written in one transaction after every field and photo was checked.
"""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from starlette.datastructures import FormData

from api import audit
from api.auth import Principal
from api.dispatch.escalation import notify
from api.dispatch.incidents import INSERT, add_event, locate
from api.errors import NotFound, Unprocessable
from api.mobile.photos import Photo, read_photos
from api.settings import Settings
from gis.dispatch import LEVELS, terrain_class

MAX_TEXT = 2000
PRIORITY = 3

WORKER_GRID = """
SELECT g.code, ST_X(ST_PointOnSurface(g.geom)), ST_Y(ST_PointOnSurface(g.geom)),
       ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)),
       ST_Distance(g.geom::geography,
                   ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography)
  FROM grid g JOIN grid_layout l ON l.id = g.layout_id
 WHERE g.code = %(code)s AND l.status = 'active' AND l.purpose = 'patrol'
 ORDER BY length(nbs_prefix(l.area_code)) DESC, l.id LIMIT 1
"""
SUMMARY = """
SELECT i.id, i.client_id, i.status, (%(levels)s::text[])[i.escalation_level + 1] AS escalation,
       i.outside_grid,
       (SELECT count(*) FROM incident_photo p
         WHERE p.incident_id = i.id AND p.purpose = 'report')::int AS photos
  FROM incident i WHERE i.reported_by = %(staff)s AND i.client_id = %(client)s
"""
MINE = """
SELECT i.id, i.client_id, i.kind, i.description AS text, i.status,
       (%(levels)s::text[])[i.escalation_level + 1] AS escalation, i.created_at,
       coalesce(d.name, d.identifier, st.name) AS responder, i.grid_code, i.outside_grid,
       round(ST_X(i.geom)::numeric, 7)::float8 AS lon,
       round(ST_Y(i.geom)::numeric, 7)::float8 AS lat,
       (SELECT count(*) FROM incident_photo p
         WHERE p.incident_id = i.id AND p.purpose = 'report')::int AS photos
  FROM incident i
  LEFT JOIN device d ON d.id = i.device_id
  LEFT JOIN staff st ON st.id = i.staff_id
 WHERE i.reported_by = %(staff)s
 ORDER BY i.created_at DESC, i.id DESC LIMIT %(limit)s
"""
PHOTO_INSERT = """
INSERT INTO incident_photo (incident_id, n, purpose, content_type, width, height, bytes, data,
                            staff_id)
SELECT %(id)s, coalesce((SELECT max(n) FROM incident_photo WHERE incident_id = %(id)s), 0) + 1,
       %(purpose)s, %(type)s, %(width)s, %(height)s, %(bytes)s, %(data)s, %(staff)s
"""


def _text(form: FormData, name: str, *, limit: int, required: bool = False) -> str:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise Unprocessable(f"{name} must be text, not a file", field=name)
    value = (value or "").strip()
    if required and not value:
        raise Unprocessable(f"{name} is required", field=name)
    if len(value) > limit:
        raise Unprocessable(f"{name} has {len(value)} characters; at most {limit}", field=name)
    return value


def client_id_of(form: FormData) -> UUID:
    raw = _text(form, "client_id", limit=64, required=True)
    try:
        return UUID(raw)
    except ValueError as exc:
        raise Unprocessable(f"client_id {raw!r} is not a UUID", field="client_id") from exc


def _point(form: FormData) -> tuple[float, float] | None:
    lon, lat = _text(form, "lon", limit=40), _text(form, "lat", limit=40)
    if not lon and not lat:
        return None
    if not lon or not lat:
        missing = "lat" if not lat else "lon"
        raise Unprocessable(f"{missing} is required together with the other", field=missing)
    try:
        x, y = float(lon), float(lat)
    except ValueError as exc:
        raise Unprocessable("lon and lat must be numbers", field="lon") from exc
    if not (math.isfinite(x) and math.isfinite(y) and -180 <= x <= 180 and -90 <= y <= 90):
        raise Unprocessable("lon must lie in [-180, 180] and lat in [-90, 90]", field="lon")
    return x, y


async def summary(
    conn: AsyncConnection[Any], staff_id: int, client_id: UUID
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SUMMARY, {"levels": list(LEVELS), "staff": staff_id, "client": client_id})
        return await cur.fetchone()


async def add_photos(
    conn: AsyncConnection[Any],
    incident_id: int,
    photos: list[Photo],
    *,
    purpose: str,
    staff_id: int | None,
) -> None:
    """Store photos after the incident's others (in the caller's transaction)."""
    for photo in photos:
        await conn.execute(
            PHOTO_INSERT,
            {
                "id": incident_id,
                "purpose": purpose,
                "type": photo.content_type,
                "width": photo.width,
                "height": photo.height,
                "bytes": len(photo.data),
                "data": photo.data,
                "staff": staff_id,
            },
        )


async def create_report(
    conn: AsyncConnection[Any], principal: Principal, form: FormData, settings: Settings
) -> tuple[dict[str, Any], bool]:
    """The report's incident (see the module): (summary, created). Bad input is 4xx naming the
    field, and nothing is written."""
    staff_id = principal.staff_id
    assert staff_id is not None  # noqa: S101 - a worker's route
    client_id = client_id_of(form)
    if (found := await summary(conn, staff_id, client_id)) is not None:
        return found, False
    kinds = settings.mobile.kinds
    kind = _text(form, "kind", limit=64, required=True)
    if kind not in kinds:
        raise Unprocessable(f"kind {kind!r} is not one of {'、'.join(kinds)}", field="kind")
    text = _text(form, "text", limit=MAX_TEXT)
    grid = _text(form, "grid_code", limit=15) or (
        principal.scope.grids[0] if principal.scope.grids else ""
    )
    if grid not in principal.scope.grids:
        raise NotFound(f"no grid {grid or '(none: you hold no grid)'}", field="grid_code")
    point = _point(form)
    photos = await read_photos(form, settings.mobile)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('gridpatrol.report'), %s)", (staff_id,)
        )
        if (found := await summary(conn, staff_id, client_id)) is not None:
            return found, False
        where = await (
            await conn.execute(
                WORKER_GRID,
                {
                    "code": grid,
                    "lon": point[0] if point else 0.0,
                    "lat": point[1] if point else 0.0,
                },
            )
        ).fetchone()
        if where is None:
            raise NotFound(f"no grid {grid} in an active patrol layout", field="grid_code")
        lon, lat = point if point is not None else (float(where[1]), float(where[2]))
        outside = point is not None and not where[3]
        away_km = float(where[4]) / 1000 if point is not None else 0.0
        if away_km > settings.mobile.max_outside_km:
            raise Unprocessable(
                f"the place ({lon:.5f}, {lat:.5f}) lies {away_km:.1f} km from your grid {grid}; "
                f"at most {settings.mobile.max_outside_km:g} km outside it is accepted",
                field="lon",
            )
        # the incident belongs to the worker's grid, its village and township, wherever the
        # point lies (outside the grid: allowed, flagged, and still the worker's grid warning)
        place = await locate(
            conn,
            float(where[1]),
            float(where[2]),
            max_outside_km=settings.dispatch.max_outside_km,
        )
        place["grid_code"] = grid
        staff = await (
            await conn.execute("SELECT name, phone FROM staff WHERE id = %s", (staff_id,))
        ).fetchone()
        assert staff is not None  # noqa: S101 - the principal's own row
        row = await (
            await conn.execute(
                INSERT,
                {
                    "kind": kind,
                    "priority": PRIORITY,
                    "description": text or None,
                    "reporter": f"网格员 {staff[0]} {staff[1]}",
                    "alert_point_id": None,
                    **place,
                    "lon": lon,
                    "lat": lat,
                    "terrain": terrain_class(place["village_code"]),
                    "radius": settings.dispatch.arrival_radius_m,
                    "synthetic": False,
                    "created_by": principal.name,
                },
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        incident_id = int(row[0])
        await conn.execute(
            "UPDATE incident SET source = 'worker', reported_by = %s, client_id = %s, "
            "outside_grid = %s WHERE id = %s",
            (staff_id, client_id, outside, incident_id),
        )
        await add_photos(conn, incident_id, photos, purpose="report", staff_id=staff_id)
        detail = {"source": "worker", "grid": grid, "outside_grid": outside, "photos": len(photos)}
        await add_event(conn, incident_id, "created", level=0, actor=principal.name, detail=detail)
        await notify(conn, [incident_id], [0])
        await audit.record(
            conn,
            principal,
            "incident.report",
            object_type="incident",
            object_id=incident_id,
            detail={"kind": kind, **detail, **place},
        )
        made = await summary(conn, staff_id, client_id)
    assert made is not None  # noqa: S101 - written above
    return made, True


async def my_reports(
    conn: AsyncConnection[Any], principal: Principal, *, limit: int
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            MINE, {"levels": list(LEVELS), "staff": principal.staff_id, "limit": limit}
        )
        return await cur.fetchall()
