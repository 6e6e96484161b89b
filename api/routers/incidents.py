"""``/api/v1/incidents``: create, list, read, rank candidates, assign, and the workflow."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from api import admin_areas
from api.auth import Dispatcher, Principal, Viewer
from api.deps import AppSettings, Conn
from api.dispatch import assign, incidents, places, stats, workflow
from api.dispatch.terminal import Terminals
from api.responses import GeoJSONResponse
from api.routers.coverage import today

router = APIRouter(tags=["incidents"])
IncidentId = Annotated[int, "incident id"]


class NoteIn(BaseModel):
    """What the dispatcher says about a step (kept in the incident's timeline)."""

    note: str | None = Field(default=None, max_length=500, description="free text")


class ClearIn(NoteIn):
    outcome: str | None = Field(
        default=None, max_length=200, description="how it ended, e.g. resolved, false alarm"
    )


class CancelIn(NoteIn):
    reason: str | None = Field(
        default=None, max_length=200, description="why, e.g. duplicate call, caller withdrew"
    )


def terminals(request: Request) -> Terminals | None:
    """The JT/T 808 server when it runs (it sends orders to vehicle terminals)."""
    server: Terminals | None = getattr(request.app.state, "jt808", None)
    return server


@router.post("/api/v1/incidents", status_code=201, summary="Report an incident (警情)")
async def create(
    body: incidents.IncidentIn, principal: Dispatcher, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    return await incidents.create_incident(conn, principal, body, settings.dispatch)


@router.get(
    "/api/v1/incidents",
    response_class=GeoJSONResponse,
    summary="Incidents as GeoJSON (open by default)",
)
async def list_incidents(
    principal: Viewer,
    conn: Conn,
    status: Annotated[str, Query(description="open, all, or a status")] = "open",
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> GeoJSONResponse:
    body = await incidents.incidents_geojson(
        conn, principal.scope, status=status, bbox=admin_areas.parse_bbox(bbox), limit=limit
    )
    return GeoJSONResponse(body)


@router.get(
    "/api/v1/incidents/response-times",
    summary="Response times (dispatch, accept, arrive) per grid, village, township or county",
)
async def response_times(
    principal: Viewer,
    conn: Conn,
    first: Annotated[date | None, Query(alias="from", description="first local day")] = None,
    last: Annotated[date | None, Query(alias="to", description="last local day")] = None,
    level: Annotated[str, Query(pattern="^(grid|village|township|county)$")] = "village",
) -> dict[str, Any]:
    last = last or today()
    first = first or last - timedelta(days=29)
    units = await stats.response_times(conn, principal.scope, first, last, level)
    return {"level": level, "from": first.isoformat(), "to": last.isoformat(), "units": units}


@router.get(
    "/api/v1/incidents/places",
    summary="Places to put a call at: villages, grids, alert points matching q, in scope",
)
async def search_places(
    principal: Viewer,
    conn: Conn,
    q: Annotated[str, Query(min_length=1, max_length=64, description="name, code or phone")],
) -> dict[str, Any]:
    return {"q": q, "places": await places.search_places(conn, principal.scope, q)}


@router.get("/api/v1/incidents/{incident_id}", summary="One incident with its history")
async def get_incident(incident_id: IncidentId, principal: Viewer, conn: Conn) -> dict[str, Any]:
    return await incidents.incident_detail(conn, principal.scope, incident_id)


@router.get(
    "/api/v1/incidents/{incident_id}/candidates",
    summary="Who gets there first: ranked responders and why others are excluded",
)
async def candidates(
    incident_id: IncidentId,
    principal: Dispatcher,
    conn: Conn,
    settings: AppSettings,
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    mode: Annotated[str, Query(pattern="^(straight|road)$")] = "straight",
) -> dict[str, Any]:
    return await workflow.candidates_for(
        conn, principal, incident_id, settings.dispatch, k=k, mode=mode
    )


@router.post("/api/v1/incidents/{incident_id}/assign", summary="Dispatch a vehicle or worker")
async def assign_responder(
    incident_id: IncidentId,
    body: assign.AssignIn,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    settings: AppSettings,
) -> dict[str, Any]:
    return await assign.assign(
        conn, principal, incident_id, body, settings.dispatch, terminals=terminals(request)
    )


async def _act(
    request: Request,
    principal: Principal,
    conn: AsyncConnection[Any],
    incident_id: int,
    action: str,
    body: NoteIn | None = None,
) -> dict[str, Any]:
    note = None if body is None else body.model_dump(exclude_none=True)
    return await workflow.transition(
        conn, principal, incident_id, action, terminals=terminals(request), note=note
    )


@router.post("/api/v1/incidents/{incident_id}/accept", summary="The responder accepted")
async def accept(
    incident_id: IncidentId,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    body: NoteIn | None = None,
) -> dict[str, Any]:
    return await _act(request, principal, conn, incident_id, "accept", body)


@router.post("/api/v1/incidents/{incident_id}/arrive", summary="Arrived (manual override)")
async def arrive(
    incident_id: IncidentId,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    body: NoteIn | None = None,
) -> dict[str, Any]:
    return await _act(request, principal, conn, incident_id, "arrive", body)


@router.post("/api/v1/incidents/{incident_id}/clear", summary="Dealt with; frees the responder")
async def clear(
    incident_id: IncidentId,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    body: ClearIn | None = None,
) -> dict[str, Any]:
    return await _act(request, principal, conn, incident_id, "clear", body)


@router.post("/api/v1/incidents/{incident_id}/cancel", summary="Cancel; frees the responder")
async def cancel(
    incident_id: IncidentId,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    body: CancelIn | None = None,
) -> dict[str, Any]:
    return await _act(request, principal, conn, incident_id, "cancel", body)


@router.post(
    "/api/v1/incidents/{incident_id}/release",
    summary="Take the assignment back (back to new, to assign someone else)",
)
async def release(
    incident_id: IncidentId,
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    body: NoteIn | None = None,
) -> dict[str, Any]:
    return await _act(request, principal, conn, incident_id, "release", body)


@router.post(
    "/api/v1/incidents/{incident_id}/escalate",
    summary="Blow the whistle (吹哨): widen the responders one level now",
)
async def escalate(incident_id: IncidentId, principal: Dispatcher, conn: Conn) -> dict[str, Any]:
    return await workflow.escalate(conn, principal, incident_id)
