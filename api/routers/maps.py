"""Map pages for people: the dispatcher's live map, track replay and the planner (the colour
grid map, 网格彩图, is ``api.routers.coverage_map``). Each opens with the user's token like
``/map?token=…`` (checked, moved to a cookie, then a redirect; see ``api.routers.pages``), is cut
to the user's scope, and works offline but for the basemap tiles. No page embeds the token;
pages that write send a CSRF token with the cookie.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from psycopg import AsyncConnection, sql

from api.auth import Dispatcher, Planner, Viewer
from api.deps import AppSettings, Conn
from api.figures import Thresholds, device_list
from api.layouts import active_layout, get_layout, list_layouts
from api.positions import device_in_scope
from api.routers.pages import html_page, token_redirect
from api.scope import Scope
from api.settings import Settings
from gis import gpx, maps_dispatch, maps_planner, maps_track
from gis.stops import detect_stops
from gis.units import china_day_bounds, china_today

router = APIRouter(tags=["pages"])

XILINGOL = (111.1, 41.5, 120.0, 46.8)
Basemap = Annotated[
    str | None, Query(pattern="^(osm|tianditu|amap)$", description="default: the setting")
]


def _basemap(requested: str | None, settings: Settings) -> str:
    """The basemap to draw on; 天地图 without a key falls back to OpenStreetMap."""
    choice = requested or settings.map.basemap
    if choice == "tianditu" and not settings.map.tianditu_key:
        return "osm"
    return choice


async def scope_bounds(
    conn: AsyncConnection[Any], scope: Scope
) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the villages in the scope (the league when unknown)."""
    query = sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
        "SELECT ST_Extent(a.geom) AS e FROM admin_area a WHERE a.level = 'village' AND {}) x"
    ).format(scope.where("a.code", with_grid_villages=True))
    row = await (await conn.execute(query, scope.params())).fetchone()
    if row is None or row[0] is None:
        return XILINGOL
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def _page(html: str, request: Request | None = None) -> HTMLResponse:
    """A page with the pages' security headers (CSP with a nonce, no framing, no caching) and
    the navigation bar."""
    return html_page(html, request=request)


