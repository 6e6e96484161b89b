"""Redraw routes: clone, edit (split, merge, reshape, move a boundary, replace from a file),
validate, diff, roll back, export, lineage; alert points moved or re-assigned."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import numpy as np
import shapely
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from shapely.geometry import LineString, shape
from shapely.geometry.base import BaseGeometry

from api import audit, layout_ops, offload, redraw
from api.auth import Planner, Viewer
from api.deps import AppSettings, Conn, read_body
from api.errors import NotFound, Unprocessable
from api.layouts import get_layout
from api.responses import GeoJSONResponse
from gis import redraw as edits

router = APIRouter(prefix="/api/v1/layouts", tags=["redraw"])


class CloneIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class Versioned(BaseModel):
    version: int = Field(description="the draft's version this edit was made on")


class SplitIn(Versioned):
    code: str
    line: dict[str, Any] = Field(description="GeoJSON LineString (WGS-84) across the grid")


class MergeIn(Versioned):
    codes: list[str] = Field(min_length=2)


class ReshapeIn(Versioned):
    code: str
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon (WGS-84): the grid's new shape")


class MoveIn(Versioned):
    a: str
    b: str
    line: dict[str, Any] = Field(description="GeoJSON LineString: the new shared boundary")


def _line(value: dict[str, Any], field: str) -> LineString:
    geom = _geometry(value, "LineString", field)
    assert isinstance(geom, LineString)  # noqa: S101 - _geometry checked the type
    return geom


def _geometry(value: dict[str, Any], kind: str, field: str) -> BaseGeometry:
    try:
        with warnings.catch_warnings():  # NaN coordinates: refused just below, by name
            warnings.simplefilter("ignore", RuntimeWarning)
            geom = shape(value)
    except Exception as exc:  # shapely names what is wrong with the GeoJSON
        raise Unprocessable(f"{field} is not GeoJSON: {exc}", field=field) from exc
    if geom.geom_type != kind or geom.is_empty:
        raise Unprocessable(f"{field} must be a GeoJSON {kind}, got {geom.geom_type}", field=field)
    if not np.isfinite(shapely.get_coordinates(geom, include_z=bool(shapely.has_z(geom)))).all():
        raise Unprocessable(
            f"{field} has a coordinate that is not a finite number (NaN or Infinity)", field=field
        )
    return geom


@router.post("/{layout_id}/clone", status_code=201, summary="Clone a layout into a draft")
async def clone(layout_id: int, body: CloneIn, principal: Planner, conn: Conn) -> dict[str, Any]:
    draft = await redraw.clone(conn, principal, layout_id, name=body.name)
    return await get_layout(conn, principal.scope, draft)


@router.delete("/{layout_id}", summary="Abandon (delete) a draft; active/retired are refused")
async def abandon(
    layout_id: int,
    principal: Planner,
    conn: Conn,
    version: Annotated[
        int | None, Query(description="the draft's version you saw (refused if stale)")
    ] = None,
) -> dict[str, Any]:
    return await redraw.abandon(conn, principal, layout_id, version=version)


@router.post("/{layout_id}/edits/split", summary="Split a grid of a draft by a line")
async def split(
    layout_id: int, body: SplitIn, principal: Planner, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    line = _line(body.line, "line")
    return await redraw.edit_village(
        conn,
        principal,
        layout_id,
        body.version,
        redraw.village_of(body.code),
        lambda grids, _village, used: edits.split(grids, body.code, line, used=used),
        action="layout.split",
        cpu=settings.api,
        detail={"code": body.code},
    )


@router.post("/{layout_id}/edits/merge", summary="Merge adjacent grids of a draft")
async def merge(
    layout_id: int, body: MergeIn, principal: Planner, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    villages = {redraw.village_of(c) for c in body.codes}
    if len(villages) != 1:
        raise Unprocessable("merged grids must be in one village", field="codes")
    return await redraw.edit_village(
        conn,
        principal,
        layout_id,
        body.version,
        villages.pop(),
        lambda grids, _village, _used: edits.merge(grids, body.codes),
        action="layout.merge",
        cpu=settings.api,
        detail={"codes": body.codes},
    )


@router.post("/{layout_id}/edits/reshape", summary="Give a grid a new shape (neighbours adjust)")
async def reshape(
    layout_id: int, body: ReshapeIn, principal: Planner, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    polygon = _geometry(body.geometry, "Polygon", "geometry")
    return await redraw.edit_village(
        conn,
        principal,
        layout_id,
        body.version,
        redraw.village_of(body.code),
        lambda grids, village, _used: edits.reshape(grids, body.code, polygon, village),
        action="layout.reshape",
        cpu=settings.api,
        detail={"code": body.code},
    )


@router.post("/{layout_id}/edits/move-boundary", summary="Move the boundary between two grids")
async def move_boundary(
    layout_id: int, body: MoveIn, principal: Planner, conn: Conn, settings: AppSettings
) -> dict[str, Any]:
    line = _line(body.line, "line")
    village = redraw.village_of(body.a)
    if redraw.village_of(body.b) != village:
        raise Unprocessable("both grids must be in one village", field="b")
    return await redraw.edit_village(
        conn,
        principal,
        layout_id,
        body.version,
        village,
        lambda grids, _village, _used: edits.move_boundary(grids, body.a, body.b, line),
        action="layout.move_boundary",
        cpu=settings.api,
        detail={"a": body.a, "b": body.b},
    )


@router.post(
    "/{layout_id}/replace", summary="Replace grids from a GeoPackage/Shapefile(zip)/GeoJSON"
)
async def replace(
    layout_id: int,
    request: Request,
    principal: Planner,
    conn: Conn,
    settings: AppSettings,
    version: Annotated[int, Query()],
    filename: Annotated[str, Query()],
    crs: Annotated[str | None, Query(description="if the file declares none")] = None,
) -> dict[str, Any]:
    data = await read_body(request, settings.ingest.max_body_mb)
    frame = await offload.in_thread(settings.api, layout_ops.read_grid_file, data, filename, crs)
    return await layout_ops.replace_from_file(conn, principal, layout_id, version, frame)


@router.get("/{layout_id}/validate", summary="Validate a layout (violations as GeoJSON)")
async def validate(
    layout_id: int,
    principal: Viewer,
    conn: Conn,
    village: Annotated[
        list[str] | None,
        Query(description="only these villages (repeat it): what an edit touched"),
    ] = None,
) -> dict[str, Any]:
    report = await layout_ops.check(conn, principal.scope, layout_id, villages_only=village)
    return {
        "layout": layout_id,
        "villages": village,
        "valid": report.valid,
        "problems": len(report.violations),
        "violations": report.feature_collection(),
    }


@router.get("/{layout_id}/diff", summary="Added, removed and changed grids against another layout")
async def diff(
    layout_id: int,
    principal: Viewer,
    conn: Conn,
    against: Annotated[
        int | None, Query(description="default: the layout it was cloned from")
    ] = None,
) -> GeoJSONResponse:
    return GeoJSONResponse(await layout_ops.diff(conn, principal.scope, layout_id, against))


@router.post("/{layout_id}/rollback", summary="Reactivate a retired layout")
async def rollback(layout_id: int, principal: Planner, conn: Conn) -> dict[str, Any]:
    return await layout_ops.rollback(conn, principal, layout_id)


@router.get("/{layout_id}/export", summary="Download a layout for QGIS (gpkg, shp zip, geojson)")
async def export(
    layout_id: int,
    principal: Viewer,
    conn: Conn,
    format: Annotated[str, Query(pattern="^(gpkg|shp|geojson)$")] = "gpkg",
) -> Response:
    data, name = await layout_ops.export(conn, principal.scope, layout_id, format)
    media = {
        "gpkg": "application/geopackage+sqlite3",
        "shp": "application/zip",
        "geojson": "application/geo+json",
    }[format]
    return Response(
        data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/{layout_id}/lineage", summary="Old code → new code with area shares")
async def lineage(layout_id: int, principal: Viewer, conn: Conn) -> list[dict[str, Any]]:
    return await layout_ops.lineage(conn, principal.scope, layout_id)


class AlertPointIn(BaseModel):
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    staff_id: int | None = None


alerts = APIRouter(prefix="/api/v1/alert-points", tags=["grids"])


@alerts.put("/{point_id}", summary="Move an alert point or change who looks after it")
async def update_alert_point(
    point_id: int, body: AlertPointIn, principal: Planner, conn: Conn
) -> dict[str, Any]:
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT village_code FROM alert_point WHERE id = %s FOR UPDATE", (point_id,)
            )
        ).fetchone()
        if row is None or not principal.scope.covers_area(row[0] or ""):
            raise NotFound(f"no alert point {point_id}")
        if (body.lon is None) != (body.lat is None):
            raise Unprocessable("give both lon and lat to move the point", field="lon")
        if body.lon is not None:
            moved = await (
                await conn.execute(
                    "SELECT code FROM admin_area WHERE level = 'village' "
                    "AND ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) LIMIT 1",
                    (body.lon, body.lat),
                )
            ).fetchone()
            if moved is None or not principal.scope.covers_area(moved[0]):
                raise Unprocessable(
                    "the new place is outside every village of your scope", field="lon"
                )
            await conn.execute(
                "UPDATE alert_point SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4326), "
                "village_code = %s WHERE id = %s",
                (body.lon, body.lat, moved[0], point_id),
            )
        if "staff_id" in body.model_fields_set and body.staff_id is not None:
            # a staff member outside the scope is answered like an absent one (ids do not
            # enumerate people), and nothing is written
            staff = await (
                await conn.execute("SELECT village_code FROM staff WHERE id = %s", (body.staff_id,))
            ).fetchone()
            if staff is None or not principal.scope.covers_area(staff[0] or ""):
                raise NotFound(f"no staff member {body.staff_id}", field="staff_id")
        if "staff_id" in body.model_fields_set:
            await conn.execute(
                "UPDATE alert_point SET staff_id = %s WHERE id = %s", (body.staff_id, point_id)
            )
        await audit.record(
            conn,
            principal,
            "alert_point.update",
            object_type="alert_point",
            object_id=point_id,
            detail=body.model_dump(exclude_unset=True),
        )
    result = await (
        await conn.execute(
            "SELECT id, kind, name, village_code, staff_id, ST_X(geom), ST_Y(geom) "
            "FROM alert_point WHERE id = %s",
            (point_id,),
        )
    ).fetchone()
    assert result is not None  # noqa: S101
    keys = ("id", "kind", "name", "village_code", "staff_id", "lon", "lat")
    return dict(zip(keys, result, strict=True))
