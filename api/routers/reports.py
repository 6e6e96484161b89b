"""``/reports/coverage``: the coverage report as an HTML page or an XLSX, PDF or CSV download.

Like the map pages, the address accepts ``?token=…`` once (moved into a cookie by a redirect),
so a report link can be opened or downloaded from a browser. The reader's data scope applies:
a county user's report covers their county only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api import reports
from api.auth import Viewer
from api.deps import AppSettings, Conn
from api.routers.coverage import (
    FromDate,
    ToDate,
    check_area,
    layout_or_active,
    updater,
    window,
)
from api.routers.pages import token_redirect
from api.scope import Scope
from api.web import with_nav

router = APIRouter(tags=["reports"])


@router.get(
    "/reports/coverage",
    summary="Coverage report (网格彩图, tables, charts, ranking) as HTML, XLSX, PDF or CSV",
    response_class=Response,
    responses={
        200: {
            "content": {media: {} for media in reports.MEDIA_TYPES.values()},
            "description": "The report; HTML inline, the other formats as attachments.",
        }
    },
)
async def coverage_report(
    request: Request,
    principal: Viewer,
    conn: Conn,
    settings: AppSettings,
    first: FromDate = None,
    last: ToDate = None,
    level: Annotated[
        str,
        Query(pattern="^(grid|village|township|county)$", description="map and CSV level"),
    ] = "village",
    format: Annotated[str, Query(pattern="^(html|xlsx|pdf|csv)$")] = "html",
    layout: Annotated[int | None, Query(description="default: the active patrol layout")] = None,
    area: Annotated[str | None, Query(description="only this area (within your scope)")] = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    span = window(first, last, settings)
    layout_id = await layout_or_active(conn, layout)
    scope = principal.scope
    if area:
        await check_area(conn, scope, area)  # 404 outside the scope
        scope = scope.narrow(Scope.parse([area]))
    rendered = await reports.build(
        conn, updater(request), scope, layout_id, span, level=level, fmt=format
    )
    headers = {"Content-Disposition": rendered.disposition, "Cache-Control": "private, no-store"}
    if rendered.note and rendered.note.isascii():
        headers["X-Report-Note"] = rendered.note
    content = rendered.content
    if format == "html":  # read in the browser: with the navigation bar of every page
        content = with_nav(content.decode("utf-8"), request, map_page=False).encode("utf-8")
    return Response(content, media_type=rendered.media_type, headers=headers)
