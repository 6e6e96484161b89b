"""Foot patrols (巡查打卡): start, fixes, stop — the fixes through the normal ingest path.

Each worker has one handheld ``device`` (identifier ``staff-<id>``, kind ``handheld``, homed in
their village), made on first use. Fixes posted to a patrol are stored by the process's
``Ingestor`` like any device's (filters, quarantine with the reason, idempotent on (device, fix
time), live state and coverage marks in the same transaction), with ``{"patrol": id}`` in their
extras, so the coverage engine counts them under a handheld device: coverage on foot.

Replays are harmless: a patrol is found again by its client id, a fix already stored is a
duplicate, and the patrol's figures (first and last fix, fixes, grids touched) are recomputed
from what is stored rather than added up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.auth import Principal
from api.errors import NotFound, Unprocessable
from api.ingest.filters import DUPLICATE, REASONS, STORED
from api.ingest.fixes import FixBatch, FixError
from api.ingest.store import Ingestor
from api.settings import IngestSettings, MobileSettings

PROTOCOL = "mobile"
OUTSIDE_PATROL = "outside_patrol"  # a fix dated outside its patrol (quarantined)
PATROL_SLACK = timedelta(minutes=5)  # the phone's clock against the server's
FUTURE_SLACK = timedelta(minutes=5)


class PatrolIn(BaseModel):
    client_id: UUID = Field(description="made by the phone; a replay finds the same patrol")
    grid_code: str | None = Field(default=None, max_length=15, description="one of my grids")
    at: datetime | None = Field(default=None, description="when it started (default now)")


class FixIn(BaseModel):
    client_id: str | None = Field(
        default=None, max_length=64, description="ignored: (device, time) is the key"
    )
    time: datetime
    lat: float = Field(allow_inf_nan=False)
    lon: float = Field(allow_inf_nan=False)
    accuracy: float | None = Field(default=None, allow_inf_nan=False)
    speed: float | None = Field(default=None, allow_inf_nan=False, description="m/s")


class FixesIn(BaseModel):
    fixes: list[FixIn] = Field(max_length=5000)


class StopIn(BaseModel):
    at: datetime | None = Field(default=None, description="when it ended (default now)")


PATROL_COLUMNS = """
p.id, p.client_id, p.grid_code, p.grid_codes, p.started_at, p.ended_at, p.fixes,
p.first_fix_at, p.last_fix_at
"""


INSERT_PATROL = (
    "INSERT INTO patrol AS p (staff_id, device_id, client_id, grid_code, started_at) "  # noqa: S608
    f"VALUES (%s, %s, %s, %s, coalesce(%s, now())) RETURNING {PATROL_COLUMNS}"
)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _check_time(at: datetime | None, ingest: IngestSettings, field: str) -> datetime | None:
    if at is None:
        return None
    at = _aware(at)
    now = datetime.now(UTC)
    if at > now + FUTURE_SLACK or at < now - timedelta(days=ingest.max_age_days):
        raise Unprocessable(
            f"{field} {at.isoformat()} is in the future or older than {ingest.max_age_days:g} days",
            field=field,
        )
    return at


async def handheld(conn: AsyncConnection[Any], staff_id: int) -> tuple[int, str]:
    """The worker's handheld device (id, identifier), made on first use (in the caller's
    transaction)."""
    row = await (
        await conn.execute(
            "SELECT s.device_id, d.identifier, s.name, s.village_code FROM staff s "
            "LEFT JOIN device d ON d.id = s.device_id WHERE s.id = %s FOR UPDATE OF s",
            (staff_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"no staff member {staff_id}")
    if row[0] is not None:
        return int(row[0]), str(row[1])
    identifier = f"staff-{staff_id}"
    made = await (
        await conn.execute(
            "INSERT INTO device (identifier, kind, name, home_village) "
            "VALUES (%s, 'handheld', %s, %s) ON CONFLICT (identifier) DO NOTHING RETURNING id",
            (identifier, f"网格员 {row[2]}", row[3]),
        )
    ).fetchone()
    if made is None:
        raise Unprocessable(
            f"a device {identifier} exists already and is not this worker's handheld; rename it",
            field="device",
        )
    await conn.execute("UPDATE staff SET device_id = %s WHERE id = %s", (made[0], staff_id))
    return int(made[0]), identifier


async def _mine(
    conn: AsyncConnection[Any], principal: Principal, patrol_id: int, *, lock: bool = False
) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {PATROL_COLUMNS}, p.device_id FROM patrol p "  # noqa: S608 - fixed text
            f"WHERE p.id = %s AND p.staff_id = %s{' FOR UPDATE' if lock else ''}",
            (patrol_id, principal.staff_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no patrol {patrol_id}")
    return row


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "device_id"}


async def start(
    conn: AsyncConnection[Any], principal: Principal, body: PatrolIn, ingest: IngestSettings
) -> tuple[dict[str, Any], bool]:
    """Start a foot patrol (closing one still open); (patrol, created). The same client id
    again returns the patrol it made."""
    assert principal.staff_id is not None  # noqa: S101 - a worker's route
    at = _check_time(body.at, ingest, "at")
    grid = body.grid_code or (principal.scope.grids[0] if principal.scope.grids else None)
    if grid is not None and grid not in principal.scope.grids:
        raise NotFound(f"no grid {grid}", field="grid_code")
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('gridpatrol.patrol'), %s)", (principal.staff_id,)
        )
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {PATROL_COLUMNS} FROM patrol p WHERE p.staff_id = %s AND p.client_id = %s",  # noqa: S608
                (principal.staff_id, body.client_id),
            )
            found = await cur.fetchone()
            if found is not None:
                return found, False
            device_id, _ = await handheld(conn, principal.staff_id)
            await cur.execute(
                "UPDATE patrol SET ended_at = greatest(started_at, coalesce(%s, now())) "
                "WHERE staff_id = %s AND ended_at IS NULL",
                (at, principal.staff_id),
            )
            await cur.execute(
                INSERT_PATROL,
                (principal.staff_id, device_id, body.client_id, grid, at),
            )
            made = await cur.fetchone()
    assert made is not None  # noqa: S101 - RETURNING yields the row
    return made, True


TOUCHED = """
SELECT coalesce(array_agg(DISTINCT g.code ORDER BY g.code), '{}')
  FROM unnest(%(lon)s::float8[], %(lat)s::float8[]) AS u(x, y)
  JOIN grid g ON ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326))
  JOIN grid_layout l ON l.id = g.layout_id AND l.status = 'active' AND l.purpose = 'patrol'
