"""``/api/v1/layouts``, ``/api/v1/grids``, ``/api/v1/staff``, ``/api/v1/alert-points``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from api import admin_areas, grids, layout_ops, layouts, offload, staff
from api.auth import Planner, Viewer
from api.deps import AppSettings, Conn, read_body
from api.responses import GeoJSONResponse

router = APIRouter(tags=["grids"])


class WorkerIn(BaseModel):
    staff_id: int | None = Field(description="staff member, or null to clear")
    role: str = Field(default="worker", description="worker (网格员) or leader (网格长)")


class SitingIn(BaseModel):
    village: str = Field(description="12-digit village code")
    k: int = Field(default=6, ge=1, le=200, description="alert points to place")
    radius_km: float = Field(default=5.0, gt=0, le=100)
    method: str = Field(default="mclp", description="mclp (max coverage) or pmedian")
    spacing_m: float = Field(default=1000.0, ge=100, le=20_000, description="candidate spacing")


@router.get("/api/v1/layouts", summary="Grid layouts (drafts, active, retired)")
async def list_layouts(
    principal: Viewer, conn: Conn, status: Annotated[str | None, Query()] = None
) -> list[dict[str, Any]]:
    return await layouts.list_layouts(conn, principal.scope, status=status)


@router.post("/api/v1/layouts", status_code=201, summary="Cut an area's villages into grids")
async def create_layout(spec: layouts.LayoutSpec, principal: Planner, conn: Conn) -> dict[str, Any]:
    made = await layouts.make_layout(conn, principal, spec)
    return {**made.__dict__, "layout": await layouts.get_layout(conn, principal.scope, made.id)}


@router.get("/api/v1/layouts/{layout_id}", summary="One layout")
async def get_layout(layout_id: int, principal: Viewer, conn: Conn) -> dict[str, Any]:
    return await layouts.get_layout(conn, principal.scope, layout_id)


class ActivateIn(BaseModel):
    version: int | None = Field(default=None, description="the draft's version (recommended)")
    effective_from: datetime | None = Field(default=None, description="schedule a future switch")


@router.post(
    "/api/v1/layouts/{layout_id}/activate",
    summary="Validate and activate (the active one retires; lineage is recorded)",
)
async def activate(
    layout_id: int, principal: Planner, conn: Conn, body: ActivateIn | None = None
) -> dict[str, Any]:
    body = body or ActivateIn()
    return await layout_ops.activate(
        conn, principal, layout_id, version=body.version, effective_from=body.effective_from
    )


@router.get(
    "/api/v1/layouts/{layout_id}/grids",
    response_class=GeoJSONResponse,
    summary="The layout's grids as GeoJSON",
)
async def layout_grids(
    layout_id: int,
    principal: Viewer,
    conn: Conn,
    village: Annotated[str | None, Query(description="village or area code")] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat")] = None,
    simplify: Annotated[float, Query(ge=0, le=1000, description="metres")] = 0.0,
) -> GeoJSONResponse:
    body = await grids.grids_geojson(
        conn,
        principal.scope,
        layout_id,
        village=village,
        bbox=admin_areas.parse_bbox(bbox),
        simplify_m=simplify,
    )
    return GeoJSONResponse(body)


@router.get(
    "/api/v1/layouts/{layout_id}/staffing",
    summary="Grids without a worker; workers with several grids",
)
async def staffing(layout_id: int, principal: Viewer, conn: Conn) -> dict[str, Any]:
    return await grids.staffing_report(conn, principal.scope, layout_id)


@router.put("/api/v1/layouts/{layout_id}/grids/{code}/worker", summary="Assign a grid worker")
async def assign_worker(
    layout_id: int, code: str, body: WorkerIn, principal: Planner, conn: Conn
) -> dict[str, Any]:
    return await grids.assign_worker(
        conn, principal, layout_id, code, body.staff_id, role=body.role
    )


@router.get("/api/v1/grids/{code}", summary="One grid (of the active layout by default)")
async def get_grid(
    code: str, principal: Viewer, conn: Conn, layout: Annotated[int | None, Query()] = None
) -> dict[str, Any]:
    return await grids.get_grid(conn, principal.scope, code, layout_id=layout)


@router.get("/api/v1/staff", summary="Grid workers, leaders and informants")
async def list_staff(
    principal: Viewer, conn: Conn, village: Annotated[str | None, Query()] = None
) -> list[dict[str, Any]]:
    return await staff.list_staff(conn, principal.scope, village=village)


@router.post("/api/v1/staff/import", summary="Import staff from CSV, XLSX or GeoJSON")
async def import_staff(
    request: Request,
    principal: Planner,
    conn: Conn,
    settings: AppSettings,
    filename: Annotated[str, Query(description="file name; its extension says the format")],
) -> dict[str, int]:
    body = await read_body(request, settings.ingest.max_body_mb)
    frame = await offload.in_process(settings.api, staff.read_table, body, filename)
    return (await staff.import_staff(conn, principal, frame)).__dict__


@router.get(
    "/api/v1/alert-points",
    response_class=GeoJSONResponse,
    summary="Alert points (报警点) with the grid each lies in",
)
async def list_alert_points(
    principal: Viewer,
    conn: Conn,
    layout: Annotated[
        int | None, Query(description="layout for grid codes (default active)")
    ] = None,
    village: Annotated[str | None, Query()] = None,
) -> GeoJSONResponse:
    layout_id = layout or await layouts.active_layout(conn)
    body = await staff.alert_points_geojson(
        conn, principal.scope, layout_id=layout_id, village=village
    )
    return GeoJSONResponse(body)


@router.post("/api/v1/alert-points/import", summary="Import alert points (CSV, XLSX, GeoJSON)")
async def import_alert_points(
    request: Request,
    principal: Planner,
    conn: Conn,
    settings: AppSettings,
    filename: Annotated[str, Query()],
    crs: Annotated[str, Query(pattern="^(wgs84|cgcs2000|gcj02|bd09)$")] = "wgs84",
    keep_unassigned: Annotated[
        bool, Query(description="keep points outside every village")
    ] = False,
) -> dict[str, int]:
    body = await read_body(request, settings.ingest.max_body_mb)
    frame = await offload.in_process(settings.api, staff.read_table, body, filename)
    result = await staff.import_alert_points(
        conn, principal, frame, crs=crs, keep_unassigned=keep_unassigned
    )
    return result.__dict__


@router.post(
    "/api/v1/alert-points/siting", summary="Where K alert points should go (MCLP/p-median)"
)
async def siting(
    body: SitingIn, principal: Planner, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    """A planner's tool (it solves an optimisation problem in a worker process, bounded by
    ``GRIDPATROL_API_SITING_MAX_CANDIDATES`` and ``…_MAX_PAIRS``: 422 naming the limit)."""
    return await staff.site(
        conn,
        principal.scope,
        body.village,
        k=body.k,
        radius_km=body.radius_km,
        method=body.method,
        spacing_m=body.spacing_m,
        limits=settings.api,
    )
