"""``/api/v1/admin-areas``: the administrative hierarchy as GeoJSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import admin_areas
from api.auth import Viewer
from api.deps import Conn
from api.responses import GeoJSONResponse

router = APIRouter(prefix="/api/v1/admin-areas", tags=["admin areas"])


@router.get("", response_class=GeoJSONResponse, summary="Admin areas as a FeatureCollection")
async def list_admin_areas(
    principal: Viewer,
    conn: Conn,
    level: Annotated[str | None, Query(description="league, county, township or village")] = None,
    parent: Annotated[str | None, Query(description="NBS code of the parent area")] = None,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS-84)")] = None,
    simplify: Annotated[float, Query(ge=0, le=10_000, description="tolerance in metres")] = 0.0,
) -> GeoJSONResponse:
    body = await admin_areas.feature_collection(
        conn,
        principal.scope,
        level=level,
        parent=parent,
        bbox=admin_areas.parse_bbox(bbox),
        simplify_m=simplify,
    )
    return GeoJSONResponse(body)


@router.get("/{code}", response_class=GeoJSONResponse, summary="One admin area as a Feature")
async def get_admin_area(code: str, principal: Viewer, conn: Conn) -> GeoJSONResponse:
    return GeoJSONResponse(await admin_areas.feature(conn, principal.scope, code))