"""
RECOUNT = """
WITH b AS (SELECT least(p.first_fix_at, %(t0)s) AS t0, greatest(p.last_fix_at, %(t1)s) AS t1
             FROM patrol p WHERE p.id = %(id)s)
UPDATE patrol p SET first_fix_at = b.t0, last_fix_at = b.t1,
       grid_codes = ARRAY(SELECT DISTINCT c FROM unnest(p.grid_codes || %(grids)s::text[]) c
                          ORDER BY c),
       fixes = (SELECT count(*) FROM position f
                 WHERE f.device_id = p.device_id AND f.fix_time BETWEEN b.t0 AND b.t1
                   AND f.extras ->> 'patrol' = p.id::text)
  FROM b WHERE p.id = %(id)s
"""


async def add_fixes(
    conn: AsyncConnection[Any],
    ingestor: Ingestor,
    principal: Principal,
    patrol_id: int,
    body: FixesIn,
    settings: MobileSettings,
) -> dict[str, Any]:
    """Store the fixes through the ingest path; what became of each (see the module)."""
    if len(body.fixes) > settings.max_fixes:
        raise Unprocessable(
            f"{len(body.fixes)} fixes; at most {settings.max_fixes} a request "
            "(GRIDPATROL_MOBILE_MAX_FIXES)",
            field="fixes",
        )
    patrol = await _mine(conn, principal, patrol_id)
    if not body.fixes:
        return {"accepted": 0, "duplicates": 0, "rejected": []}
    identifier = await (
        await conn.execute("SELECT identifier FROM device WHERE id = %s", (patrol["device_id"],))
    ).fetchone()
    assert identifier is not None  # noqa: S101 - the patrol's foreign key
    extras = f'{{"patrol": {patrol_id}}}'
    batch = FixBatch.from_records(
        {
            "device": identifier[0],
            "time": _aware(f.time),
            "lat": f.lat,
            "lon": f.lon,
            "accuracy": np.nan if f.accuracy is None else f.accuracy,
            "speed": np.nan if f.speed is None else f.speed,
            "extras": extras,
            "row": i + 1,
        }
        for i, f in enumerate(body.fixes)
    )
    # a patrol's fixes lie within it (a few minutes' slack for the phone's clock): a fix outside
    # is quarantined with the reason, not counted as foot coverage of another day
    lo = patrol["started_at"] - PATROL_SLACK
    hi = (patrol["ended_at"] or datetime.now(UTC)) + PATROL_SLACK
    outside = (batch.time_us < _us(lo)) | (batch.time_us > _us(hi))
    errors = [
        FixError(
            row=int(i) + 1,
            reason=OUTSIDE_PATROL,
            field="time",
            raw=f"{identifier[0]} {_at(int(batch.time_us[i])).isoformat()} "
            f"{batch.lat[i]:.6f} {batch.lon[i]:.6f} (patrol {patrol_id}: "
            f"{lo.isoformat()} – {hi.isoformat()})",
        )
        for i in np.flatnonzero(outside)
    ]
    inside = np.flatnonzero(~outside)
    batch = batch.take(inside)
    await ingestor.prepare(conn, batch)
    result = await ingestor.store(conn, batch, protocol=PROTOCOL, errors=errors)
    kept = np.flatnonzero((result.outcome == STORED) | (result.outcome == DUPLICATE))
    if len(kept):
        async with conn.transaction():
            grids = await (
                await conn.execute(
                    TOUCHED, {"lon": batch.lon[kept].tolist(), "lat": batch.lat[kept].tolist()}
                )
            ).fetchone()
            times = batch.time_us[kept]
            await conn.execute(
                RECOUNT,
                {
                    "id": patrol_id,
                    "t0": _at(int(times.min())),
                    "t1": _at(int(times.max())),
                    "grids": list(grids[0]) if grids else [],
                },
            )
    refused: list[tuple[int, str]] = [
        (int(inside[i]), REASONS[int(result.outcome[i])])
        for i in np.flatnonzero(result.outcome > DUPLICATE)
    ] + [(int(i), OUTSIDE_PATROL) for i in np.flatnonzero(outside)]
    rejected = [{"index": i, "reason": reason} for i, reason in sorted(refused)]
    return {"accepted": result.stored, "duplicates": result.duplicate, "rejected": rejected}


def _us(at: datetime) -> int:
    return int(_aware(at).timestamp() * 1e6)


def _at(time_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)


KM = """
SELECT round(coalesce(ST_Length(ST_MakeLine(f.geom ORDER BY f.fix_time)::geography), 0)::numeric
             / 1000, 3)::float8
  FROM position f
 WHERE f.device_id = %(device)s AND f.fix_time BETWEEN %(t0)s AND %(t1)s
   AND f.extras ->> 'patrol' = %(id)s::text
