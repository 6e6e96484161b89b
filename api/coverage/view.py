"""The colour grid map's view (网格彩图): the units it shows, found by code or name, and the
same rows as CSV, XLSX or GeoJSON.

A view is (layout, window, level, area within the reader's scope); its rows are exactly
``metrics.unit_metrics`` for that view, so the page, its search and its export never disagree.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any

import orjson
from openpyxl import Workbook
from openpyxl.styles import Font
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api import admin_areas
from api.coverage import metrics
from api.coverage.update import CoverageUpdater
from api.db import search_terms
from api.reports.csvfile import BOM, neutralise
from api.reports.xlsx import text_cell
from api.scope import Scope

# (key, 中文, English) of an exported row, in order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("level", "层级", "Level"),
    ("layout", "网格方案", "Layout"),
    ("from", "起", "From"),
    ("to", "止", "To"),
    ("code", "代码", "Code"),
    ("name_zh", "名称", "Name"),
    ("grids", "网格数", "Grids"),
    ("cells", "方格数", "Cells"),
    ("seen_cells", "已巡方格", "Seen cells"),
    ("coverage_pct", "覆盖率 %", "Coverage %"),
    ("vehicle_coverage_pct", "车巡覆盖率 %", "Vehicle coverage %"),
    ("foot_coverage_pct", "步巡覆盖率 %", "Foot coverage %"),
    ("blind_cells", "盲区方格", "Blind cells"),
    ("visits", "巡逻次数", "Visits"),
    ("revisit_mean_s", "平均复巡间隔 s", "Mean revisit s"),
    ("patrol_km", "里程 km", "Patrol km"),
    ("dwell_h", "停留 h", "Dwell h"),
    ("fixes", "定位点", "Fixes"),
    ("vehicles", "车辆", "Vehicles"),
    ("last_patrol", "最近巡逻", "Last patrol"),
)
SEARCH_HITS = 10  # of each kind (areas, grids)


async def view_scope(conn: AsyncConnection[Any], scope: Scope, area: str | None) -> Scope:
    """The reader's scope cut to ``area``; 404 for an area missing or outside the scope."""
    if not area:
        return scope
    await admin_areas.feature(conn, scope, area)  # 404 outside the scope
    return scope.narrow(Scope.parse([area]))


def rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The exported rows of a ``unit_metrics`` answer: every unit with its view."""
    view = {
        "level": body["level"],
        "layout": body["layout"]["id"],
        "from": body["from"],
        "to": body["to"],
    }
    return [{**view, **unit} for unit in body["units"]]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return neutralise(value) if isinstance(value, str) else str(value)


def render_csv(body: dict[str, Any]) -> bytes:
    """The view's rows as CSV (UTF-8 with BOM for Excel, CRLF, a bilingual header row); text
    fields a spreadsheet would run as formulas are neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([f"{zh} {en}" for _, zh, en in COLUMNS])
    for row in rows(body):
        writer.writerow([_text(row.get(key)) for key, _, _ in COLUMNS])
    return (BOM + out.getvalue()).encode("utf-8")


def _cell(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)  # Excel has no time zones: stored UTC, said so below
    return value


