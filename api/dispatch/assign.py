"""Assign a responder to an incident: exactly one winner, then tell the vehicle's terminal.

Two dispatchers may press "assign" at the same moment. The transaction locks the incident row
(``FOR UPDATE``) and then the vehicle's ``device_state`` row (or the worker's ``staff`` row),
always in that order, and re-checks status under the locks: the second caller waits, then
finds the incident dispatched or the vehicle busy and gets 409. A partial unique index (one
active incident per responder) backs this up. After the commit a JT/T 808 terminal of the
vehicle, when connected, gets the order text (0x8300) and a raised reporting rate (0x8202)
for the incident; an offline terminal never fails the assignment, it is recorded.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, model_validator

from api import audit
from api.auth import Principal
from api.dispatch import ACTIVE
from api.dispatch.candidates import Target
from api.dispatch.incidents import add_event, get_incident
from api.dispatch.terminal import Terminals, order_terminal
from api.errors import Conflict, NotFound
from api.scope import Scope
from api.settings import DispatchSettings
from gis import dispatch as maths


class AssignIn(BaseModel):
    """The responder: a vehicle (``device_id``) or a grid worker (``staff_id``)."""

    device_id: int | None = None
    staff_id: int | None = None

    @model_validator(mode="after")
    def _one(self) -> AssignIn:
        if (self.device_id is None) == (self.staff_id is None):
            raise ValueError("give exactly one of device_id or staff_id")
        return self


def commands(scope: Scope, target: Target, home_village: str | None) -> bool:
    """Whether a dispatcher may send a responder homed in ``home_village``: inside their scope,
    or summoned by the incident's recorded escalation (its level's unit holds the responder)."""
    if scope.unrestricted or (home_village and scope.covers_area(home_village)):
        return True
    unit = maths.unit_code(target.level, target.village_code)
    return bool(unit and home_village and home_village.startswith(unit))


async def _keeps_a_grid_of(conn: AsyncConnection[Any], scope: Scope, staff_id: int) -> bool:
    """The staff member is the worker or leader of a grid of an active layout inside the scope
    (a grid-scoped dispatcher commands the worker of their grid; a township's dispatcher the
    workers of its grids, wherever they live)."""
    query = sql.SQL(
        "SELECT 1 FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
        "WHERE l.status = 'active' AND (g.worker_id = %(s)s OR g.leader_id = %(s)s) "
        "AND {} LIMIT 1"
    ).format(scope.where("g.code", "g.code"))
    row = await (await conn.execute(query, {**scope.params(), "s": staff_id})).fetchone()
    return row is not None


async def _vehicle(
    conn: AsyncConnection[Any],
    scope: Scope,
    target: Target,
    device_id: int,
    settings: DispatchSettings,
) -> dict[str, Any]:
    """Lock an available vehicle and mark it busy; 404/403/409 otherwise."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, identifier, coalesce(name, identifier) AS name, plate, enabled, "
            "home_village FROM device WHERE id = %s",
            (device_id,),
        )
        device = await cur.fetchone()
        # a vehicle beyond the dispatcher's command is answered like one that does not exist:
        # nothing of it (identifier, name) is shown, so ids do not enumerate vehicles
        if device is None or not commands(scope, target, device["home_village"]):
            raise NotFound(f"no device {device_id}", field="device_id")
        await cur.execute(
            "SELECT status, lon, lat, extract(epoch FROM now() - fix_time)::float8 AS age_s "
            "FROM device_state WHERE device_id = %s FOR UPDATE",
            (device_id,),
        )
        state = await cur.fetchone()
    reason = maths.exclusion_reasons(
        [state["status"] if state else "available"],
        [state["age_s"] if state else float("nan")],
        [device["enabled"]],
        max_age_s=settings.max_age_s,
        offline_after_s=settings.offline_after_s,
    )[0]
    if reason:
        age = f", last fix {state['age_s']:.0f} s ago" if state else ", never reported"
        raise Conflict(f"vehicle {device['identifier']} is {reason}{age}", reason=reason)
    await conn.execute("UPDATE device_state SET status = 'busy' WHERE device_id = %s", (device_id,))
    assert state is not None  # noqa: S101 - no state means offline, refused above
    return {**device, "lon": state["lon"], "lat": state["lat"]}