"""


async def _km(conn: AsyncConnection[Any], row: dict[str, Any]) -> float:
    if row["first_fix_at"] is None:
        return 0.0
    km = await (
        await conn.execute(
            KM,
            {
                "device": row["device_id"],
                "t0": row["first_fix_at"],
                "t1": row["last_fix_at"],
                "id": row["id"],
            },
        )
    ).fetchone()
    return float(km[0]) if km and km[0] is not None else 0.0


async def stop(
    conn: AsyncConnection[Any],
    principal: Principal,
    patrol_id: int,
    body: StopIn,
    ingest: IngestSettings,
) -> dict[str, Any]:
    """End the patrol (a patrol already ended keeps its end: a replay changes nothing)."""
    at = _check_time(body.at, ingest, "at")
    async with conn.transaction():
        row = await _mine(conn, principal, patrol_id, lock=True)
        if row["ended_at"] is None:
            if at is not None and at < row["started_at"]:
                raise Unprocessable("at is before the patrol started", field="at")
            ended = await (
                await conn.execute(
                    "UPDATE patrol SET ended_at = coalesce(%s, now()) WHERE id = %s "
                    "RETURNING ended_at",
                    (at, patrol_id),
                )
            ).fetchone()
            assert ended is not None  # noqa: S101 - the row is locked
            row["ended_at"] = ended[0]
    return {**_public(row), "km": await _km(conn, row)}


async def recent(
    conn: AsyncConnection[Any], principal: Principal, *, limit: int
) -> list[dict[str, Any]]:
    """My latest patrols, newest first, with their km."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {PATROL_COLUMNS}, p.device_id FROM patrol p WHERE p.staff_id = %s "  # noqa: S608
            "ORDER BY p.started_at DESC, p.id DESC LIMIT %s",
            (principal.staff_id, limit),
        )
        rows = await cur.fetchall()
    return [{**_public(r), "km": await _km(conn, r)} for r in rows]
