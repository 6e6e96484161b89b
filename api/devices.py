"""The device registry (车载终端): register, list, change, bulk-import from CSV; device tokens.

A device belongs to a home village (its scope key: NBS codes nest by prefix) and may be assigned
grids; it declares the coordinate system its terminal speaks (wgs84, cgcs2000, gcj02, bd09), which
ingest converts from at the edge.

A device gets two secrets at registration, each shown once and stored only as its SHA-256: the
bearer token (batch API, own track) and the OsmAnd key (``osmand_key`` of the creation's answer;
the OsmAnd / Traccar Client sends it as ``key=`` in the tracking URL, as the HTTP Basic password,
or alone as the device id). Devices registered before keys existed have none (legacy): their
OsmAnd fixes are stored as unauthenticated until ``issue_osmand_key`` gives them one.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from api import audit
from api.auth import Principal, new_token, notify_token_change, token_hash
from api.errors import Conflict, NotFound, Unprocessable
from api.ingest.registry import key_hash, new_key
from api.scope import Scope
from gis.codes import CodeError, parse_grid_code, parse_nbs
from gis.crs import INPUT_CRS

DeviceKind = Literal["vehicle", "handheld", "phone"]
DeviceCrs = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
COLUMNS = sql.SQL(
    "d.id, d.identifier, d.kind, d.name, d.plate, d.home_village, d.assigned_grids, d.crs, "
    "d.enabled, d.created_at, d.updated_at"
)


def _village_code(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    try:
        parsed = parse_nbs(str(value))
    except CodeError as exc:
        raise ValueError(str(exc)) from exc
    if parsed.level != "village":
        raise ValueError(f"{value} is a {parsed.level} code, not a village code")
    return parsed.code


def _grid_codes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    try:
        return [str(parse_grid_code(v)) for v in values]
    except CodeError as exc:
        raise ValueError(str(exc)) from exc


VillageCode = Annotated[str | None, AfterValidator(_village_code)]
GridCodes = Annotated[list[str], AfterValidator(_grid_codes)]


class DeviceIn(BaseModel):
    """A device as registered by an admin."""

    identifier: str = Field(min_length=1, max_length=64, pattern=r"^[\w.:@-]+$")
    kind: DeviceKind = "vehicle"
    name: str | None = Field(default=None, max_length=200)
    plate: str | None = Field(default=None, max_length=32, description="e.g. 蒙H·12345")
    home_village: VillageCode = Field(default=None, description="12-digit NBS village code")
    assigned_grids: GridCodes = Field(default_factory=list, description="15-digit grid codes")
    crs: DeviceCrs = Field(default="wgs84", description=f"one of {', '.join(INPUT_CRS)}")
    enabled: bool = True


class DevicePatch(BaseModel):
    """Fields to change; absent fields stay as they are."""

    kind: DeviceKind | None = None
    name: str | None = None
    plate: str | None = None
    home_village: VillageCode = None
    assigned_grids: GridCodes | None = None
    crs: DeviceCrs | None = None
    enabled: bool | None = None


def _scope_where(scope: Scope) -> sql.Composable:
    return scope.where(sql.SQL("coalesce(d.home_village, '')"))


async def _check_village(conn: AsyncConnection[Any], code: str | None) -> None:
    if code is None:
        return
    row = await (
        await conn.execute(
            "SELECT 1 FROM admin_area WHERE code = %s AND level = 'village'", (code,)
        )
    ).fetchone()
    if row is None:
        raise Unprocessable(f"no village {code}", field="home_village")


async def create_device(
    conn: AsyncConnection[Any], actor: Principal, data: DeviceIn
) -> tuple[dict[str, Any], str]:
    """Register a device; returns its row (with its OsmAnd key under ``osmand_key``, shown once
    and not stored) and its token (shown once).

    Raises
    ------
    Forbidden
        When the home village lies outside the actor's scope.
    Conflict
        When the identifier is taken.
    """
    actor.scope.require_area(data.home_village, "the device's home village")
    await _check_village(conn, data.home_village)
    token, key = new_token(), new_key()
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL(
                    """
                    INSERT INTO device AS d (identifier, kind, name, plate, home_village,
                                             assigned_grids, crs, enabled, token_hash,
                                             osmand_key_hash)
                    VALUES (%(identifier)s, %(kind)s, %(name)s, %(plate)s, %(home_village)s,
                            %(assigned_grids)s, %(crs)s, %(enabled)s, %(token_hash)s,
                            %(key_hash)s)
                    RETURNING {cols}
                    """
                ).format(cols=COLUMNS),
                {**data.model_dump(), "token_hash": token_hash(token), "key_hash": key_hash(key)},
            )
            row = await cur.fetchone()
            assert row is not None  # noqa: S101 - RETURNING yields the row
            await audit.record(
                conn,
                actor,
                "device.create",
                object_type="device",
                object_id=row["id"],
                detail={"identifier": data.identifier, "home_village": data.home_village},
            )
    except errors.UniqueViolation as exc:
        raise Conflict(f"a device {data.identifier!r} exists already", field="identifier") from exc
    return {**row, "osmand_key": key}, token


async def list_devices(
    conn: AsyncConnection[Any], scope: Scope, *, village: str | None = None
) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT {cols} FROM device d WHERE {scope} "
        "AND (%(village)s::text IS NULL OR d.home_village LIKE %(village)s || '%%') ORDER BY d.id"
    ).format(cols=COLUMNS, scope=_scope_where(scope))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "village": village})
        return await cur.fetchall()


async def get_device(conn: AsyncConnection[Any], scope: Scope, device_id: int) -> dict[str, Any]:
    """One device; 404 when missing or outside the scope."""
    query = sql.SQL("SELECT {cols} FROM device d WHERE d.id = %(id)s AND {scope}").format(
        cols=COLUMNS, scope=_scope_where(scope)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "id": device_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no device {device_id}")
    return row


async def update_device(
    conn: AsyncConnection[Any], actor: Principal, device_id: int, patch: DevicePatch
) -> dict[str, Any]:
    changes = patch.model_dump(exclude_unset=True)
    async with conn.transaction():
        await get_device(conn, actor.scope, device_id)  # 404 outside the scope
        if "home_village" in changes:
            actor.scope.require_area(changes["home_village"], "the device's new home village")
            await _check_village(conn, changes["home_village"])
        if changes:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
            )
            await conn.execute(
                sql.SQL("UPDATE device SET {}, updated_at = now() WHERE id = %(id)s").format(
                    assignments
                ),
                {**changes, "id": device_id},
            )
            await notify_token_change(conn)  # enabled / home village: cached principals change
            await audit.record(
                conn,
                actor,
                "device.update",
                object_type="device",
                object_id=device_id,
                detail={k: v for k, v in changes.items() if k != "token_hash"},
            )
        return await get_device(conn, actor.scope, device_id)


async def rotate_token(conn: AsyncConnection[Any], actor: Principal, device_id: int) -> str:
    token = new_token()
    async with conn.transaction():
        await get_device(conn, actor.scope, device_id)
        await conn.execute(
            "UPDATE device SET token_hash = %s, updated_at = now() WHERE id = %s",
            (token_hash(token), device_id),
        )
        await notify_token_change(conn)  # the old token stops at once in every process
        await audit.record(conn, actor, "device.token", object_type="device", object_id=device_id)
    return token


async def issue_osmand_key(conn: AsyncConnection[Any], actor: Principal, device_id: int) -> str:
    """A new OsmAnd key for a device (shown once; the old one stops at once). For a legacy
    device (registered before keys existed) this is the migration step: from now on its OsmAnd
    fixes must carry the key, and only then may they mark an arrival."""
    key = new_key()
    async with conn.transaction():
        await get_device(conn, actor.scope, device_id)  # 404 outside the scope
        await conn.execute(
            "UPDATE device SET osmand_key_hash = %s, updated_at = now() WHERE id = %s",
            (key_hash(key), device_id),
        )
        await audit.record(
            conn, actor, "device.osmand_key", object_type="device", object_id=device_id
        )
    return key


async def legacy_devices(conn: AsyncConnection[Any], scope: Scope) -> list[dict[str, Any]]:
    """Devices in ``scope`` without an OsmAnd key (their OsmAnd fixes are unauthenticated)."""
    query = sql.SQL(
        "SELECT d.id, d.identifier FROM device d WHERE d.osmand_key_hash IS NULL AND {scope} "
        "ORDER BY d.id"
    ).format(scope=_scope_where(scope))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, scope.params())
        return await cur.fetchall()


CSV_FIELDS = (
    "identifier",
    "kind",
    "name",
    "plate",
    "home_village",
    "assigned_grids",
    "crs",
    "enabled",
)


def parse_device_csv(text: str) -> list[DeviceIn]:
    """Devices from CSV (header row; ``assigned_grids`` separated by ``;`` or spaces).

    Raises
    ------
    Unprocessable
        Listing every bad row by its line number, and duplicate identifiers.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or "identifier" not in reader.fieldnames:
        raise Unprocessable("the CSV needs a header row with at least 'identifier'", field="file")
    unknown = sorted(set(reader.fieldnames) - set(CSV_FIELDS))
    if unknown:
        raise Unprocessable(f"unknown CSV columns: {', '.join(unknown)}", field="file")
    devices: list[DeviceIn] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    try:
        rows = list(enumerate(reader, start=2))
    except csv.Error as exc:  # a field over the csv module's limit, a stray NUL …
        raise Unprocessable(f"near line {reader.line_num + 1}: {exc}", field="file") from exc
    for line, raw in rows:
        if None in raw:  # more fields than the header names
            problems.append(f"line {line}: more fields than the header has columns")
            continue
        values: dict[str, Any] = {k: v.strip() for k, v in raw.items() if v and v.strip()}
        if "assigned_grids" in values:
            values["assigned_grids"] = values["assigned_grids"].replace(";", " ").split()
        if "enabled" in values:
            values["enabled"] = values["enabled"].lower() in ("1", "true", "yes", "y")
        try:
            device = DeviceIn(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            problems.append(f"line {line}: {'.'.join(map(str, err['loc']))}: {err['msg']}")
            continue
        if device.identifier in seen:
            first = seen[device.identifier]
            problems.append(f"line {line}: identifier {device.identifier} repeats line {first}")
            continue
        seen[device.identifier] = line
        devices.append(device)
    if problems:
        raise Unprocessable("; ".join(problems[:20]), field="file", errors=problems)
    return devices


async def import_devices(
    conn: AsyncConnection[Any], actor: Principal, devices: list[DeviceIn]
) -> list[tuple[dict[str, Any], str]]:
    """Register many devices in one transaction: all or nothing."""
    async with conn.transaction():
        return [await create_device(conn, actor, d) for d in devices]
