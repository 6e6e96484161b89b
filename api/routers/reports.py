"""Reports for leaders: the ``/reports`` page (a form, progress, download links) and the
report jobs behind it; ``/reports/coverage`` as a direct link.

A report is built by a worker as a job (``api.reports.jobs``), never in the API's event loop:
``POST /api/v1/reports`` answers at once with the job — finished already when the same report
over the same data was built before (the cache), else queued with its progress to poll at
``GET /api/v1/reports/{id}``; the file is at ``…/{id}/file``. The reader's data scope applies
to every step: a county user's report covers their county only, and a job of a wider scope is
not theirs to read (404).

``/reports/coverage?…`` keeps working for links and scripts: it asks for the same job and
waits for it (at most ``DIRECT_WAIT_S``), then answers with the file, or 202 and where to
follow the job. Like the map pages, it accepts ``?token=…`` once (moved into a cookie).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from html import escape
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection, sql
from pydantic import BaseModel, ConfigDict, Field

from api import reports
from api.auth import Viewer
from api.deps import AppSettings, Conn, Pool
from api.errors import Conflict, DomainError, NotFound
from api.layouts import get_layout, list_layouts
from api.reports import jobs
from api.reports.labels import LEVEL_ZH
from api.routers.coverage import check_area, layout_or_active, window
from api.routers.pages import html_page, token_redirect
from api.scope import Scope
from api.settings import Settings
from api.web import shell, with_nav
from gis.units import china_today

router = APIRouter(tags=["reports"])

DIRECT_WAIT_S = 120.0  # /reports/coverage waits this long for its job, then answers 202
LEVELS = ("county", "township", "village", "grid")
FORMAT_LABELS = {
    "html": "网页 HTML",
    "xlsx": "表格 XLSX",
    "pdf": "PDF (A4)",
    "csv": "CSV",
}
Level = Literal["grid", "village", "township", "county"]
Format = Literal["html", "xlsx", "pdf", "csv"]
JobId = Annotated[int, Path(ge=1, le=2**62)]


class ReportIn(BaseModel):
    """A report to build: everything optional but the format."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    area: str | None = Field(
        default=None, max_length=15, description="only this area (within your scope)"
    )
    level: Level = Field(default="village", description="the map's and the CSV's level")
    layout: int | None = Field(default=None, ge=1, description="default: the active layout")
    first: date | None = Field(default=None, alias="from", description="first day (UTC+8)")
    last: date | None = Field(default=None, alias="to", description="last day (UTC+8)")
    format: Format = "xlsx"


async def _spec(
    conn: AsyncConnection[Any], scope: Scope, body: ReportIn, settings: Settings
) -> jobs.ReportSpec:
    """Check a request against the reader's scope (404 outside it, 422 for a bad window)."""
    span = window(body.first, body.last, settings)
    layout_id = await layout_or_active(conn, body.layout)
    await get_layout(conn, scope, layout_id)  # 404 outside the scope
    area = (body.area or "").strip() or None
    if area:
        await check_area(conn, scope, area)
        scope = scope.narrow(Scope.parse([area]))
    return jobs.ReportSpec(
        scope, layout_id, span.first, span.last, body.level, body.format, area=area
    )


@router.post(
    "/api/v1/reports",
    summary="Ask for a report: the finished file at once when cached, else a job to follow",
    status_code=202,
    responses={200: {"description": "Already built over today's data: the job, done"}},
)
async def create_report(
    body: ReportIn, principal: Viewer, conn: Conn, settings: AppSettings
) -> Response:
    spec = await _spec(conn, principal.scope, body, settings)
    row, existed = await jobs.submit(conn, spec, settings.coverage, user_id=principal.user_id)
    status = 200 if row["status"] == "done" else 202
    payload = {**jobs.view(row), "cached": existed and row["status"] == "done"}
    return JSONResponse(jsonable_encoder(payload), status_code=status)


@router.get("/api/v1/reports", summary="The reports you asked for, newest first")
async def my_reports(principal: Viewer, conn: Conn) -> list[dict[str, Any]]:
    if principal.user_id is None:
        return []
    return [jobs.view(r) for r in await jobs.recent(conn, principal.user_id, principal.scope)]


@router.get("/api/v1/reports/{job_id}", summary="A report job: status, progress, file link")
async def report_job(job_id: JobId, principal: Viewer, conn: Conn) -> dict[str, Any]:
    return jobs.view(await jobs.job(conn, job_id, principal.scope))