def render_xlsx(body: dict[str, Any]) -> bytes:
    """The view's rows as one XLSX sheet: two header rows (中文, English), frozen; every text
    a text cell, never a formula (``api.reports.xlsx.text_cell``); the window's note below."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None  # noqa: S101 - a new workbook has its sheet
    sheet.title = "覆盖率 Coverage"
    bold = Font(bold=True)
    at = 1
    for header in ([zh for _, zh, _ in COLUMNS], [en for _, _, en in COLUMNS]):
        for col, text in enumerate(header, start=1):
            sheet.cell(at, col, text).font = bold
        at += 1
    for row in rows(body):
        for col, (key, _, _) in enumerate(COLUMNS, start=1):
            cell = sheet.cell(at, col, _cell(row.get(key)))
            if isinstance(cell.value, str):
                text_cell(cell)
        at += 1
    sheet.freeze_panes = "A3"
    notes = [
        "最近巡逻为 UTC 时间 · last patrol in UTC",
        *(n for n in (body.get("note_zh"), body.get("note")) if n),
    ]
    for text in notes:
        at += 1
        text_cell(sheet.cell(at, 1, text))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def with_geometry(
    conn: AsyncConnection[Any], body: dict[str, Any], layout_id: int, level: str
) -> dict[str, Any]:
    """A ``unit_metrics`` answer as a FeatureCollection: each unit with its outline (grids as
    stored, admin areas simplified to ≈ 50 m), WGS-84."""
    codes = [u["code"] for u in body["units"]]
    if level == "grid":
        query = sql.SQL(
            "SELECT code, ST_AsGeoJSON(geom, 6) FROM grid WHERE layout_id = {} AND code = ANY({})"
        ).format(sql.Literal(layout_id), sql.Literal(codes))
    else:
        query = sql.SQL(
            "SELECT nbs_prefix(code), ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 0.0005), 6) "
            "FROM admin_area WHERE nbs_prefix(code) = ANY({})"
        ).format(sql.Literal(codes))
    geoms = {c: orjson.loads(g) for c, g in await (await conn.execute(query)).fetchall()}
    features = [
        {"type": "Feature", "properties": u, "geometry": geoms.get(u["code"])}
        for u in body["units"]
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {k: v for k, v in body.items() if k != "units"},
    }


SEARCH = sql.SQL(
    """
    (SELECT a.level, nbs_prefix(a.code) AS code, a.name_zh AS name, a.name_en,
            NULL::text AS grid_name, NULL::text AS village_name,
            ST_XMin(a.geom) AS west, ST_YMin(a.geom) AS south,
            ST_XMax(a.geom) AS east, ST_YMax(a.geom) AS north
       FROM admin_area a
      WHERE a.level IN ('county', 'township', 'village')
        AND (a.name_zh LIKE %(like)s OR a.name_en ILIKE %(like)s OR a.code LIKE %(prefix)s)
        AND {area_scope}
      ORDER BY length(nbs_prefix(a.code)), a.code LIMIT %(n)s)
    UNION ALL
    (SELECT 'grid', g.code, coalesce(g.name, v.name_zh), v.name_en, g.name, v.name_zh,
            ST_XMin(g.geom), ST_YMin(g.geom), ST_XMax(g.geom), ST_YMax(g.geom)
       FROM grid g LEFT JOIN admin_area v ON v.code = g.village_code
      WHERE g.layout_id = %(layout)s
        AND (g.code LIKE %(prefix)s OR g.name LIKE %(like)s)
        AND {grid_scope}
      ORDER BY g.code LIMIT %(n)s)
    """
)


async def search(
    conn: AsyncConnection[Any],
    updater: CoverageUpdater,
    scope: Scope,
    layout_id: int,
    window: metrics.Window,
    text: str,
) -> list[dict[str, Any]]:
    """Counties, townships and villages (code or part of the name) and the layout's grids
    (code or part of the grid's name) in ``scope``, each with its bounding box (WGS-84) and
    its figures over the window (``None`` when the layout has no grid of it in the scope).

    Raises
    ------
    Unprocessable
        For an empty query.
    """
    terms = search_terms(text)
    query = SEARCH.format(
        area_scope=scope.where("a.code", with_grid_villages=True),
        grid_scope=scope.where("g.code", "g.code"),
    )
    params = {
        **scope.params(),
        **terms,
        "layout": layout_id,
        "n": SEARCH_HITS,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        hits = await cur.fetchall()
    for level in {h["level"] for h in hits}:
        mine = [h for h in hits if h["level"] == level]
        found = await metrics.unit_metrics(
            conn,
            updater,
            scope.narrow(Scope.parse(h["code"] for h in mine)),
            layout_id,
            window,
            level=level,
        )
        figures = {u["code"]: u for u in found["units"]}
        for hit in mine:
            hit["bbox"] = [hit.pop(k) for k in ("west", "south", "east", "north")]
            hit["figures"] = figures.get(hit["code"])
    return hits
