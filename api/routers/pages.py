"""Map pages for people (folium, served with local assets so they work offline).

A page opened as ``/map?token=…`` stores the token in a same-site, HTTP-only cookie and redirects
to the clean address, so the token does not linger in the address bar or history.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import folium
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import admin_areas
from api.auth import COOKIE, Viewer
from api.deps import Conn
from gis import maps

router = APIRouter(tags=["pages"])

XILINGOL_CENTER = (44.2, 115.5)


def token_redirect(request: Request) -> Response | None:
    """When the token came in the query string, move it to a cookie and redirect."""
    token = request.query_params.get("token")
    if not token:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    clean = request.url.path + ("?" + urlencode(params) if params else "")
    response = RedirectResponse(clean, status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", max_age=12 * 3600, path="/"
    )
    return response


@router.get("/map", response_class=HTMLResponse, summary="Admin areas map (县/乡/村)")
async def admin_map(
    request: Request,
    principal: Viewer,
    conn: Conn,
    basemap: Annotated[str, Query(pattern="^(osm|tianditu|amap)$")] = "osm",
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    fmap = maps.base_map(XILINGOL_CENTER, zoom=7, basemap=basemap)
    any_synthetic = False
    for level, tol, show in (
        ("county", 200.0, True),
        ("township", 150.0, True),
        ("village", 80.0, False),
    ):
        frame = await admin_areas.frame(conn, principal.scope, level=level, simplify_m=tol)
        if frame.empty:
            continue
        any_synthetic = any_synthetic or bool(frame["synthetic"].any())
        maps.admin_area_layer(frame, level, show=show).add_to(fmap)
    if any_synthetic:
        maps.add_html(
            fmap,
            maps.synthetic_banner(
                "苏木乡镇与嘎查村边界为<b>合成演示数据</b>（名称与代码为国家统计局2023真实数据）。<br>"
                "Township and village boundaries are <b>synthetic demo data</b> "
                "(names and codes are real NBS 2023)."
            ),
        )
    folium.LayerControl(collapsed=False).add_to(fmap)
    return HTMLResponse(maps.render(fmap, title="GridPatrol · 行政区划 Admin areas"))
