"""The colour grid map (网格彩图): a layout's coverage over a chosen window at a chosen level
(county, township, village or grid), blind spots on click, search by code or name, export of
the view, a legend in Chinese and English.

Grids come as vector tiles with their coverage attributes (``/tiles/grids``), so a league of
thousands of grids never travels as one GeoJSON; a clicked grid's blind-spot cells are fetched
from ``/api/v1/coverage/blind-spots``. At the coarser levels the admin-area tiles are coloured
from the units' figures, which come with the page (at most a league's villages, not its grids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from html import escape
from typing import Any
from urllib.parse import urlencode

import folium

from gis import palette
from gis.maps import add_html, render
from gis.maps_common import (
    MapPage,
    PageAssets,
    PageScript,
    coverage_legend,
    page_config,
    vector_tiles,
)

GRID_MINZOOM = 7  # the grids tile layer is empty below this zoom (too many grids per tile)
COUNTY_OUTLINE = "{fill: false, color: '#b2182b', weight: 2, opacity: 0.8}"
VILLAGE_OUTLINE = "{fill: false, color: '#1b7837', weight: 1, opacity: 0.6}"
LEVELS = ("county", "township", "village", "grid")
LEVEL_DIGITS = {"county": 6, "township": 9, "village": 12, "grid": 15}
LEVEL_LABELS = {
    "county": "旗县 County",
    "township": "苏木乡镇 Township",
    "village": "嘎查村 Village",
    "grid": "网格 Grid",
}
EXPORT_FORMATS = {"csv": "CSV", "xlsx": "XLSX", "geojson": "GeoJSON"}
STATUS_LABELS = {
    "active": "启用 active",
    "draft": "草稿 draft",
    "retired": "停用 retired",
    "scheduled": "待启用 scheduled",
}
SUMMARY_ROWS = 15  # units listed in the summary box (the export holds them all)


@dataclass(frozen=True)
class CoveragePage(MapPage):
    """What the colour grid map needs: layout, window, level, area, and the units' figures.

    ``units`` are the rows of ``api.coverage.metrics.unit_metrics`` at ``level`` (codes are
    6, 9, 12 or 15 digits); ``layouts`` the layouts the reader may pick (id, name, status).
    """

    layout: dict[str, Any]
    first: date
    last: date
    blind_days: int
    units: list[dict[str, Any]]
    note: str | None = None
    level: str = "grid"
    area: str | None = None
    layouts: list[dict[str, Any]] = field(default_factory=list)


def _kept(page: CoveragePage, drop: tuple[str, ...]) -> list[tuple[str, str]]:
    """The page's query without ``drop`` and never the token."""
    return [(k, v) for k, v in page.query if k not in (*drop, "token")]


def _view_query(page: CoveragePage) -> list[tuple[str, str]]:
    """What the page shows, as query items (the export links ask for exactly that)."""
    items = [
        ("level", page.level),
        ("layout", str(page.layout["id"])),
        ("from", page.first.isoformat()),
        ("to", page.last.isoformat()),
    ]
    return [*items, ("area", page.area)] if page.area else items


def _summary(page: CoveragePage) -> str:
    cells = sum(int(u["cells"] or 0) for u in page.units)
    seen = sum(int(u["seen_cells"] or 0) for u in page.units)
    blind = sum(int(u["blind_cells"] or 0) for u in page.units)
    grids = sum(int(u.get("grids") or 0) for u in page.units)
    pct = f"{100.0 * seen / cells:.1f} %" if cells else "–"
    rows = "".join(
        f'<tr data-code="{escape(str(u["code"]))}">'
        f"<td>{escape(str(u['name_zh'] or u['code']))}"
        + (f" {escape(str(u['code'])[-3:])}" if page.level == "grid" else "")
        + f"</td><td>{u['coverage_pct'] if u['coverage_pct'] is not None else '–'} %</td>"
        f"<td>{u['blind_cells']}</td></tr>"
        for u in page.units[:SUMMARY_ROWS]
    )
    more = len(page.units) - SUMMARY_ROWS
    more_row = f'<div class="gp-small">… +{more} 更多 more (导出 export)</div>' if more > 0 else ""
    area = f" · 区域 area {escape(page.area)}" if page.area else ""
    note = (
        f'<div id="gp-window-note" class="gp-warning">{escape(page.note)}</div>'
        if page.note
        else ""
    )
    if not page.units:  # e.g. a layout of another area, or an area the layout leaves out
        note += (
            '<div id="gp-empty-note" class="gp-warning">'
            "本视图无此方案的网格 · this layout has no grids in this view</div>"
        )
    exports = " · ".join(
        f'<a id="gp-export-{fmt}" href="/maps/coverage/export?'
        f'{escape(urlencode([*_view_query(page), ("format", fmt)]))}" download>{label}</a>'
        for fmt, label in EXPORT_FORMATS.items()
    )
    return (
        '<div id="gp-summary" class="gp-box gp-title"><b>网格彩图 Colour grid map</b><br>'
        f"{escape(str(page.layout['name']))} · {LEVEL_LABELS[page.level]}{area}<br>"
        f"{page.first.isoformat()} – {page.last.isoformat()} · {grids} 网格 grids · "
        f'覆盖率 coverage <b id="gp-coverage-total">{pct}</b> · 盲区 blind cells {blind}'
        f"{note}"
        f'<table class="gp-table"><tr><th>{LEVEL_LABELS[page.level]}</th><th>覆盖 Cov.</th>'
        f"<th>盲区 Blind</th></tr>{rows}</table>{more_row}"
        f'<div id="gp-export" class="gp-small">导出本视图 Export this view: {exports}</div>'
        '<div class="gp-small">点击地图看详情 click the map for details</div></div>'
    )


