"""The colour grid map (网格彩图) ``/maps/coverage``: a layout's coverage at a level (county,
township, village, grid) over a window, cut to the reader's scope and optionally one area in
it; its search (``/maps/coverage/search``) and its export (``/maps/coverage/export``: CSV,
XLSX, GeoJSON) read the same view, so they hold exactly what the page shows."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from psycopg import AsyncConnection

from api.auth import Viewer
from api.coverage import metrics, view
from api.deps import AppSettings, Conn, get_reads
from api.errors import NotFound
from api.layouts import active_layout, get_layout, list_layouts
from api.routers.coverage import updater
from api.routers.maps import Basemap, _basemap, _page, scope_bounds
from api.routers.pages import token_redirect
from api.scope import Scope
from api.settings import Settings
from gis import maps_coverage
from gis.codes import scope_prefix
from gis.units import china_today

router = APIRouter(tags=["pages"])
Level = Annotated[
    Literal["county", "township", "village", "grid"],
    Query(description="the level the map, its table and the export show"),
]
LayoutId = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="default: the active patrol layout")
]
First = Annotated[date | None, Query(alias="from", description="first day (default: to − 6)")]
Last = Annotated[date | None, Query(alias="to", description="last day (default today)")]
Area = Annotated[
    str | None,
    Query(pattern="^([0-9]{2,12})?$", description="only this admin area (within your scope)"),
]
MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "geojson": "application/geo+json",
}


async def _frame(
    conn: AsyncConnection[Any],
    scope: Scope,
    settings: Settings,
    *,
    layout: int | None,
    first: date | None,
    last: date | None,
    area: str | None,
) -> tuple[dict[str, Any], Scope, metrics.Window]:
    """The view's layout, the scope cut to its area, and its window (404: unknown layout, area
    outside the scope; 422: a bad window)."""
    layout_id = layout or await active_layout(conn)
    if layout_id is None:
        raise NotFound("no active layout; name one with ?layout=")
    details = await get_layout(conn, scope, layout_id)  # 404 when unknown or unreadable
    cut = await view.view_scope(conn, scope, area)
    last = last or china_today()
    window = metrics.Window.check(
        first or last - timedelta(days=6), last, max_days=settings.coverage.max_window_days
    )
    return details, cut, window


async def _view(
    request: Request,
    conn: AsyncConnection[Any],
    scope: Scope,
    settings: Settings,
    *,
    layout: int | None,
    first: date | None,
    last: date | None,
    level: str,
    area: str | None,
) -> tuple[dict[str, Any], Scope, dict[str, Any]]:
    """The view's ``unit_metrics`` answer, the scope it was cut to and its layout."""
    details, cut, window = await _frame(
        conn, scope, settings, layout=layout, first=first, last=last, area=area
    )
    body = await metrics.unit_metrics(
        conn, updater(request), cut, details["id"], window, level=level, reads=get_reads(request)
    )
    return body, cut, details


@router.get("/maps/coverage", response_class=HTMLResponse, summary="Colour grid map (网格彩图)")
async def coverage_page(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    layout: LayoutId = None,
    first: First = None,
    last: Last = None,
    level: Level = "grid",
    area: Area = None,
    basemap: Basemap = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    body, cut, details = await _view(
        request,
        conn,
        principal.scope,
        settings,
        layout=layout,
        first=first,
        last=last,
        level=level,
        area=area,
    )
    layouts = [
        x
        for x in await list_layouts(conn, principal.scope)
        if x["purpose"] == details["purpose"] and (x["grids"] or x["id"] == details["id"])
    ]
    page = maps_coverage.CoveragePage(
        bounds=await scope_bounds(conn, cut),
        basemap=_basemap(basemap, settings),
        tianditu_key=settings.map.tianditu_key,
        path=request.url.path,
        query=list(request.query_params.multi_items()),
        layout=details,
        first=date.fromisoformat(body["from"]),
        last=date.fromisoformat(body["to"]),
        blind_days=settings.coverage.blind_spot_days,
        units=body["units"],
        note=" · ".join(n for n in (body.get("note_zh"), body.get("note")) if n) or None,
        level=level,
        area=scope_prefix(area) if area else None,  # a valid code: view_scope found it
        layouts=layouts,
    )
    return _page(maps_coverage.coverage_map(page), request)


@router.get(
    "/maps/coverage/search",
    summary="The colour grid map's search: counties, townships, villages and grids of the "
    "layout by code or part of the name, in scope, each with its box and figures",
)
async def coverage_search(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    q: Annotated[str, Query(min_length=1, max_length=64, description="code or part of a name")],
    layout: LayoutId = None,
    first: First = None,
    last: Last = None,
    area: Area = None,
) -> dict[str, Any]:
    details, cut, window = await _frame(
        conn, principal.scope, settings, layout=layout, first=first, last=last, area=area
    )
    hits = await view.search(conn, updater(request), cut, details["id"], window, q)
    return {"q": q, "layout": details["id"], "hits": hits}


@router.get(
    "/maps/coverage/export",
    summary="The colour grid map's view (level, layout, window, area) as CSV, XLSX or GeoJSON",
    response_class=Response,
    responses={200: {"content": {m.split(";")[0]: {} for m in MEDIA.values()}}},
)
async def coverage_export(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    format: Annotated[Literal["csv", "xlsx", "geojson"], Query()] = "csv",
    layout: LayoutId = None,
    first: First = None,
    last: Last = None,
    level: Level = "grid",
    area: Area = None,
) -> Response:
    body, _, _ = await _view(
        request,
        conn,
        principal.scope,
        settings,
        layout=layout,
        first=first,
        last=last,
        level=level,
        area=area,
    )
    if format == "geojson":
        collection = await view.with_geometry(conn, body, body["layout"]["id"], level)
        content = orjson.dumps(collection, option=orjson.OPT_SERIALIZE_NUMPY)
    elif format == "xlsx":
        content = await asyncio.to_thread(view.render_xlsx, body)
    else:
        content = view.render_csv(body)
    name = "-".join(
        (
            "coverage",
            level,
            area or "scope",
            f"layout{body['layout']['id']}",
            body["from"],
            body["to"],
        )
    )
    return Response(
        content,
        media_type=MEDIA[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{format}"',
            "Cache-Control": "private, no-store",
        },
    )
