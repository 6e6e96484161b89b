"""The dispatcher's workflow: candidates (escalating when nobody is within limits), accept,
arrive, clear, cancel, release, and the manual whistle (escalate).

Transitions (anything else is 409)::

    accept   dispatched            → accepted
    arrive   dispatched, accepted  → arrived   (manual; fixes do it automatically)
    clear    arrived               → cleared
    cancel   new … arrived         → cancelled
    release  dispatched, accepted  → new       (the responder is freed; assign another)

Clearing, cancelling or releasing frees the vehicle (``device_state.status`` back to
available) and returns its terminal to its normal reporting rate.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api import audit
from api.auth import Principal
from api.dispatch import UNACCEPTED
from api.dispatch.candidates import Target, rank_candidates
from api.dispatch.escalation import escalate_now
from api.dispatch.incidents import add_event, get_incident
from api.dispatch.terminal import Terminals, stop_tracking
from api.errors import Conflict, Unprocessable
from api.settings import DispatchSettings
from gis.dispatch import LEVELS, TOP_LEVEL

# action → (statuses it applies to, new status, timestamp column, dispatch outcome)
RULES: dict[str, tuple[tuple[str, ...], str, str | None, str | None]] = {
    "accept": (("dispatched",), "accepted", "accepted_at", None),
    "arrive": (("dispatched", "accepted"), "arrived", "arrived_at", None),
    "clear": (("arrived",), "cleared", "cleared_at", "cleared"),
    "cancel": (
        ("new", "dispatched", "accepted", "arrived"),
        "cancelled",
        "cancelled_at",
        "cancelled",
    ),
    "release": (("dispatched", "accepted"), "new", None, "released"),
}
RANKABLE = ("new", "dispatched", "accepted")
NO_CANDIDATE = "no candidate within limits"


async def candidates_for(
    conn: AsyncConnection[Any],
    actor: Principal,
    incident_id: int,
    settings: DispatchSettings,
    *,
    k: int = 5,
    mode: str = "straight",
) -> dict[str, Any]:
    """Rank responders for an incident; with nobody within limits an unaccepted incident
    escalates (recorded) and is ranked again, up to the county. The list is kept on the
    incident so the assignment records what the dispatcher saw."""
    if mode not in ("straight", "road"):
        raise Unprocessable("mode must be straight or road", field="mode")
    incident = await get_incident(conn, actor.scope, incident_id)
    if incident["status"] not in RANKABLE:
        raise Conflict(
            f"incident {incident_id} is {incident['status']}",
            reason="status",
            status=incident["status"],
        )
    escalated: list[dict[str, Any]] = []
    while True:
        target = Target.of(incident)
        ranking = await rank_candidates(conn, actor.scope, target, settings, k=k, mode=mode)
        if ranking.candidates or incident["status"] not in UNACCEPTED or target.level >= TOP_LEVEL:
            break
        async with conn.transaction():
            level = await escalate_now(conn, incident_id, actor=actor.name, reason=NO_CANDIDATE)
        if level is None:
            break
        escalated.append(
            {"from": LEVELS[target.level], "to": LEVELS[level], "reason": NO_CANDIDATE}
        )
        incident = await get_incident(conn, actor.scope, incident_id)
    note = ranking.note
    if not ranking.candidates:
        limit = f"{NO_CANDIDATE} (ETA ≤ {settings.max_eta_s / 60:.0f} min)"
        note = f"{limit} up to the {LEVELS[target.level]} level" + (f"; {note}" if note else "")
    result = {
        "incident": incident_id,
        "mode": ranking.mode,
        "requested_mode": mode,
        "k": k,
        "candidates": ranking.candidates,
        "excluded": ranking.excluded,
        "escalation_level": target.level,
        "escalation": LEVELS[target.level],
        "escalated": escalated,
        "scope_widened_to": ranking.widened_to,
        "left_out": ranking.left_out,
        "note": note,
    }
    if ranking.widened_to:
        await conn.execute(
            "INSERT INTO incident_event (incident_id, kind, level, actor, detail) "
            "SELECT %(id)s, 'scope_widened', %(level)s, %(actor)s, "
            "jsonb_build_object('scope', %(scope)s::text[], 'responders_of', %(unit)s::text) "
            "WHERE NOT EXISTS (SELECT 1 FROM incident_event WHERE incident_id = %(id)s "
            "AND kind = 'scope_widened' AND level = %(level)s AND actor = %(actor)s)",
            {
                "id": incident_id,
                "level": target.level,
                "actor": actor.name,
                "scope": actor.scope.codes,
                "unit": ranking.widened_to,
            },
        )
    async with conn.transaction():
        # the list shown is kept for the assignment's record; losing the newest one in a crash
        # costs nothing, so this commit does not wait for the disk
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.execute(
            "UPDATE incident SET candidates = %s, candidates_at = now() WHERE id = %s",
            (Jsonb({"mode": ranking.mode, "candidates": ranking.candidates}), incident_id),
        )
    return result


async def transition(
    conn: AsyncConnection[Any],
    actor: Principal,
    incident_id: int,
    action: str,
    *,
    terminals: Terminals | None = None,
    note: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Apply one workflow action (see the module docstring); 409 when it does not apply.

    ``note`` (a clear's ``outcome``, a cancel's ``reason``, any action's ``note``) is kept in
    the incident's event and the audit record."""
    allowed, status, column, outcome = RULES[action]
    async with conn.transaction():
        incident = await get_incident(conn, actor.scope, incident_id, lock=True)
        if incident["status"] not in allowed:
            raise Conflict(
                f"cannot {action} incident {incident_id}: it is {incident['status']} "
                f"(allowed from {', '.join(allowed)})",
                reason="status",
                status=incident["status"],
            )
        stamp = f", {column} = now()" if column else ""
        manual = ", arrival_source = 'manual'" if action == "arrive" else ""
        unbind = (
            ", device_id = NULL, staff_id = NULL, accepted_at = NULL" if action == "release" else ""
        )
        await conn.execute(
            f"UPDATE incident SET status = %s{stamp}{manual}{unbind} WHERE id = %s",  # noqa: S608 - fixed fragments
            (status, incident_id),
        )
        dispatch_stamp = {"accept": "accepted_at = now()", "arrive": "arrived_at = now()"}.get(
            action, "ended_at = now(), outcome = %(outcome)s"
        )
        await conn.execute(
            f"UPDATE dispatch SET {dispatch_stamp} WHERE incident_id = %(id)s AND ended_at IS NULL",  # noqa: S608
            {"id": incident_id, "outcome": outcome},
        )
        device_id = incident["device_id"] if outcome else None
        if device_id is not None:
            await conn.execute(
                "UPDATE device_state SET status = 'available' WHERE device_id = %s "
                "AND status = 'busy'",
                (device_id,),
            )
        said = {k: v for k, v in (note or {}).items() if v}
        await add_event(
            conn,
            incident_id,
            action,
            actor=actor.name,
            detail={
                "from": incident["status"],
                **({"device_id": incident["device_id"]} if incident["device_id"] else {}),
                **said,
            },
        )
        await audit.record(
            conn,
            actor,
            f"incident.{action}",
            object_type="incident",
            object_id=incident_id,
            detail=said or None,
        )
    result = await get_incident(conn, actor.scope, incident_id)
    if device_id is not None:
        result["terminal"] = {"terminal": await stop_tracking(terminals, device_id, actor.name)}
    return result


async def escalate(
    conn: AsyncConnection[Any], actor: Principal, incident_id: int
) -> dict[str, Any]:
    """The dispatcher blows the whistle: one level up now (409 when accepted or at the top)."""
    async with conn.transaction():
        incident = await get_incident(conn, actor.scope, incident_id, lock=True)
        if incident["status"] not in UNACCEPTED:
            raise Conflict(
                f"incident {incident_id} is {incident['status']}; only an incident nobody has "
                "accepted escalates",
                reason="status",
                status=incident["status"],
            )
        level = await escalate_now(
            conn, incident_id, actor=actor.name, reason="dispatcher's whistle"
        )
        if level is None:
            raise Conflict(
                f"incident {incident_id} is already at the county level",
                reason="top",
                status=incident["status"],
            )
        await audit.record(
            conn, actor, "incident.escalate", object_type="incident", object_id=incident_id
        )
    return await get_incident(conn, actor.scope, incident_id)