async def _worker(
    conn: AsyncConnection[Any], scope: Scope, target: Target, staff_id: int
) -> dict[str, Any]:
    """Lock a grid worker who is active and free; 404/409 otherwise.

    The worker must lie in the dispatcher's scope (their village, or a grid of the scope they
    keep) or in the unit the incident's recorded escalation summons; anyone else is answered
    like an id that does not exist, so ids do not enumerate names."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, phone, active, village_code FROM staff WHERE id = %s FOR UPDATE",
            (staff_id,),
        )
        staff = await cur.fetchone()
        if staff is None or not (
            commands(scope, target, staff["village_code"])
            or await _keeps_a_grid_of(conn, scope, staff_id)
        ):
            raise NotFound(f"no staff member {staff_id}", field="staff_id")
        if not staff["active"]:
            raise Conflict(f"staff member {staff['name']} is inactive", reason=maths.INACTIVE)
        await cur.execute(
            "SELECT id FROM incident WHERE staff_id = %s AND status = ANY(%s)",
            (staff_id, list(ACTIVE)),
        )
        other = await cur.fetchone()
    if other is not None:
        raise Conflict(f"{staff['name']} is busy with incident {other['id']}", reason=maths.BUSY)
    return staff


def _chosen(
    stored: dict[str, Any] | None, body: AssignIn
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The chosen responder's entry in the last candidate list shown, and that list."""
    listed: list[dict[str, Any]] = (stored or {}).get("candidates", [])
    for entry in listed:
        if (body.device_id is not None and entry.get("device_id") == body.device_id) or (
            body.staff_id is not None and entry.get("staff_id") == body.staff_id
        ):
            return entry, listed
    return None, listed


async def assign(
    conn: AsyncConnection[Any],
    actor: Principal,
    incident_id: int,
    body: AssignIn,
    settings: DispatchSettings,
    *,
    terminals: Terminals | None = None,
) -> dict[str, Any]:
    """Dispatch the incident to one responder (status ``dispatched``).

    Raises
    ------
    NotFound
        Unknown (or out of scope) incident; a device or staff member that does not exist or
        that the dispatcher may not command (outside their scope and the escalation's unit).
    Conflict
        The incident is not new, or the responder is busy, stale, offline, off duty, disabled
        or inactive (``reason`` in the body).
    """
    async with conn.transaction():
        incident = await get_incident(conn, actor.scope, incident_id, lock=True)
        if incident["status"] != "new":
            raise Conflict(
                f"incident {incident_id} is {incident['status']}; only a new incident is "
                "assigned (release it first to reassign)",
                reason="status",
                status=incident["status"],
            )
        target = Target.of(incident)
        if body.device_id is not None:
            responder = await _vehicle(conn, actor.scope, target, body.device_id, settings)
        else:
            responder = await _worker(conn, actor.scope, target, int(body.staff_id or 0))
        stored = await (
            await conn.execute(
                "SELECT candidates, candidates_at FROM incident WHERE id = %s", (incident_id,)
            )
        ).fetchone()
        entry, listed = _chosen(stored[0] if stored else None, body)
        try:
            await conn.execute(
                "UPDATE incident SET status = 'dispatched', device_id = %s, staff_id = %s, "
                "dispatched_at = coalesce(dispatched_at, now()), accepted_at = NULL "
                "WHERE id = %s",
                (body.device_id, body.staff_id, incident_id),
            )
        except errors.UniqueViolation as exc:
            raise Conflict(
                f"{responder['name']} is busy with another incident", reason=maths.BUSY
            ) from exc
        row = await (
            await conn.execute(
                "INSERT INTO dispatch (incident_id, device_id, staff_id, responder, rank, mode, "
                "distance_m, eta_s, candidates, candidates_at, escalation_level, assigned_by) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    incident_id,
                    body.device_id,
                    body.staff_id,
                    responder["name"],
                    (entry or {}).get("rank"),
                    (stored[0] or {}).get("mode") if stored else None,
                    (entry or {}).get("distance_m"),
                    (entry or {}).get("eta_s"),
                    Jsonb(listed),
                    stored[1] if stored else None,
                    target.level,
                    actor.name,
                ),
            )
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING yields the row
        dispatch_id = int(row[0])
        detail = {
            "device_id": body.device_id,
            "staff_id": body.staff_id,
            "rank": (entry or {}).get("rank"),
        }
        await add_event(
            conn, incident_id, "assigned", level=target.level, actor=actor.name, detail=detail
        )
        await audit.record(
            conn,
            actor,
            "incident.assign",
            object_type="incident",
            object_id=incident_id,
            detail=detail,
        )
    result = await get_incident(conn, actor.scope, incident_id)
    if body.device_id is not None:
        sent = await order_terminal(terminals, result, body.device_id, settings, actor.name)
        await conn.execute(
            "UPDATE dispatch SET terminal = %s, text_command_id = %s, track_command_id = %s "
            "WHERE id = %s",
            (
                sent["terminal"],
                sent.get("text_command_id"),
                sent.get("track_command_id"),
                dispatch_id,
            ),
        )
        result["terminal"] = sent
    result["dispatch_id"] = dispatch_id
    return result
