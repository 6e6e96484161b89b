"""The tile layers: what each one shows, who may see it without a token, and its SQL.

Every layer is one SELECT producing the rows of one MVT layer; ``tiles.sql.tile_query`` wraps
it in the single statement of a tile (envelope CTE → layer rows → ``ST_AsMVT``). A layer's SELECT
must filter with ``<geom> && b.e4326`` (the envelope, transformed once, so the GiST index is
used), apply the caller's scope predicate, cap rows with ``%(limit)s`` and name its MVT geometry
``geom``, built with ``mvt_geom(...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from tiles import metrics as cover
from tiles.scope import ScopeSql

GeomFn = Callable[[str], sql.Composable]


def mvt_geom(display: sql.Composable) -> sql.Composed:
    """``ST_AsMVTGeom`` of a WGS-84 expression into the tile (4096 units, 256 buffer, clipped)."""
    return sql.SQL("ST_AsMVTGeom(ST_Transform({}, 3857), b.e3857, 4096, 256, true) AS geom").format(
        display
    )


@dataclass(frozen=True)
class Layer:
    """One vector-tile layer.

    ``fields`` maps attribute names to their TileJSON description; ``public`` layers are served
    without a token when ``GRIDPATROL_API_PUBLIC_TILES`` is on (never live vehicles, tracks or
    alert points: positions of patrols and of informants are not for the public).
    ``max_age_s`` is the HTTP cache lifetime. Below ``minzoom`` a tile is empty (too many
    features to be useful); ``limit`` caps the features of one tile.
    """

    name: str
    title: str
    description: str
    geometry: str
    fields: dict[str, str]
    select: Callable[[ScopeSql, GeomFn], sql.Composed]
    minzoom: int = 0
    maxzoom: int = 22
    limit: int = 10_000
    public: bool = False
    max_age_s: int = 60
    params: tuple[str, ...] = field(default=())


def _admin_areas(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        SELECT a.code, a.level, a.name_zh, a.name_en, a.households, a.synthetic, {geom}
          FROM admin_area a, b
         WHERE a.geom && b.e4326 AND {scope}
           AND (%(level)s::text IS NULL OR a.level = %(level)s::text)
         ORDER BY a.code LIMIT %(limit)s
        """
    ).format(geom=mvt_geom(disp("a.geom")), scope=scope.where("a.code", with_grid_villages=True))


