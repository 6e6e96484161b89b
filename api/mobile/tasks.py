"""My tasks (任务): incidents assigned to the worker, moved through the dispatch workflow.

``accept``, ``arrived`` and ``done`` are the dispatcher's ``accept``, ``arrive`` and ``clear``
(``api.dispatch.workflow.transition``): the same timestamps, ``incident_event`` rows, audit and
409 on a step that does not apply. A worker acts only on an incident assigned to them (its
``staff_id``), checked under the incident's row lock in the same transaction as the step;
anything else is 404. Photos of incidents are read here too: by the reporting or assigned
worker, or by a user whose scope holds the incident.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.auth import Principal
from api.dispatch import ACTIVE
from api.dispatch.incidents import get_incident
from api.dispatch.workflow import transition
from api.errors import NotFound
from api.mobile.photos import Photo
from api.mobile.reports import add_photos
from api.scope import Scope
from gis.dispatch import LEVELS

ACTIONS = {"accept": "accept", "arrived": "arrive", "done": "clear"}
DONE_SHOWN = 10
TASK = """
SELECT i.id, i.kind, i.priority, i.status, i.description, i.reporter, i.source,
       round(ST_X(i.geom)::numeric, 7)::float8 AS lon,
       round(ST_Y(i.geom)::numeric, 7)::float8 AS lat,
       i.grid_code, i.village_code, v.name_zh AS village_name,
       (%(levels)s::text[])[i.escalation_level + 1] AS escalation,
       i.created_at, i.dispatched_at, i.accepted_at, i.arrived_at, i.cleared_at,
       (SELECT count(*) FROM incident_photo p WHERE p.incident_id = i.id)::int AS photos
  FROM incident i LEFT JOIN admin_area v ON v.code = i.village_code
"""


async def my_tasks(conn: AsyncConnection[Any], principal: Principal) -> list[dict[str, Any]]:
    """Open incidents assigned to me, then the last ``DONE_SHOWN`` I cleared."""
    query = (
        f"({TASK} WHERE i.staff_id = %(staff)s AND i.status = ANY(%(open)s) "
        "ORDER BY i.dispatched_at DESC NULLS LAST, i.id DESC) UNION ALL "
        f"({TASK} WHERE i.staff_id = %(staff)s AND i.status = 'cleared' "
        "ORDER BY i.cleared_at DESC, i.id DESC LIMIT %(done)s)"
    )
    params = {
        "levels": list(LEVELS),
        "staff": principal.staff_id,
        "open": list(ACTIVE),
        "done": DONE_SHOWN,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def task(
    conn: AsyncConnection[Any], principal: Principal, incident_id: int
) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{TASK} WHERE i.id = %(id)s AND i.staff_id = %(staff)s",
            {"levels": list(LEVELS), "id": incident_id, "staff": principal.staff_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no task {incident_id}")
    return row


async def act(
    conn: AsyncConnection[Any],
    principal: Principal,
    incident_id: int,
    action: str,
    *,
    note: str | None = None,
    photo: Photo | None = None,
) -> dict[str, Any]:
    """One step of an assigned incident (see the module); 404 when it is not assigned to me,
    409 when the step does not apply now."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT grid_code, area_code FROM incident WHERE id = %s AND staff_id = %s "
                "FOR UPDATE",
                (incident_id, principal.staff_id),
            )
        ).fetchone()
        if row is None:
            raise NotFound(f"no task {incident_id}")
        grid_code, area_code = row
        # the workflow reads the incident within the actor's scope: the worker's grids and
        # the incident's own place (a task may lie beyond their grids)
        scope = (
            Scope(grids=tuple(sorted({*principal.scope.grids, grid_code})))
            if grid_code
            else Scope(areas=(area_code,), grids=principal.scope.grids)
        )
        await transition(
            conn,
            replace(principal, scope=scope),
            incident_id,
            ACTIONS[action],
            note={"note": note} if note else None,
        )
        if photo is not None:
            await add_photos(
                conn, incident_id, [photo], purpose="done", staff_id=principal.staff_id
            )
    return await task(conn, principal, incident_id)


async def photo_of(
    conn: AsyncConnection[Any], principal: Principal, incident_id: int, n: int
) -> tuple[str, bytes]:
    """(content type, bytes) of an incident's photo ``n``; 404 unless the caller may see it."""
    if principal.role == "worker":
        mine = await (
            await conn.execute(
                "SELECT 1 FROM incident WHERE id = %s AND (reported_by = %s OR staff_id = %s)",
                (incident_id, principal.staff_id, principal.staff_id),
            )
        ).fetchone()
        if mine is None:
            raise NotFound(f"no incident {incident_id}")
    else:
        await get_incident(conn, principal.scope, incident_id)  # 404 outside the scope
    row = await (
        await conn.execute(
            "SELECT content_type, data FROM incident_photo WHERE incident_id = %s AND n = %s",
            (incident_id, n),
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"incident {incident_id} has no photo {n}")
    return str(row[0]), bytes(row[1])