def _file_response(rendered: reports.Rendered, request: Request, fmt: str) -> Response:
    headers = {"Content-Disposition": rendered.disposition, "Cache-Control": "private, no-store"}
    if rendered.note and rendered.note.isascii():
        headers["X-Report-Note"] = rendered.note
    content = rendered.content
    if fmt == "html":  # read in the browser: with the navigation bar of every page
        content = with_nav(content.decode("utf-8"), request, map_page=False).encode("utf-8")
    return Response(content, media_type=rendered.media_type, headers=headers)


@router.get(
    "/api/v1/reports/{job_id}/file",
    summary="A finished report's file (HTML inline, the rest as downloads)",
    response_class=Response,
    responses={
        200: {"content": {media: {} for media in reports.MEDIA_TYPES.values()}},
        409: {"description": "Not built yet (or it failed): see the job"},
    },
)
async def report_file(job_id: JobId, request: Request, principal: Viewer, conn: Conn) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    rendered = await jobs.job_file(conn, job_id, principal.scope)
    if rendered is None:
        raise Conflict(f"report {job_id} is not ready: follow /api/v1/reports/{job_id}")
    fmt = next(k for k, v in reports.MEDIA_TYPES.items() if v == rendered.media_type)
    return _file_response(rendered, request, fmt)


@router.get(
    "/reports/coverage",
    summary="Coverage report (网格彩图, tables, charts, ranking) as HTML, XLSX, PDF or CSV",
    response_class=Response,
    responses={
        200: {
            "content": {media: {} for media in reports.MEDIA_TYPES.values()},
            "description": "The report; HTML inline, the other formats as attachments.",
        },
        202: {"description": "Still being built after the wait: the job to follow"},
    },
)
async def coverage_report(
    request: Request,
    principal: Viewer,
    pool: Pool,
    settings: AppSettings,
    first: Annotated[date | None, Query(alias="from", description="first day (UTC+8)")] = None,
    last: Annotated[date | None, Query(alias="to", description="last day (UTC+8)")] = None,
    level: Annotated[str, Query(pattern="^(grid|village|township|county)$")] = "village",
    format: Annotated[str, Query(pattern="^(html|xlsx|pdf|csv)$")] = "html",
    layout: Annotated[int | None, Query(ge=1, description="default: the active layout")] = None,
    area: Annotated[
        str | None, Query(max_length=15, description="only this area (within your scope)")
    ] = None,
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    body = ReportIn.model_validate(
        {"from": first, "to": last, "level": level, "format": format, "layout": layout}
        | {"area": area}
    )
    async with pool.connection() as conn:  # not held while the worker builds
        spec = await _spec(conn, principal.scope, body, settings)
        row, _ = await jobs.submit(conn, spec, settings.coverage, user_id=principal.user_id)
    if row["status"] not in ("done", "failed"):
        row = await jobs.wait_done(pool, row["id"], principal.scope, DIRECT_WAIT_S)
    if row["status"] == "failed":
        raise ReportFailed(row["id"], row["error"])
    if row["status"] != "done":
        return JSONResponse(
            jsonable_encoder(jobs.view(row)),
            status_code=202,
            headers={"Location": f"/api/v1/reports/{row['id']}"},
        )
    async with pool.connection() as conn:
        rendered = await jobs.job_file(conn, row["id"], principal.scope)
    if rendered is None:  # cleaned up between the two reads
        raise NotFound(f"report {row['id']} is gone; ask again")
    return _file_response(rendered, request, format)


class ReportFailed(DomainError):
    """A report job ended in failure: 500 with its reason."""

    status = 500
    code = "report_failed"

    def __init__(self, job_id: int, error: str | None) -> None:
        super().__init__(f"report {job_id} failed: {error or 'unknown error'}", job=job_id)


# ---- the page -------------------------------------------------------------------------------


async def _areas(conn: AsyncConnection[Any], scope: Scope) -> list[tuple[str, str, str]]:
    query = sql.SQL(
        "SELECT nbs_prefix(code), name_zh, level FROM admin_area "
        "WHERE level IN ('county', 'township', 'village') AND {scope} ORDER BY code"
    ).format(scope=scope.where("code"))
    rows = await (await conn.execute(query, scope.params())).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(n / 1e3, 0.1):.0f} KB"


