"""Live updates for the dispatcher console (Server-Sent Events) and the compact snapshots it
starts from: the scope's vehicles with the grid each is in, and the alarm phones.

``GET /api/v1/live/stream`` authenticates (the page's cookie or a bearer token, role viewer)
before the first byte, then streams ``incident`` and ``vehicles`` events cut to the caller's
scope from the process's one shared poll (``api.dispatch.live``). The stream ends after
``GRIDPATROL_MAP_LIVE_STREAM_MAX_S`` (the browser's ``EventSource`` reconnects, and the
token is checked again), when the client falls ``LIVE_QUEUE`` events behind, or when the
server stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from api.auth import Viewer
from api.deps import AppSettings, Conn
from api.dispatch import live
from api.dispatch.live import HEARTBEAT_S, LiveHub, Subscriber, frame

router = APIRouter(tags=["live"])

ALERT_POINTS = sql.SQL(
    """
    SELECT coalesce(json_agg(json_build_array(a.id, round(ST_X(a.geom)::numeric, 6),
                                              round(ST_Y(a.geom)::numeric, 6), a.kind, a.name,
                                              a.village_code) ORDER BY a.id), '[]')::text
      FROM alert_point a WHERE {scope}
    """
)


def hub(request: Request) -> LiveHub:
    """The process's hub, made on first use (it polls only while streams are open)."""
    return live.process_hub(request.app.state)


@router.get("/api/v1/live/vehicles", summary="The scope's vehicles, compact, with their grid")
async def live_vehicles(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    since: Annotated[
        float | None,
        Query(
            ge=0,
            le=1e10,
            description="only vehicles that reported after this (Unix seconds, the `now` of an "
            "earlier answer): what changed while a page opened its stream",
        ),
    ] = None,
) -> dict[str, Any]:
    row = await (await conn.execute("SELECT extract(epoch FROM now())::float8")).fetchone()
    after = None if since is None else datetime.fromtimestamp(since, UTC)
    return {
        "now": row[0] if row else time.time(),
        "fresh_s": settings.map.vehicle_fresh_s,
        "offline_s": settings.map.vehicle_offline_s,
        "vehicles": await live.vehicles(conn, principal.scope, hub(request).locator, since=after),
    }


@router.get(
    "/api/v1/live/alert-points",
    summary="The scope's alert points as [id, lon, lat, kind, name, village] rows",
)
async def live_alert_points(principal: Viewer, conn: Conn) -> StreamingResponse:
    scope = principal.scope
    query = ALERT_POINTS.format(
        scope=scope.where(sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True)
    )
    row = await (await conn.execute(query, scope.params())).fetchone()
    body = '{"columns":["id","lon","lat","kind","name","village"],"points":' + (
        row[0] if row else "[]"
    )
    return StreamingResponse(iter([body + "}"]), media_type="application/json")


@router.get(
    "/api/v1/live/stream",
    summary="Incident and vehicle changes in your scope as Server-Sent Events",
    response_class=StreamingResponse,
)
async def live_stream(
    request: Request,
    principal: Viewer,
    heartbeat_s: Annotated[float, Query(ge=0.2, le=60, description="comment line period")] = (
        HEARTBEAT_S
    ),
) -> StreamingResponse:
    the_hub = hub(request)
    sub = the_hub.subscribe(principal)  # 503/429 past the caps, before any byte is sent
    limit = the_hub.settings.live_stream_max_s
    return StreamingResponse(
        _events(the_hub, sub, limit, heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    the_hub: LiveHub, sub: Subscriber, limit_s: float, heartbeat_s: float
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    try:
        yield "retry: 3000\n\n"
        yield frame("hello", {"user": sub.principal.name, "scope": sub.principal.scope.codes})
        while True:
            left = deadline - loop.time()
            if left <= 0:
                yield frame("bye", {"reason": "stream_max_s"})
                return
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=min(heartbeat_s, left))
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if item is None:
                return
            yield item
    finally:
        the_hub.unsubscribe(sub)