def _select(name: str, label: str, choices: list[tuple[str, str]], current: str) -> str:
    """A labelled drop-down of (value, text) ``choices`` with ``current`` chosen."""
    options = "".join(
        f'<option value="{escape(v)}"{" selected" if v == current else ""}>{escape(t)}</option>'
        for v, t in choices
    )
    return f'<label>{label} <select name="{name}">{options}</select></label>'


def _view_form(page: CoveragePage) -> str:
    """Level, layout, area and window: a GET form reopening the page (changes submit it)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in _kept(page, ("from", "to", "level", "layout", "area"))
    )
    layouts = page.layouts or [page.layout]
    layout_choices = [
        (
            str(x["id"]),
            f"{x['name']} #{x['id']} · {STATUS_LABELS.get(str(x.get('status')), x.get('status'))}",
        )
        for x in layouts
    ]
    selects = _select("level", "层级 Level", [(k, LEVEL_LABELS[k]) for k in LEVELS], page.level)
    selects += " " + _select("layout", "网格方案 Layout", layout_choices, str(page.layout["id"]))
    window = (
        f'从 from <input type="date" name="from" value="{page.first.isoformat()}"> '
        f'到 to <input type="date" name="to" value="{page.last.isoformat()}"> '
    )
    return (
        '<div id="gp-window" class="gp-box" style="top:10px;right:10px">'
        f'<form id="gp-view-form" method="get" action="{escape(page.path)}">{hidden}'
        f"{selects}<br>"
        f'<label>区域 Area <input type="text" name="area" value="{escape(page.area or "")}" '
        'placeholder="代码 code" maxlength="12" pattern="[0-9]*"></label><br>'
        f'{window}<button type="submit">更新 Update</button></form>'
        '<form id="gp-find" autocomplete="off">'
        '<input type="search" name="q" maxlength="64" required '
        'placeholder="网格/村/苏木 代码或名称 code or name"> '
        '<button type="submit">查找 Find</button></form>'
        '<div id="gp-find-msg" class="gp-small"></div><ol id="gp-find-hits"></ol></div>'
    )


def _units_config(page: CoveragePage) -> dict[str, dict[str, Any]]:
    """The units' figures by code, for colouring admin-area tiles and their popups."""
    keys = (
        "name_zh",
        "grids",
        "cells",
        "coverage_pct",
        "blind_cells",
        "visits",
        "patrol_km",
        "dwell_h",
        "vehicles",
    )
    return {str(u["code"]): {k: u.get(k) for k in keys} for u in page.units}


def coverage_map(page: CoveragePage) -> str:
    """The colour grid map's HTML (local assets only)."""
    if page.level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    gcj02 = page.basemap == "amap"
    crs = "&crs=gcj02" if gcj02 else ""
    fmap = page.new_map(min_zoom=GRID_MINZOOM)
    if page.level == "grid":
        shown = vector_tiles(
            f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout={page.layout['id']}"
            f"&from={page.first.isoformat()}&to={page.last.isoformat()}{crs}",
            name="网格覆盖率 Grid coverage",
            layer="grids",
            style="GP.coverageStyle",
            interactive=True,
            feature_id="code",
        )
        click = "GP.onGridClick"
    else:
        shown = vector_tiles(
            f"/tiles/admin_areas/{{z}}/{{x}}/{{y}}.pbf?level={page.level}{crs}",
            name=f"覆盖率 Coverage · {LEVEL_LABELS[page.level]}",
            layer="admin_areas",
            style="GP.unitStyle",
            interactive=True,
            feature_id="code",
        )
        click = "GP.onUnitClick"
    shown.add_to(fmap)
    if page.level in ("grid", "township", "county"):
        vector_tiles(
            f"/tiles/admin_areas/{{z}}/{{x}}/{{y}}.pbf?level=village{crs}",
            name="嘎查村 Villages",
            layer="admin_areas",
            style=VILLAGE_OUTLINE,
            show=False,
        ).add_to(fmap)
    vector_tiles(
        f"/tiles/admin_areas/{{z}}/{{x}}/{{y}}.pbf?level=county{crs}",
        name="旗县 Counties",
        layer="admin_areas",
        style=COUNTY_OUTLINE,
    ).add_to(fmap)
    folium.LayerControl(position="topleft", collapsed=True).add_to(fmap)
    page_config(
        fmap,
        {
            "map": fmap.get_name(),
            "gcj02": gcj02,
            "layout": page.layout["id"],
            "from": page.first.isoformat(),
            "to": page.last.isoformat(),
            "level": page.level,
            "digits": LEVEL_DIGITS[page.level],
            "area": page.area or "",
            "levelLabels": LEVEL_LABELS,
            "units": _units_config(page) if page.level != "grid" else {},
            "blindDays": page.blind_days,
            "coverageClasses": [[k.lower, k.colour] for k in palette.COVERAGE_CLASSES],
            "blindStyle": {
                "colour": palette.BLIND_COLOUR,
                "fillOpacity": palette.BLIND_FILL_OPACITY,
            },
        },
    )
    PageAssets().add_to(fmap)
    PageScript(
        f"{shown.get_name()}.on('click', {click}); GP.startCoverage({shown.get_name()});"
    ).add_to(fmap)
    add_html(fmap, folium.Element(_summary(page)))
    add_html(fmap, folium.Element(_view_form(page)))
    add_html(fmap, folium.Element(coverage_legend(page.blind_days)))
    return render(fmap, title="GridPatrol · 网格彩图 Colour grid map")