def recent_rows(rows: list[dict[str, Any]]) -> str:
    """The table body of the reader's recent reports (also rebuilt by the page's script)."""
    if not rows:
        return '<tr><td colspan="6">还没有报表 · no reports yet</td></tr>'
    out = []
    for r in rows:
        params = r["params"]
        if r["status"] == "done":
            link = (
                f'<a href="/api/v1/reports/{r["id"]}/file">下载 Download</a> '
                f"<small>{_size(r['size_bytes'])}</small>"
            )
        elif r["status"] == "failed":
            link = f'<span class="gp-error">失败 failed: {escape(r["error"] or "")}</span>'
        else:
            link = f"{escape(r['status'])} {round(100 * float(r['progress']))} %"
        out.append(
            f"<tr><td>{r['id']}</td><td>{escape(params.get('area') or '全部 all')}</td>"
            f"<td>{escape(LEVEL_ZH.get(params['level'], params['level']))} {params['level']}</td>"
            f"<td>{params['first']} – {params['last']}</td>"
            f"<td>{params['format'].upper()}</td><td>{link}</td></tr>"
        )
    return "".join(out)


@router.get("/reports", summary="Reports page: choose, build, download (page)")
async def reports_page(
    request: Request, principal: Viewer, conn: Conn, settings: AppSettings
) -> Response:
    if (redirect := token_redirect(request)) is not None:
        return redirect
    areas = await _areas(conn, principal.scope)
    options = "".join(
        f'<option value="{code}">{escape(name)} · {LEVEL_ZH.get(level, level)}</option>'
        for code, name, level in areas
    )
    layouts = [
        r
        for r in await list_layouts(conn, principal.scope)
        if r["purpose"] == "patrol" and r["status"] in ("active", "retired")
    ]
    layouts.sort(key=lambda r: (r["status"] != "active", -r["id"]))
    layout_options = "".join(
        f'<option value="{r["id"]}">{escape(r["name"])} · #{r["id"]} · '
        f"{'启用 active' if r['status'] == 'active' else '已停用 retired'}</option>"
        for r in layouts
    )
    last = china_today() - timedelta(days=1)
    first = last - timedelta(days=6)
    level_options = "".join(
        f'<option value="{lv}"{" selected" if lv == "village" else ""}>{LEVEL_ZH[lv]} {lv}</option>'
        for lv in LEVELS
    )
    formats = "".join(
        f'<label class="gp-radio"><input type="radio" name="format" value="{f}"'
        f"{' checked' if f == 'xlsx' else ''}> {label}</label>"
        for f, label in FORMAT_LABELS.items()
    )
    mine = (
        await jobs.recent(conn, principal.user_id, principal.scope)
        if principal.user_id is not None
        else []
    )
    longest = settings.coverage.max_window_days
    config = json.dumps({"csrf": getattr(request.state, "csrf", "")}).replace("</", "<\\/")
    body = f"""
<h1>报表 <small>Reports</small></h1>
<p class="gp-sub">覆盖率报表与车辆排名：选择范围、层级、网格方案、时段与格式。报表在后台生成，
相同数据的报表直接取用。 · Coverage report and vehicle ranking: choose the area, level, layout,
days and format. Reports are built in the background; the same report over the same data is
served at once.</p>
<form class="gp-form gp-report-form" id="report-form" method="get" action="/reports/coverage">
  <label>区域 Area<input name="area" list="report-areas" maxlength="15"
         placeholder="全部 whole scope (代码 code)" autocomplete="off"></label>
  <datalist id="report-areas">{options}</datalist>
  <label>层级 Level<select name="level">{level_options}</select></label>
  <label>网格方案 Layout<select name="layout">{layout_options}</select></label>
  <label>起 From<input type="date" name="from" value="{first}" max="{china_today()}"
         required></label>
  <label>止 To<input type="date" name="to" value="{last}" max="{china_today()}" required></label>
  <fieldset class="gp-formats"><legend>格式 Format</legend>{formats}</fieldset>
  <button type="submit">生成 Build</button>
  <p class="gp-sub">最长 {longest} 天 · at most {longest} days</p>
</form>
<section id="report-status" aria-live="polite" hidden>
  <p id="report-step"></p>
  <progress id="report-progress" max="1" value="0"></progress>
  <p id="report-result"></p>
</section>
<h2>我的报表 <small>My reports</small></h2>
<table class="gp-list" id="report-list"><thead><tr><th>#</th><th>区域 Area</th>
<th>层级 Level</th><th>时段 Days (UTC+8)</th><th>格式 Format</th><th>文件 File</th></tr></thead>
<tbody>{recent_rows(mine)}</tbody></table>
<script type="application/json" id="report-config">{config}</script>
<script src="/static/home/reports.js" defer></script>"""
    return html_page(shell(request, "报表 Reports", body, principal=principal))
