"""Feature collections for OGC API – Features clients (QGIS, GDAL, MapLibre): definitions and
the set-based SQL behind ``/collections/{id}/items``, everything cut to the caller's scope.

One statement per page: the matching rows as a CTE, their count (``numberMatched``) and the
page as GeoJSON features built in PostGIS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection, sql

from tiles.ogc import TimeRange
from tiles.scope import ScopeSql

OPEN_INCIDENT = ("new", "dispatched", "accepted", "arrived")


@dataclass(frozen=True)
class Collection:
    """One collection: its rows (``source`` with alias), item id, properties and filters.

    ``filters`` maps query parameters to columns (``?kind=camera,station`` → ``= ANY``);
    ``temporal`` is the column ``datetime`` filters on (None: the parameter is ignored);
    ``needs`` names a table that must exist for the collection to be offered.
    """

    id: str
    title: str
    description: str
    source: str
    fid: str
    properties: str
    geom: str
    scope: Callable[[ScopeSql], sql.Composable]
    temporal: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    tile_layer: str | None = None
    needs: str | None = None
    uses_layout: bool = False


COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        Collection(
            id="admin_areas",
            title="行政区划 Admin areas",
            description="League, counties, townships and villages with NBS codes "
            "(demo townships and villages are synthetic).",
            source="admin_area a",
            fid="a.code",
            properties="a.code, a.level, a.parent_code, a.name_zh, a.name_en, a.households, "
            "a.synthetic, a.area_km2",
            geom="a.geom",
            scope=lambda s: s.where("a.code", with_grid_villages=True),
            filters={"level": "a.level", "parent_code": "a.parent_code", "code": "a.code"},
            tile_layer="admin_areas",
        ),
        Collection(
            id="grids",
            title="网格 Grids",
            description="Grids of a layout (?layout=, default the active patrol layout).",
            source="grid g LEFT JOIN admin_area v ON v.code = g.village_code "
            "LEFT JOIN staff s ON s.id = g.worker_id",
            fid="g.code",
            properties="g.code, g.layout_id, g.village_code, v.name_zh AS village_name, g.name, "
            "round(g.area_m2::numeric)::float8 AS area_m2, g.households, g.n_cells, "
            "s.name AS worker",
            geom="g.geom",
            scope=lambda s: s.where("g.code", "g.code"),
            filters={"code": "g.code", "village_code": "g.village_code"},
            tile_layer="grids",
            uses_layout=True,
        ),
        Collection(
            id="alert_points",
            title="报警点 Alert points",
            description="Alarm phones, informants, cameras and stations.",
            source="alert_point a",
            fid="a.id",
            properties="a.id, a.kind, a.name, a.phone, a.village_code, a.synthetic, a.created_at",
            geom="a.geom",
            scope=lambda s: s.where(
                sql.SQL("coalesce(a.village_code, '')"), with_grid_villages=True
            ),
            temporal="a.created_at",
            filters={"kind": "a.kind", "village_code": "a.village_code"},
            tile_layer="alert_points",
        ),
        Collection(
            id="vehicles",
            title="车辆 Live vehicles",
            description="Latest position of each enabled device (refresh to follow them).",
            source="device_state st JOIN device d ON d.id = st.device_id",
            fid="st.device_id",
            properties="st.device_id AS id, d.identifier, d.plate, d.name, d.kind, "
            "d.home_village, st.status, st.fix_time, st.speed, st.course, "
            "round(extract(epoch FROM now() - st.fix_time))::int AS age_s, "
            "CASE WHEN st.fix_time > now() - make_interval(secs => %(fresh_s)s::float8) "
            "THEN 'live' WHEN st.fix_time > now() - make_interval(secs => %(offline_s)s::float8) "
            "THEN 'stale' ELSE 'offline' END AS freshness",
            geom="st.geom",
            scope=lambda s: s.where(sql.SQL("coalesce(d.home_village, '')")),
            temporal="st.fix_time",
            filters={
                "plate": "d.plate",
                "identifier": "d.identifier",
                "status": "st.status",
                "home_village": "d.home_village",
            },
            tile_layer="vehicles",
        ),
        Collection(
            id="incidents",
            title="警情 Incidents",
            description="Incidents (?status=open for new, dispatched, accepted and arrived).",
            source="incident i",
            fid="i.id",
            properties="i.id, i.kind, i.priority, i.status, i.grid_code, i.village_code, "
            "i.created_at, i.escalation_level, i.outside_grids, i.device_id, i.staff_id",
            geom="i.geom",
            scope=lambda s: s.where(sql.SQL("coalesce(i.area_code, '')"), "i.grid_code"),
            temporal="i.created_at",
            filters={"status": "i.status", "kind": "i.kind", "grid_code": "i.grid_code"},
            needs="incident",
        ),
    )
}


async def available(conn: AsyncConnection[Any]) -> list[Collection]:
    """The collections whose tables exist (incidents arrive with the dispatch schema)."""
    needed = [c.needs for c in COLLECTIONS.values() if c.needs]
    rows = await (
        await conn.execute(
            "SELECT n FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL", (needed,)
        )
    ).fetchall()
    present = {r[0] for r in rows}
    return [c for c in COLLECTIONS.values() if c.needs is None or c.needs in present]


@dataclass(frozen=True)
class ItemQuery:
    """What to select: bbox (CRS84), time range, property filters, layout, one page."""

    bbox: tuple[float, float, float, float] | None = None
    time: TimeRange | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    layout: int | None = None
    fid: str | None = None
    limit: int = 100
    offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _where(c: Collection, scope: ScopeSql, q: ItemQuery) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = [c.scope(scope)]
    params: dict[str, Any] = {**scope.params(), **q.extra}
    if c.uses_layout:
        parts.append(sql.SQL("g.layout_id = %(layout)s"))
        params["layout"] = q.layout
    if q.bbox is not None:
        parts.append(
            sql.SQL(
                "ST_Intersects({g}, ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))"
            ).format(g=sql.SQL(c.geom))
        )
        params.update(zip(("x0", "y0", "x1", "y1"), q.bbox, strict=True))
    if q.time is not None and c.temporal is not None:
        if q.time.start is not None:
            parts.append(sql.SQL("{} >= %(t_start)s").format(sql.SQL(c.temporal)))
            params["t_start"] = q.time.start
        if q.time.end is not None:
            parts.append(sql.SQL("{} < %(t_end)s").format(sql.SQL(c.temporal)))
            params["t_end"] = q.time.end
    for name, values in sorted(q.filters.items()):
        parts.append(
            sql.SQL("{}::text = ANY({})").format(
                sql.SQL(c.filters[name]), sql.Placeholder(f"f_{name}")
            )
        )
        params[f"f_{name}"] = values
    if q.fid is not None:
        parts.append(sql.SQL("{}::text = %(fid)s").format(sql.SQL(c.fid)))
        params["fid"] = q.fid
    return sql.SQL(" AND ").join(parts), params


def _matching(c: Collection, where: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {fid} AS fid, {props}, {geom} AS geom FROM {src} WHERE {where}").format(
        fid=sql.SQL(c.fid),
        props=sql.SQL(c.properties),
        geom=sql.SQL(c.geom),
        src=sql.SQL(c.source),
        where=where,
    )


_FEATURE = (
    "json_build_object('type', 'Feature', 'id', p.fid, "
    "'geometry', ST_AsGeoJSON(p.geom, 6)::json, 'properties', to_jsonb(p) - 'geom' - 'fid')"
)


async def items(
    conn: AsyncConnection[Any], c: Collection, scope: ScopeSql, q: ItemQuery
) -> tuple[int, list[dict[str, Any]]]:
    """(numberMatched, the page's features) of a collection."""
    where, params = _where(c, scope, q)
    query = sql.SQL(
        "WITH f AS ({matching}) "
        "SELECT (SELECT count(*) FROM f), "
        "(SELECT coalesce(json_agg({feature} ORDER BY p.fid), '[]'::json)::text "
        "   FROM (SELECT * FROM f ORDER BY f.fid LIMIT %(limit)s OFFSET %(offset)s) p)"
    ).format(matching=_matching(c, where), feature=sql.SQL(_FEATURE))
    row = await (
        await conn.execute(query, {**params, "limit": q.limit, "offset": q.offset})
    ).fetchone()
    assert row is not None  # noqa: S101 - scalar subqueries return a row
    return int(row[0]), orjson.loads(row[1])


async def extent(
    conn: AsyncConnection[Any], c: Collection, scope: ScopeSql, q: ItemQuery
) -> tuple[list[float] | None, list[str | None] | None]:
    """Spatial (CRS84 bbox) and temporal extent of the collection in the scope."""
    where, params = _where(c, scope, q)
    temporal = sql.SQL(c.temporal) if c.temporal else sql.SQL("NULL::timestamptz")
    query = sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), t0, t1 FROM ("
        "SELECT ST_Extent({geom}) AS e, min({t}) AS t0, max({t}) AS t1 FROM {src} WHERE {where}"
        ") x"
    ).format(geom=sql.SQL(c.geom), t=temporal, src=sql.SQL(c.source), where=where)
    row = await (await conn.execute(query, params)).fetchone()
    if row is None or row[0] is None:
        return None, None
    times = [row[4].isoformat(), row[5].isoformat()] if row[4] is not None else None
    return [round(float(v), 6) for v in row[:4]], times
