"""``/api/v1/coverage``, ``/api/v1/vehicles/ranking``, blind spots, checkpoints, alerts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg import AsyncConnection

from api import admin_areas, layouts
from api.auth import Admin, Viewer
from api.coverage import metrics, spots, vehicles, view
from api.coverage.update import CoverageUpdater
from api.deps import AppSettings, Conn, get_reads
from api.errors import NotFound, Unprocessable
from api.responses import GeoJSONResponse
from api.scope import Scope
from api.settings import Settings
from gis.units import china_today

router = APIRouter(tags=["coverage"])
FromDate = Annotated[
    date | None, Query(alias="from", description="first local day (default: 6 days before 'to')")
]
ToDate = Annotated[
    date | None, Query(alias="to", description="last local day (default: today, China time)")
]
MAX_ALERT_S = 366 * 86_400  # alert thresholds beyond a year are typos (and overflow timestamps)


def today() -> date:
    return china_today()


def window(first: date | None, last: date | None, settings: Settings) -> metrics.Window:
    last = last or today()
    first = first or last - timedelta(days=6)
    return metrics.Window.check(first, last, max_days=settings.coverage.max_window_days)


def updater(request: Request) -> CoverageUpdater:
    coverage: CoverageUpdater = request.app.state.coverage
    return coverage


async def layout_or_active(conn: AsyncConnection[Any], layout: int | None) -> int:
    layout_id = layout or await layouts.active_layout(conn)
    if layout_id is None:
        raise NotFound("no active layout; name one with ?layout=")
    return layout_id


async def check_area(conn: AsyncConnection[Any], scope: Scope, code: str | None) -> None:
    """404 for an area that does not exist or lies outside the scope."""
    if code:
        await admin_areas.feature(conn, scope, code)


@router.get("/api/v1/coverage", summary="Coverage per grid, village, township or county")
async def coverage(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    first: FromDate = None,
    last: ToDate = None,
    layout: Annotated[int | None, Query(description="default: the active patrol layout")] = None,
    level: Annotated[str, Query(pattern="^(grid|village|township|county)$")] = "grid",
    format: Annotated[str, Query(pattern="^(json|geojson)$")] = "json",
) -> Any:
    layout_id = await layout_or_active(conn, layout)
    body = await metrics.unit_metrics(
        conn,
        updater(request),
        principal.scope,
        layout_id,
        window(first, last, settings),
        level=level,
        reads=get_reads(request),
    )
    if format == "json":
        return body
    return GeoJSONResponse(await view.with_geometry(conn, body, layout_id, level))


@router.get(
    "/api/v1/vehicles/ranking",
    summary="Vehicles in service ranked by patrol work (best AWARD_SHARE awarded); the rule; "
    "the vehicles not in service with their reasons",
)
async def ranking(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    first: FromDate = None,
    last: ToDate = None,
) -> dict[str, Any]:
    return await vehicles.ranking(
        conn, updater(request), principal.scope, window(first, last, settings)
    )


@router.get(
    "/api/v1/coverage/blind-spots",
    response_class=GeoJSONResponse,
    summary="Cells of a grid or area unseen for N days (盲区)",
)
async def blind_spots(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    grid: Annotated[str | None, Query(description="15-digit grid code")] = None,
    village: Annotated[str | None, Query(description="village (or area) code")] = None,
    layout: Annotated[int | None, Query()] = None,
    days: Annotated[int | None, Query(ge=1, le=366)] = None,
    end: Annotated[date | None, Query(description="last local day (default today)")] = None,
) -> GeoJSONResponse:
    if not grid and not village:
        raise Unprocessable("name a grid or a village", field="grid")
    layout_id = await layout_or_active(conn, layout)
    body = await spots.blind_spots(
        conn,
        updater(request),
        principal.scope,
        layout_id,
        grid=grid,
        village=village,
        days=days or settings.coverage.blind_spot_days,
        end=end or today(),
    )
    return GeoJSONResponse(body)


@router.get("/api/v1/checkpoints", summary="Alert points visited per day within a radius")
async def checkpoints(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    first: FromDate = None,
    last: ToDate = None,
    area: Annotated[str | None, Query(description="area code (default: all in scope)")] = None,
    radius_m: Annotated[float | None, Query(gt=0, le=5000)] = None,
) -> dict[str, Any]:
    await check_area(conn, principal.scope, area)
    return await spots.checkpoints(
        conn,
        updater(request),
        principal.scope,
        window(first, last, settings),
        area=area,
        radius_m=radius_m or settings.coverage.checkpoint_radius_m,
    )


@router.get("/api/v1/alerts", summary="Devices offline too long; vehicles outside their grids")
async def alerts(
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    offline_s: Annotated[float | None, Query(gt=0, le=MAX_ALERT_S)] = None,
    outside_s: Annotated[float | None, Query(gt=0, le=MAX_ALERT_S)] = None,
) -> dict[str, Any]:
    s = settings.coverage
    return await spots.live_alerts(
        conn,
        principal.scope,
        offline_s=offline_s or s.offline_alert_s,
        outside_s=outside_s or s.outside_alert_s,
    )


@router.post("/api/v1/coverage/update", summary="Recompute pending coverage now")
async def update_now(request: Request, principal: Admin, conn: Conn) -> dict[str, Any]:
    report = await updater(request).run(conn)
    return {
        "device_days": report.device_days,
        "fixes": report.fixes,
        "cell_rows": report.cell_rows,
        "seconds": round(report.seconds, 2),
        "by": principal.name,
    }