# Coverage attributes per grid over the window's days: the metrics of tiles.metrics, the ones
# api.coverage.metrics sums per unit. LATERAL subqueries keyed by the grid hit the grid_visit
# primary key (layout, day, grid) once per day and grid, so the plan is the same index plan
# whatever the parameters (this statement is prepared: a generic plan must stay fast).
def _grids(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        WITH g AS (
            SELECT g.id, g.code, g.village_code, g.n_cells, g.geom
              FROM grid g, b
             WHERE g.layout_id = %(layout)s::int AND g.geom && b.e4326 AND {scope}
             ORDER BY g.code LIMIT %(limit)s
        )
        SELECT g.code, g.village_code, v.name_zh AS village_name, g.n_cells AS cells,
               coalesce(c.seen_cells, 0)::int AS seen_cells, {coverage_pct} AS coverage_pct,
               (g.n_cells - coalesce(c.recent_seen, 0))::int AS blind_cells,
               vs.visits::int AS visits, {patrol_km} AS patrol_km, {dwell_h} AS dwell_h,
               to_char(c.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                   AS last_patrol,
               {geom}
          FROM g CROSS JOIN b
          LEFT JOIN admin_area v ON v.code = g.village_code
          LEFT JOIN LATERAL (
              SELECT {grid_aggregates}
                FROM grid_visit gv
               WHERE gv.layout_id = %(layout)s::int AND gv.grid_id = g.id
                 AND gv.day = ANY(%(days)s::date[])
          ) c ON true
          CROSS JOIN LATERAL (
              SELECT count(*) FILTER (WHERE {new_visit}) AS visits
                FROM (SELECT u.s, {reach}
                        FROM grid_visit gv, {intervals}
                       WHERE gv.layout_id = %(layout)s::int AND gv.grid_id = g.id
                         AND gv.day = ANY(%(days)s::date[])) m
          ) vs
        """
    ).format(
        geom=mvt_geom(disp("g.geom")),
        scope=scope.where("g.code", "g.code"),
        coverage_pct=cover.percent(sql.SQL("coalesce(c.seen_cells, 0)"), sql.SQL("g.n_cells")),
        patrol_km=cover.km(sql.SQL("coalesce(c.metres, 0)")),
        dwell_h=cover.hours(sql.SQL("coalesce(c.dwell_s, 0)")),
        grid_aggregates=cover.GRID_AGGREGATES,
        new_visit=cover.NEW_VISIT,
        reach=cover.reach(),
        intervals=cover.INTERVALS,
    )


# A layout's grids as a planner edits them (drafts included): code, village and worker only —
# no coverage to aggregate, so a league draft's tiles are cheap and always current.
def _layout_grids(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        SELECT g.code, g.village_code, s.name AS worker, s.phone AS worker_phone, {geom}
          FROM grid g CROSS JOIN b
          LEFT JOIN staff s ON s.id = g.worker_id
         WHERE g.layout_id = %(layout)s::int AND g.geom && b.e4326 AND {scope}
         ORDER BY g.code LIMIT %(limit)s
        """
    ).format(geom=mvt_geom(disp("g.geom")), scope=scope.where("g.code", "g.code"))


def _alert_points(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        SELECT a.id, a.kind, a.name, a.phone, a.village_code, a.synthetic, {geom}
          FROM alert_point a, b
         WHERE a.geom && b.e4326 AND {scope}
           AND (%(kind)s::text IS NULL OR a.kind = %(kind)s::text)
         ORDER BY a.id LIMIT %(limit)s
        """
    ).format(
        geom=mvt_geom(disp("a.geom")),
        scope=scope.where(sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True),
    )


def _vehicles(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        SELECT s.device_id AS id, d.identifier, d.plate, d.name, d.kind, d.home_village,
               s.status, round(extract(epoch FROM now() - s.fix_time))::int AS age_s,
               CASE WHEN s.fix_time > now() - make_interval(secs => %(fresh_s)s::float8)
                    THEN 'live'
                    WHEN s.fix_time > now() - make_interval(secs => %(offline_s)s::float8)
                    THEN 'stale' ELSE 'offline' END AS freshness,
               to_char(s.fix_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS fix_time,
               s.speed, s.course, {geom}
          FROM device_state s JOIN device d ON d.id = s.device_id, b
         WHERE s.geom && b.e4326 AND d.enabled AND {scope}
         ORDER BY s.device_id LIMIT %(limit)s
        """
    ).format(
        geom=mvt_geom(disp("s.geom")),
        scope=scope.where(sql.SQL("coalesce(d.home_village, '')")),
    )


# One feature per stretch of the track without a gap longer than %(gap_s)s, so a vehicle whose
# terminal was off does not get a straight line across the steppe.
def _tracks(scope: ScopeSql, disp: GeomFn) -> sql.Composed:
    return sql.SQL(
        """
        WITH p AS (
            SELECT p.fix_time, p.geom,
                   CASE WHEN p.fix_time - lag(p.fix_time) OVER (ORDER BY p.fix_time)
                             > make_interval(secs => %(gap_s)s::float8) THEN 1 ELSE 0 END AS brk
              FROM position p
             WHERE p.device_id = %(device)s::int
               AND p.fix_time >= %(t0)s::timestamptz AND p.fix_time < %(t1)s::timestamptz
               AND EXISTS (SELECT 1 FROM device d WHERE d.id = %(device)s::int AND {scope})
        ),
        s AS (SELECT fix_time, geom, sum(brk) OVER (ORDER BY fix_time) AS seg FROM p),
        segs AS (
            SELECT seg, min(fix_time) AS t0, max(fix_time) AS t1, count(*) AS fixes,
                   ST_MakeLine(geom ORDER BY fix_time) AS geom
              FROM s GROUP BY seg HAVING count(*) > 1
        )
        SELECT %(device)s::int AS device_id, seg::int AS segment, fixes::int AS fixes,
               to_char(t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "from",
               to_char(t1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "to",
               {geom}
          FROM segs, b
         WHERE segs.geom && b.e4326
         ORDER BY seg LIMIT %(limit)s
        """
    ).format(
        geom=mvt_geom(disp("segs.geom")),
        scope=scope.where(sql.SQL("coalesce(d.home_village, '')")),
    )


LAYERS: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        Layer(
            name="admin_areas",
            title="行政区划 Admin areas",
            description="League, counties, townships and villages (NBS codes); "
            "townships and villages of the demo are synthetic.",
            geometry="polygon",
            fields={
                "code": "NBS code (12 digits)",
                "level": "league, county, township or village",
                "name_zh": "Chinese name",
                "name_en": "English name",
                "households": "households (when known)",
                "synthetic": "true for synthesised demo boundaries",
            },
            select=_admin_areas,
            limit=5000,
            public=True,
            max_age_s=3600,
            params=("level",),
        ),
        Layer(
            name="grids",
            title="网格 Grids with coverage",
            description="Grids of a layout (default: the active patrol layout) with their "
            "coverage over a window of days (default: the last 7).",
            geometry="polygon",
            fields={
                "code": "grid code (15 digits)",
                "village_code": "village NBS code",
                "village_name": "village name",
                "cells": "fine cells in the grid",
                "seen_cells": "fine cells patrolled in the window",
                "coverage_pct": "seen / cells, percent",
                "blind_cells": "fine cells unseen in the last blind-spot days of the window",
                "visits": "patrol visits (intervals closer than the visit gap merged)",
                "patrol_km": "km driven in the grid",
                "dwell_h": "hours spent in the grid",
                "last_patrol": "last fix in the grid (UTC, ISO 8601)",
            },
            select=_grids,
            minzoom=7,
            public=True,
            max_age_s=60,
            params=("layout", "from", "to"),
        ),
        Layer(
            name="layout_grids",
            title="网格规划 Grids of a layout (drafts too)",
            description="The grids of a named layout, draft, active or retired, with their "
            "worker: what the planner page draws and selects from.",
            geometry="polygon",
            fields={
                "code": "grid code (15 digits)",
                "village_code": "village NBS code",
                "worker": "grid worker's name (网格员)",
                "worker_phone": "grid worker's phone",
            },
            select=_layout_grids,
            minzoom=7,
            max_age_s=0,  # a draft changes with every edit: revalidated by ETag each time
            params=("layout",),
        ),
        Layer(
            name="alert_points",
            title="报警点 Alert points",
            description="Alarm phones, informants, cameras and stations.",
            geometry="point",
            fields={
                "id": "alert point id",
                "kind": "alarm_phone, informant, camera or station",
                "name": "name",
                "phone": "phone",
                "village_code": "village NBS code",
                "synthetic": "true for demo points",
            },
            select=_alert_points,
            max_age_s=300,
            params=("kind",),
        ),
        Layer(
            name="vehicles",
            title="车辆 Live vehicles",
            description="Latest position of each enabled device, with status and freshness.",
            geometry="point",
            fields={
                "id": "device id",
                "identifier": "terminal identifier",
                "plate": "plate",
                "name": "name",
                "kind": "vehicle, handheld or phone",
                "home_village": "village NBS code",
                "status": "available, busy or off_duty",
                "age_s": "seconds since the last fix",
                "freshness": "live, stale or offline",
                "fix_time": "last fix (UTC, ISO 8601)",
                "speed": "m/s",
                "course": "degrees",
            },
            select=_vehicles,
            max_age_s=5,
        ),
        Layer(
            name="tracks",
            title="轨迹 Track of a device and day",
            description="One line per gap-free stretch of a device's fixes on a China-local day.",
            geometry="line",
            fields={
                "device_id": "device id",
                "segment": "stretch number (gaps split the track)",
                "fixes": "fixes in the stretch",
                "from": "first fix (UTC, ISO 8601)",
                "to": "last fix (UTC, ISO 8601)",
            },
            select=_tracks,
            limit=1000,
            max_age_s=30,
            params=("device", "day"),
        ),
    )
}
