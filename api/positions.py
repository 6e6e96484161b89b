"""Reading positions: a device's track, the live state of all devices, ingest statistics."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api import geo
from api.errors import NotFound, Unprocessable
from api.scope import Scope
from gis.units import METRES_PER_DEGREE

MAX_TRACK_DAYS = 31


def check_window(start: datetime, end: datetime, *, max_days: float) -> None:
    """Refuse inverted or over-long windows with the limit named."""
    if start.tzinfo is None or end.tzinfo is None:
        raise Unprocessable(
            "from and to need a time zone (e.g. 2026-11-24T08:00:00+08:00)", field="from"
        )
    if end <= start:
        raise Unprocessable("'to' must be after 'from'", field="to")
    if end - start > timedelta(days=max_days):
        raise Unprocessable(f"the window may span at most {max_days:g} days", field="to")


async def device_in_scope(conn: AsyncConnection[Any], scope: Scope, device_id: int) -> None:
    row = await (
        await conn.execute(
            sql.SQL("SELECT 1 FROM device d WHERE d.id = %(id)s AND {}").format(
                scope.where(sql.SQL("coalesce(d.home_village, '')"))
            ),
            {**scope.params(), "id": device_id},
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"no device {device_id}")


async def track(
    conn: AsyncConnection[Any],
    scope: Scope,
    device_id: int,
    start: datetime,
    end: datetime,
    *,
    as_line: bool,
    simplify_m: float,
    archive_dir: Path | None = None,
) -> str:
    """The fixes of one device in [start, end) as GeoJSON: points, or one LineString.

    Days whose partition was archived are read from the GeoParquet under ``archive_dir``.
    """
    check_window(start, end, max_days=MAX_TRACK_DAYS)
    await device_in_scope(conn, scope, device_id)
    params: dict[str, Any] = {
        "id": device_id, "start": start, "end": end, "tol": simplify_m / METRES_PER_DEGREE
    }  # fmt: skip
    archived = None
    if archive_dir is not None:
        from api.archive import read_archived  # noqa: PLC0415 - pyarrow only when archiving

        archived = await asyncio.to_thread(read_archived, archive_dir, device_id, start, end)
    if archived is None:
        return await geo.fetch_text(conn, TRACK_LINE if as_line else TRACK_POINTS, params)
    for name in ARCHIVED_COLUMNS:
        params[f"a_{name}"] = archived.column(name).to_pylist()
    source = sql.SQL(WITH_ARCHIVE)
    return await geo.fetch_text(conn, _track_sql(as_line, source), params)


TRACK_WHERE = "device_id = %(id)s AND fix_time >= %(start)s AND fix_time < %(end)s"
# archived fixes (passed as arrays) beside the live ones; a fix in both counts once
ARCHIVED_COLUMNS = ("fix_time", "speed", "course", "altitude", "accuracy", "battery", "protocol",
                    "geometry")  # fmt: skip
WITH_ARCHIVE = """(
    SELECT device_id, fix_time, speed, course, altitude, accuracy, battery, protocol, geom
      FROM position
    UNION ALL
    SELECT %(id)s, a.fix_time, a.speed, a.course, a.altitude, a.accuracy, a.battery, a.protocol,
           ST_GeomFromWKB(a.wkb, 4326)
      FROM unnest(%(a_fix_time)s::timestamptz[], %(a_speed)s::real[], %(a_course)s::real[],
                  %(a_altitude)s::real[], %(a_accuracy)s::real[], %(a_battery)s::real[],
                  %(a_protocol)s::text[], %(a_geometry)s::bytea[])
           AS a(fix_time, speed, course, altitude, accuracy, battery, protocol, wkb)
     WHERE NOT EXISTS (SELECT 1 FROM position p
                        WHERE p.device_id = %(id)s AND p.fix_time = a.fix_time)
) AS position"""


def _track_sql(as_line: bool, source: sql.Composable) -> sql.Composed:
    if as_line:
        return sql.SQL(
            """
            SELECT json_build_object(
                'type', 'Feature',
                'properties', json_build_object('device_id', %(id)s, 'fixes', count(*),
                    'from', min(fix_time), 'to', max(fix_time)),
                'geometry', ST_AsGeoJSON(ST_SimplifyPreserveTopology(
                    ST_MakeLine(geom ORDER BY fix_time), %(tol)s), 6)::json)::text
              FROM {source} WHERE {where}
            """
        ).format(source=source, where=sql.SQL(TRACK_WHERE))
    return geo.feature_collection(
        sql.SQL(
            "SELECT fix_time, speed, course, altitude, accuracy, battery, protocol, geom "
            "FROM {source} WHERE {where} ORDER BY fix_time LIMIT 200000"
        ).format(source=source, where=sql.SQL(TRACK_WHERE)),
        order_by="fix_time",
    )


TRACK_LINE = _track_sql(True, sql.SQL("position"))  # noqa: FBT003
TRACK_POINTS = _track_sql(False, sql.SQL("position"))  # noqa: FBT003


async def live_state(conn: AsyncConnection[Any], scope: Scope, *, online_s: float) -> str:
    """Latest position of every device in the scope, with online flag, as GeoJSON."""
    inner = sql.SQL(
        """
        SELECT s.device_id, d.identifier, d.plate, d.name, d.kind, d.home_village,
               s.fix_time, s.speed, s.course, s.status, s.protocol,
               s.fix_time > now() - make_interval(secs => %(online_s)s) AS online,
               round(extract(epoch FROM now() - s.fix_time))::int AS age_s, s.geom
          FROM device_state s JOIN device d ON d.id = s.device_id
         WHERE {scope}
        """
    ).format(scope=scope.where(sql.SQL("coalesce(d.home_village, '')")))
    query = geo.feature_collection(inner, order_by="device_id")
    return await geo.fetch_text(conn, query, {**scope.params(), "online_s": online_s})


async def ingest_stats(
    conn: AsyncConnection[Any], *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """Outcome counts (stored, duplicate, each rejection reason) per protocol over days."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT protocol, outcome, sum(n)::bigint AS n FROM ingest_counter
             WHERE (%(since)s::timestamptz IS NULL OR day >= (%(since)s AT TIME ZONE 'UTC')::date)
               AND (%(until)s::timestamptz IS NULL OR day <= (%(until)s AT TIME ZONE 'UTC')::date)
             GROUP BY protocol, outcome ORDER BY protocol, outcome
            """,
            {"since": since, "until": until},
        )
        rows = await cur.fetchall()
    by_protocol: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for r in rows:
        by_protocol.setdefault(r["protocol"], {})[r["outcome"]] = int(r["n"])
        totals[r["outcome"]] = totals.get(r["outcome"], 0) + int(r["n"])
    return {
        "totals": totals,
        "by_protocol": by_protocol,
        "refused": await refused_sources(conn, since=since, until=until),
    }


async def refused_sources(
    conn: AsyncConnection[Any], *, since: datetime | None, until: datetime | None, limit: int = 100
) -> list[dict[str, Any]]:
    """Requests refused before they named a known device (unknown ids, per-address rate
    limits), counted per protocol, source address and reason (``ingest_refusal``), most first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT protocol, source, reason, sum(n)::bigint AS n, min(bucket) AS first,
                   max(bucket) + interval '10 minutes' AS last
              FROM ingest_refusal
             WHERE (%(since)s::timestamptz IS NULL OR bucket >= %(since)s - interval '10 minutes')
               AND (%(until)s::timestamptz IS NULL OR bucket <= %(until)s)
             GROUP BY protocol, source, reason ORDER BY n DESC, source LIMIT %(limit)s
            """,
            {"since": since, "until": until, "limit": limit},
        )
        return await cur.fetchall()


async def rejected(
    conn: AsyncConnection[Any], scope: Scope, *, reason: str | None, limit: int
) -> list[dict[str, Any]]:
    """Recent quarantined fixes (admins see unknown-device rows only with the whole scope)."""
    query = sql.SQL(
        """
        SELECT r.id, r.received_at, r.protocol, r.reason, r.field, r.row_no, r.identifier,
               r.device_id, r.fix_time, r.lat, r.lon, left(r.raw, 2000) AS raw
          FROM position_rejected r LEFT JOIN device d ON d.id = r.device_id
         WHERE (%(reason)s::text IS NULL OR r.reason = %(reason)s)
           AND {scope}
         ORDER BY r.id DESC LIMIT %(limit)s
        """
    ).format(scope=scope.where(sql.SQL("coalesce(d.home_village, '')")))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**scope.params(), "reason": reason, "limit": limit})
        return await cur.fetchall()
