"""``/api/v1/devices``: the registry (admin writes, scoped reads), live state and tracks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from api import devices, positions
from api.auth import Admin, Viewer, ViewerOrDevice
from api.deps import AppSettings, Conn, read_body
from api.errors import NotFound, Unprocessable, UnsupportedMediaType
from api.responses import GeoJSONResponse
from api.scope import Scope
from api.settings import archive_root

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


class DeviceCreated(BaseModel):
    """A new device, its bearer token and its OsmAnd key (both shown once, stored hashed)."""

    device: dict[str, Any]
    token: str
    osmand_key: str


def _created(row: dict[str, Any], token: str) -> DeviceCreated:
    device = dict(row)
    key = device.pop("osmand_key")
    return DeviceCreated(device=device, token=token, osmand_key=key)


@router.get("", summary="Devices in your scope")
async def list_devices(
    principal: Viewer, conn: Conn, village: Annotated[str | None, Query()] = None
) -> list[dict[str, Any]]:
    return await devices.list_devices(conn, principal.scope, village=village)


@router.post("", status_code=201, response_model=DeviceCreated, summary="Register a device")
async def create_device(body: devices.DeviceIn, principal: Admin, conn: Conn) -> DeviceCreated:
    row, token = await devices.create_device(conn, principal, body)
    return _created(row, token)


@router.post("/import", status_code=201, summary="Register devices from CSV (all or nothing)")
async def import_devices(
    principal: Admin, conn: Conn, request: Request, settings: AppSettings
) -> list[DeviceCreated]:
    if not request.headers.get("content-type", "").startswith("text/csv"):
        raise UnsupportedMediaType("send the CSV as text/csv", field="content-type")
    data = await read_body(request, settings.ingest.max_body_mb)  # 413 over the cap
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(
            f"the CSV is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (Excel: 'CSV UTF-8') and send it again",
            field="file",
            encoding="utf-8",
        ) from exc
    parsed = devices.parse_device_csv(text)
    created = await devices.import_devices(conn, principal, parsed)
    return [_created(row, token) for row, token in created]


@router.get("/state", response_class=GeoJSONResponse, summary="Latest position of each device")
async def device_state(principal: Viewer, conn: Conn, settings: AppSettings) -> GeoJSONResponse:
    body = await positions.live_state(conn, principal.scope, online_s=settings.ingest.online_s)
    return GeoJSONResponse(body)


@router.get("/{device_id}", summary="One device")
async def get_device(device_id: int, principal: Viewer, conn: Conn) -> dict[str, Any]:
    return await devices.get_device(conn, principal.scope, device_id)


@router.patch("/{device_id}", summary="Change a device")
async def update_device(
    device_id: int, body: devices.DevicePatch, principal: Admin, conn: Conn
) -> dict[str, Any]:
    return await devices.update_device(conn, principal, device_id, body)


@router.post("/{device_id}/token", summary="Issue a new device token (the old one stops)")
async def rotate_token(device_id: int, principal: Admin, conn: Conn) -> dict[str, str]:
    return {"token": await devices.rotate_token(conn, principal, device_id)}


@router.post(
    "/{device_id}/osmand-key",
    summary="Issue a new OsmAnd key (the old one stops; a legacy device must then send it)",
)
async def issue_osmand_key(device_id: int, principal: Admin, conn: Conn) -> dict[str, str]:
    return {"osmand_key": await devices.issue_osmand_key(conn, principal, device_id)}


@router.get("/{device_id}/track", response_class=GeoJSONResponse, summary="A device's track")
async def get_track(
    device_id: int,
    principal: ViewerOrDevice,
    conn: Conn,
    settings: AppSettings,
    start: Annotated[datetime, Query(alias="from", description="ISO 8601 with offset")],
    end: Annotated[datetime, Query(alias="to", description="ISO 8601 with offset")],
    format: Annotated[str, Query(pattern="^(points|line)$")] = "points",
    simplify: Annotated[float, Query(ge=0, le=1000, description="metres (line only)")] = 0.0,
) -> GeoJSONResponse:
    scope = principal.scope
    if principal.device_id is not None:  # a device sees its own track and nothing else
        if principal.device_id != device_id:
            raise NotFound(f"no device {device_id}")
        scope = Scope.everything()
    archive_dir = archive_root(settings)  # days archived to GeoParquet read from there
    body = await positions.track(
        conn, scope, device_id, start, end, as_line=format == "line", simplify_m=simplify,
        archive_dir=archive_dir
    )  # fmt: skip
    return GeoJSONResponse(body)