@router.get("/maps/dispatch", response_class=HTMLResponse, summary="Dispatcher live map (派警)")
async def dispatch_page(
    request: Request,
    principal: Dispatcher,
    conn: Conn,
    settings: AppSettings,
    basemap: Basemap = None,
    live: Annotated[
        Literal["stream", "poll"],
        Query(
            description="stream: pushed by Server-Sent Events; poll: snapshots every "
            "GRIDPATROL_MAP_VEHICLE_REFRESH_S, for proxies that hold event streams back"
        ),
    ] = "stream",
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    page = maps_dispatch.DispatchPage(
        bounds=await scope_bounds(conn, principal.scope),
        basemap=_basemap(basemap, settings),
        tianditu_key=settings.map.tianditu_key,
        path=request.url.path,
        query=list(request.query_params.multi_items()),
        # the page's script never sees the token (it stays in the HTTP-only cookie); writes
        # (assign) send this CSRF token, without which the cookie does not count for them
        csrf=request.state.csrf,
        layout_id=await active_layout(conn),
        refresh_s=settings.map.vehicle_refresh_s,
        transport=live,
    )
    return _page(maps_dispatch.dispatch_map(page), request)


TRACK_HITS = 20  # vehicles listed by the track page's picker


async def _day_fixes(
    conn: AsyncConnection[Any], device: int, day: date
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A device's fixes on a China-local day: time (UTC µs), lon, lat (WGS-84), speed (m/s)."""
    t0, t1 = china_day_bounds(day)
    rows = await (
        await conn.execute(
            "SELECT (extract(epoch FROM fix_time) * 1e6)::bigint, lon, lat, "
            "coalesce(speed, 'NaN') FROM position "
            "WHERE device_id = %s AND fix_time >= %s AND fix_time < %s ORDER BY fix_time",
            (device, t0, t1),
        )
    ).fetchall()
    columns = np.array(rows, dtype=np.float64).reshape(-1, 4).T
    return columns[0].astype(np.int64), columns[1], columns[2], columns[3]


async def _device_row(conn: AsyncConnection[Any], scope: Scope, device: int) -> dict[str, Any]:
    await device_in_scope(conn, scope, device)  # 404 outside the scope
    info = await (
        await conn.execute(
            "SELECT id, identifier, plate, name FROM device WHERE id = %s", (device,)
        )
    ).fetchone()
    assert info is not None  # noqa: S101 - device_in_scope found it
    return dict(zip(("id", "identifier", "plate", "name"), info, strict=True))


@router.get("/maps/track", response_class=HTMLResponse, summary="Track replay of a vehicle/day")
async def track_page(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    device: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="device id")] = None,
    day: Annotated[date | None, Query(description="China-local day (default today)")] = None,
    q: Annotated[
        str | None,
        Query(max_length=64, description="pick a vehicle: part of its plate, id or village"),
    ] = None,
    basemap: Basemap = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    info = None if device is None else await _device_row(conn, principal.scope, device)
    day = day or china_today()
    time_us, lon, lat, _ = (
        await _day_fixes(conn, device, day)
        if device is not None
        else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    )
    hits: list[dict[str, Any]] = []
    total = 0
    if q is not None or device is None:  # the picker: matches, or the scope's first vehicles
        hits, total = await device_list(
            conn,
            principal.scope,
            thresholds=Thresholds.of(settings.map),
            search=(q or "").strip() or None,
            limit=TRACK_HITS,
        )
    s = settings.map
    stops = detect_stops(
        time_us, lon, lat, min_duration_s=s.stop_minutes * 60, radius_m=s.stop_radius_m
    )
    pad = 0.01
    bounds = (
        (
            float(lon.min()) - pad,
            float(lat.min()) - pad,
            float(lon.max()) + pad,
            float(lat.max()) + pad,
        )
        if len(time_us)
        else await scope_bounds(conn, principal.scope)
    )
    page = maps_track.TrackPage(
        bounds=bounds,
        basemap=_basemap(basemap, settings),
        tianditu_key=s.tianditu_key,
        path=request.url.path,
        query=list(request.query_params.multi_items()),
        device=info,
        day=day,
        time_us=time_us,
        lon=lon,
        lat=lat,
        stops=stops,
        stop_minutes=s.stop_minutes,
        stop_radius_m=s.stop_radius_m,
        layout_id=await active_layout(conn),
        q=q or "",
        hits=tuple(hits),
        more_hits=max(0, total - len(hits)),
    )
    return _page(maps_track.track_map(page), request)


@router.get(
    "/maps/track.gpx",
    summary="The track replay's track as GPX 1.1 (WGS-84, UTC)",
    response_class=Response,
    responses={200: {"content": {"application/gpx+xml": {}}}},
)
async def track_gpx(
    principal: Viewer,
    conn: Conn,
    device: Annotated[int, Query(ge=1, le=2**31 - 1, description="device id")],
    day: Annotated[date | None, Query(description="China-local day (default today)")] = None,
) -> Response:
    info = await _device_row(conn, principal.scope, device)
    day = day or china_today()
    time_us, lon, lat, speed = await _day_fixes(conn, device, day)
    name = str(info["plate"] or info["identifier"])
    body = await asyncio.to_thread(
        gpx.track_gpx, f"{name} {day.isoformat()}", time_us, lon, lat, speed_ms=speed
    )
    filename = f"track-{info['id']}-{day.isoformat()}.gpx"
    return Response(
        body,
        media_type="application/gpx+xml",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def layout_bounds(
    conn: AsyncConnection[Any], scope: Scope, layout_id: int
) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the layout's grids in the scope."""
    query = sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
        "SELECT ST_Extent(g.geom) AS e FROM grid g WHERE g.layout_id = %(layout)s AND {}) x"
    ).format(scope.where("g.code", "g.code"))
    row = await (await conn.execute(query, {**scope.params(), "layout": layout_id})).fetchone()
    if row is None or row[0] is None:
        return await scope_bounds(conn, scope)
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


@router.get("/maps/planner", response_class=HTMLResponse, summary="Planner: redraw a draft layout")
async def planner_page(
    request: Request,
    principal: Planner,
    conn: Conn,
    settings: AppSettings,
    layout: Annotated[int | None, Query(ge=1, description="the draft to edit")] = None,
    basemap: Basemap = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    details = None if layout is None else await get_layout(conn, principal.scope, layout)
    drafts: list[dict[str, Any]] = []
    actives: list[dict[str, Any]] = []
    if details is None:
        drafts = await list_layouts(conn, principal.scope, status="draft")
        actives = await list_layouts(conn, principal.scope, status="active")
    page = maps_planner.PlannerPage(
        bounds=await (
            scope_bounds(conn, principal.scope)
            if layout is None
            else layout_bounds(conn, principal.scope, layout)
        ),
        basemap=_basemap(basemap, settings),
        tianditu_key=settings.map.tianditu_key,
        path=request.url.path,
        query=list(request.query_params.multi_items()),
        csrf=request.state.csrf,  # for edits with the cookie (see dispatch_page)
        layout=details,
        drafts=drafts,
        actives=actives,
    )
    return _page(maps_planner.planner_map(page), request)
