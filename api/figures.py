"""The live figures of a scope for the home page, and the device list of the devices page.

Each figure is one set-based statement with the scope's predicate (``api.scope``), so a
township user counts only their township's vehicles, incidents, grids and refusals. "Today" is
the China-local day (UTC+8), like the coverage and report pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.coverage import materialize
from api.coverage.update import CoverageUpdater
from api.db import like_escape
from api.dispatch import OPEN
from api.dispatch.incidents import incident_scope
from api.layouts import active_layout
from api.scope import Scope
from api.settings import MapSettings
from gis.units import CHINA_TZ, china_day_bounds, china_today

FRESHNESS = sql.SQL(
    "CASE WHEN s.fix_time > now() - make_interval(secs => %(fresh_s)s::float8) THEN 'live' "
    "WHEN s.fix_time > now() - make_interval(secs => %(offline_s)s::float8) THEN 'stale' "
    "ELSE 'offline' END"
)

VEHICLES = sql.SQL(
    """
    SELECT count(*) FILTER (WHERE f.freshness = 'live')::int AS online,
           count(*) FILTER (WHERE f.freshness = 'stale')::int AS stale,
           count(*) FILTER (WHERE f.freshness = 'offline')::int AS offline,
           count(*) FILTER (WHERE f.fix_time IS NULL)::int AS never,
           count(*)::int AS total
      FROM (SELECT s.fix_time, {freshness} AS freshness
              FROM device d LEFT JOIN device_state s ON s.device_id = d.id
             WHERE d.enabled AND d.kind = 'vehicle' AND {scope}) f
    """
)

INCIDENTS = sql.SQL(
    """
    SELECT i.status, count(*)::int AS n,
           count(*) FILTER (WHERE i.created_at >= %(t0)s)::int AS created_today,
           count(*) FILTER (WHERE i.cleared_at >= %(t0)s)::int AS cleared_today
      FROM incident i
     WHERE {scope} AND (i.status = ANY(%(open)s) OR i.created_at >= %(t0)s
                        OR i.cleared_at >= %(t0)s)
     GROUP BY i.status
    """
)

COVERAGE = sql.SQL(
    """
    WITH g AS (
        SELECT g.id, g.n_cells FROM grid g WHERE g.layout_id = %(layout)s AND {scope}
    ),
    v AS (
        SELECT gv.grid_id, bit_or(gv.seen) AS seen
          FROM grid_visit gv JOIN g ON g.id = gv.grid_id
         WHERE gv.layout_id = %(layout)s AND gv.day = %(day)s
         GROUP BY gv.grid_id
    )
    SELECT count(*)::int AS grids, coalesce(sum(g.n_cells), 0)::bigint AS cells,
           coalesce(sum(bit_count(v.seen)), 0)::bigint AS seen_cells,
           count(*) FILTER (WHERE bit_count(v.seen) > 0)::int AS grids_patrolled
      FROM g LEFT JOIN v ON v.grid_id = g.id
    """
)

REFUSED = sql.SQL(
    """
    SELECT count(DISTINCT coalesce(r.device_id::text, 'id:' || coalesce(r.identifier, '')))::int
               AS devices,
           count(*)::int AS fixes
      FROM position_rejected r LEFT JOIN device d ON d.id = r.device_id
     WHERE r.received_at >= %(t0)s AND {scope}
    """
)


@dataclass(frozen=True)
class Thresholds:
    """A vehicle is live while its last fix is newer than ``fresh_s``, offline past
    ``offline_s`` (the map settings, as on the dispatch map), stale between."""

    fresh_s: float
    offline_s: float

    @classmethod
    def of(cls, settings: MapSettings) -> Thresholds:
        """The thresholds the map settings give (``VEHICLE_FRESH_S``, ``VEHICLE_OFFLINE_S``)."""
        return cls(settings.vehicle_fresh_s, settings.vehicle_offline_s)


def _devices(scope: Scope) -> sql.Composable:
    return scope.where(sql.SQL("coalesce(d.home_village, '')"))


async def scope_figures(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    thresholds: Thresholds,
    updater: CoverageUpdater,
    today: date | None = None,
) -> dict[str, Any]:
    """Vehicles by freshness, open incidents by status (and today's), today's coverage of the
    active patrol layout, and fixes/devices refused today — all inside ``scope``."""
    today = today or china_today()
    t0, _ = china_day_bounds(today)
    params: dict[str, Any] = {
        **scope.params(),
        "fresh_s": thresholds.fresh_s,
        "offline_s": thresholds.offline_s,
        "t0": t0,
        "open": list(OPEN),
        "day": today,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(VEHICLES.format(freshness=FRESHNESS, scope=_devices(scope)), params)
        vehicles = await cur.fetchone()
        await cur.execute(INCIDENTS.format(scope=incident_scope(scope)), params)
        incident_rows = await cur.fetchall()
        await cur.execute(REFUSED.format(scope=_devices(scope)), params)
        refused = await cur.fetchone()
    by_status = dict.fromkeys(OPEN, 0)
    created_today = cleared_today = 0
    for row in incident_rows:
        if row["status"] in by_status:
            by_status[row["status"]] = row["n"]
        created_today += row["created_today"]
        cleared_today += row["cleared_today"]
    return {
        "day": today.isoformat(),
        "vehicles": vehicles,
        "incidents": {
            "open": by_status,
            "open_total": sum(by_status.values()),
            "created_today": created_today,
            "cleared_today": cleared_today,
        },
        "coverage": await today_coverage(conn, scope, updater=updater, today=today),
        "refused": refused,
    }


async def today_coverage(
    conn: AsyncConnection[Any], scope: Scope, *, updater: CoverageUpdater, today: date
) -> dict[str, Any]:
    """Cells of the active patrol layout's grids in the scope seen today, over all their cells
    (the day is built first if it is missing, as the coverage map does)."""
    layout = await active_layout(conn)
    if layout is None:
        return {"layout": None, "grids": 0, "cells": 0, "seen_cells": 0, "pct": None}
    await materialize.ensure(conn, updater, layout, today, today)
    query = COVERAGE.format(scope=scope.where("g.code", "g.code"))
    params = {**scope.params(), "layout": layout, "day": today}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    assert row is not None  # noqa: S101 - an aggregate returns a row
    cells, seen = int(row["cells"]), int(row["seen_cells"])
    return {
        "layout": layout,
        **row,
        "pct": round(100.0 * seen / cells, 2) if cells else None,
    }


DEVICE_LIST = sql.SQL(
    """
    SELECT * FROM (
        SELECT d.id, d.identifier, d.plate, d.name, d.kind, d.home_village,
               v.name_zh AS village, s.fix_time, s.speed, s.status,
               {freshness} AS freshness
          FROM device d
          LEFT JOIN device_state s ON s.device_id = d.id
          LEFT JOIN admin_area v ON v.code = d.home_village
         WHERE d.enabled AND {scope}
           AND (%(like)s::text IS NULL OR d.plate ILIKE %(like)s OR d.identifier ILIKE %(like)s
                OR d.name ILIKE %(like)s OR v.name_zh LIKE %(like)s)
    ) x
     WHERE %(freshness)s::text IS NULL OR x.freshness = %(freshness)s::text
     ORDER BY array_position(ARRAY['live', 'stale', 'offline'], x.freshness),
              x.plate NULLS LAST, x.id
     LIMIT %(limit)s
    """
)
DEVICE_COUNT = sql.SQL(
    """
    SELECT count(*)::int FROM (
        SELECT {freshness} AS freshness
          FROM device d
          LEFT JOIN device_state s ON s.device_id = d.id
          LEFT JOIN admin_area v ON v.code = d.home_village
         WHERE d.enabled AND {scope}
           AND (%(like)s::text IS NULL OR d.plate ILIKE %(like)s OR d.identifier ILIKE %(like)s
                OR d.name ILIKE %(like)s OR v.name_zh LIKE %(like)s)
    ) x WHERE %(freshness)s::text IS NULL OR x.freshness = %(freshness)s::text
    """
)


def _like(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    return f"%{like_escape(text.strip())}%"


async def device_list(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    thresholds: Thresholds,
    search: str | None = None,
    freshness: str | None = None,
    limit: int = 500,
) -> tuple[list[dict[str, Any]], int]:
    """Enabled devices in the scope (live first), matching a partial plate, identifier, name or
    village name; and how many match in all."""
    params = {
        **scope.params(),
        "fresh_s": thresholds.fresh_s,
        "offline_s": thresholds.offline_s,
        "like": _like(search),
        "freshness": freshness,
        "limit": limit,
    }
    where = _devices(scope)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(DEVICE_LIST.format(freshness=FRESHNESS, scope=where), params)
        rows = await cur.fetchall()
        await cur.execute(DEVICE_COUNT.format(freshness=FRESHNESS, scope=where), params)
        count = await cur.fetchone()
    return rows, int(count["count"]) if count else 0


async def scope_names(conn: AsyncConnection[Any], scope: Scope) -> list[str]:
    """The scope as people say it: area names (with codes), grid codes, or the whole league."""
    if scope.unrestricted:
        return ["全部 everything (*)"]
    rows = await (
        await conn.execute(
            "SELECT c, a.name_zh FROM unnest(%s::text[]) c "
            "LEFT JOIN admin_area a ON a.code = rpad(c, 12, '0') ORDER BY c",
            (list(scope.areas),),
        )
    ).fetchall()
    names = [f"{name} {code}" if name else code for code, name in rows]
    return names + [f"网格 grid {g}" for g in scope.grids]


def as_local(moment: datetime | None) -> str:
    """A time as China-local ``YYYY-MM-DD HH:MM:SS`` (empty when unknown)."""
    return "" if moment is None else moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")
