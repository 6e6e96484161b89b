"""``/api/v1/positions``: batch and file uploads; ``/api/v1/ingest``: statistics, quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from psycopg import sql
from pydantic import BaseModel

from api import offload, positions
from api.auth import Admin, DeviceWriter, Principal
from api.deps import AppSettings, Conn, read_body
from api.errors import BadRequest, Forbidden, Unprocessable, UnsupportedMediaType
from api.ingest.fixes import FixBatch, FixError
from api.ingest.stats import scoped_ingest_stats
from api.ingest.store import Ingestor
from api.limits import connection_counts
from api.protocols import trackfiles
from api.protocols.batchjson import BatchFormatError, parse_batch_json
from api.ratelimit import RateLimiter

router = APIRouter(tags=["positions"])
MAX_ERRORS_SHOWN = 100


class IngestReport(BaseModel):
    """What became of an upload: counts per outcome and the first unreadable rows."""

    received: int
    stored: int
    duplicate: int
    rejected: dict[str, int]
    errors: list[dict[str, Any]]
    format: str | None = None
    stopped_at: str | None = None


def limit_rate(request: Request, principal: Principal) -> None:
    """429 with ``Retry-After`` when a device (or user) posts faster than the ingest limit."""
    limiter: RateLimiter | None = getattr(request.app.state, "ingest_limiter", None)
    if limiter is not None:
        limiter.check(f"ingest:{principal.name}")


async def own_devices_only(conn: Any, principal: Principal, batch: FixBatch) -> None:
    """A device token posts for its own device only, a scoped user for devices in their scope
    only (an unknown identifier is refused alike, so the answer tells nothing of devices outside
    it); anything else refuses the whole request."""
    named = {str(d) for d in batch.device}
    if principal.device_id is not None:
        others = sorted(named - {principal.name.removeprefix("device:")})
        if others:
            raise Forbidden(
                f"a device token may post only its own fixes, not {', '.join(others[:5])}"
            )
        return
    if principal.scope.unrestricted or not named:
        return
    scope = principal.scope
    query = sql.SQL(
        "SELECT identifier FROM device d WHERE identifier = ANY(%(names)s) AND {}"
    ).format(scope.where(sql.SQL("coalesce(d.home_village, '')")))
    rows = await (await conn.execute(query, {**scope.params(), "names": sorted(named)})).fetchall()
    others = sorted(named - {r[0] for r in rows})
    if others:
        raise Forbidden(f"devices outside your scope: {', '.join(others[:5])}")


async def _store(
    request: Request,
    conn: Any,
    principal: Principal,
    batch: FixBatch,
    errors: list[FixError],
    *,
    protocol: str,
    fmt: str | None = None,
    stopped_at: str | None = None,
) -> IngestReport:
    await own_devices_only(conn, principal, batch)
    ingestor: Ingestor = request.app.state.ingestor
    await ingestor.prepare(conn, batch)
    result = await ingestor.store(conn, batch, protocol=protocol, errors=errors)
    return IngestReport(
        received=len(batch) + len(errors),
        stored=result.stored,
        duplicate=result.duplicate,
        rejected=result.rejected,
        errors=[
            {"row": e.row, "field": e.field, "reason": e.reason}
            for e in [*errors, *result.errors][:MAX_ERRORS_SHOWN]
        ],
        format=fmt,
        stopped_at=stopped_at,
    )


def _default_device(principal: Principal, device: str | None) -> str | None:
    if principal.device_id is not None:
        return principal.name.removeprefix("device:")
    return device


@router.post(
    "/api/v1/positions",
    response_model=IngestReport,
    summary="Batch upload: JSON array, GeoJSON FeatureCollection or CSV",
)
async def post_positions(
    request: Request,
    principal: DeviceWriter,
    conn: Conn,
    settings: AppSettings,
    device: Annotated[str | None, Query(description="device for rows that name none")] = None,
) -> IngestReport:
    limit_rate(request, principal)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, settings.ingest.max_body_mb)
    default = _default_device(principal, device)
    if content_type in ("application/json", ""):
        try:
            batch, errors = parse_batch_json(body, default_device=default)
        except BatchFormatError as exc:
            if body.lstrip()[:1] == b"{":  # a GeoJSON FeatureCollection
                return await _file(request, conn, principal, body, "geojson", default, "batch")
            raise BadRequest(str(exc), field=exc.field) from exc
        return await _store(request, conn, principal, batch, errors, protocol="batch", fmt="json")
    if content_type in ("application/geo+json",):
        return await _file(request, conn, principal, body, "geojson", default, "batch")
    if content_type in ("text/csv", "application/csv"):
        return await _file(request, conn, principal, body, "csv", default, "batch")
    raise UnsupportedMediaType(
        f"unsupported content type {content_type!r}: send application/json, "
        "application/geo+json or text/csv",
        field="content-type",
    )


@router.post(
    "/api/v1/positions/files",
    response_model=IngestReport,
    summary="Upload a track file: GPX, NMEA 0183, CSV or GeoJSON",
)
async def post_file(
    request: Request,
    principal: DeviceWriter,
    conn: Conn,
    settings: AppSettings,
    device: Annotated[str | None, Query(description="device the track belongs to")] = None,
    format: Annotated[
        str | None, Query(pattern="^(gpx|nmea|csv|geojson)$", description="detected when absent")
    ] = None,
    filename: Annotated[
        str | None, Query(description="original name, for format detection")
    ] = None,
) -> IngestReport:
    limit_rate(request, principal)
    body = await read_body(request, settings.ingest.max_body_mb)
    try:
        fmt = format or trackfiles.detect_format(body, filename)
    except trackfiles.TrackFileError as exc:
        raise Unprocessable(str(exc), field="format") from exc
    return await _file(
        request, conn, principal, body, fmt, _default_device(principal, device), "file"
    )


async def _file(
    request: Request,
    conn: Any,
    principal: Principal,
    body: bytes,
    fmt: str | None,
    device: str | None,
    protocol: str,
) -> IngestReport:
    try:  # in a worker process: expat/CSV/JSON parsing would hold the loop (and the GIL)
        parsed = await offload.in_process(
            request.app.state.settings.api, trackfiles.parse_file, body, format=fmt, device=device
        )
    except trackfiles.TrackFileError as exc:
        raise Unprocessable(str(exc), field=getattr(exc, "field", "file")) from exc
    return await _store(
        request,
        conn,
        principal,
        parsed.fixes,
        list(parsed.errors),
        protocol=protocol,
        fmt=parsed.format,
        stopped_at=parsed.stopped_at,
    )


@router.get(
    "/api/v1/ingest/stats",
    summary="Fixes stored, duplicate and rejected per reason (a scoped admin: their devices')",
)
async def ingest_stats(
    principal: Admin,
    conn: Conn,
    connections: Annotated[dict[str, Any], Depends(connection_counts)],
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    if not principal.scope.unrestricted:  # the counters are league-wide: count their rows
        return await scoped_ingest_stats(conn, principal.scope, since=since, until=until)
    # refused/closed connections of this process's listeners (api/limits.py): league admins only
    stats = await positions.ingest_stats(conn, since=since, until=until)
    return {**stats, "connections": connections}


@router.get("/api/v1/ingest/rejected", summary="Recently quarantined fixes with their reasons")
async def ingest_rejected(
    principal: Admin,
    conn: Conn,
    reason: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    return await positions.rejected(conn, principal.scope, reason=reason, limit=limit)
