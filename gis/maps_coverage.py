"""The colour grid map (网格彩图): every grid of a layout coloured by its patrol coverage over a
chosen window, blind spots on click, a legend in Chinese and English.

Grids come as vector tiles with their coverage attributes (``/tiles/grids``), so a league of
thousands of grids never travels as one GeoJSON; a clicked grid's blind-spot cells are fetched
from ``/api/v1/coverage/blind-spots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from html import escape
from typing import Any

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


@dataclass(frozen=True)
class CoveragePage(MapPage):
    """What the colour grid map needs: layout, window, and the scope's totals."""

    layout: dict[str, Any]
    first: date
    last: date
    blind_days: int
    units: list[dict[str, Any]]
    note: str | None = None


def _summary(page: CoveragePage) -> str:
    cells = sum(int(u["cells"] or 0) for u in page.units)
    seen = sum(int(u["seen_cells"] or 0) for u in page.units)
    blind = sum(int(u["blind_cells"] or 0) for u in page.units)
    grids = sum(int(u["grids"] or 0) for u in page.units)
    pct = f"{100.0 * seen / cells:.1f} %" if cells else "–"
    rows = "".join(
        f"<tr><td>{escape(str(u['name_zh'] or u['code']))}</td>"
        f"<td>{u['coverage_pct'] if u['coverage_pct'] is not None else '–'} %</td>"
        f"<td>{u['blind_cells']}</td></tr>"
        for u in page.units[:15]
    )
    note = f'<div class="gp-note">{escape(page.note)}</div>' if page.note else ""
    return (
        '<div id="gp-summary" class="gp-box gp-title"><b>网格彩图 Colour grid map</b><br>'
        f"{escape(str(page.layout['name']))}<br>"
        f"{page.first.isoformat()} – {page.last.isoformat()} · {grids} 网格 grids · "
        f'覆盖率 coverage <b id="gp-coverage-total">{pct}</b> · 盲区 blind cells {blind}'
        f'<table class="gp-table"><tr><th>旗县 County</th><th>覆盖 Cov.</th><th>盲区 Blind'
        f"</th></tr>{rows}</table>{note}"
        '<div class="gp-note">点击网格看盲区 click a grid for its blind spots</div></div>'
    )


def _window_form(page: CoveragePage) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in page.query
        if k not in ("from", "to", "token")
    )
    return (
        f'<div id="gp-window" class="gp-box" style="top:10px;right:10px">'
        f'<form method="get" action="{escape(page.path)}">{hidden}'
        f'从 from <input type="date" name="from" value="{page.first.isoformat()}"> '
        f'到 to <input type="date" name="to" value="{page.last.isoformat()}"> '
        '<button type="submit">更新 Update</button></form></div>'
    )


def coverage_map(page: CoveragePage) -> str:
    """The colour grid map's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    crs = "&crs=gcj02" if gcj02 else ""
    fmap = page.new_map(min_zoom=GRID_MINZOOM)
    grids = vector_tiles(
        f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout={page.layout['id']}"
        f"&from={page.first.isoformat()}&to={page.last.isoformat()}{crs}",
        name="网格覆盖率 Grid coverage",
        layer="grids",
        style="GP.coverageStyle",
        interactive=True,
        feature_id="code",
    )
    grids.add_to(fmap)
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
            "blindDays": page.blind_days,
            "coverageClasses": [[k.lower, k.colour] for k in palette.COVERAGE_CLASSES],
            "blindStyle": {
                "colour": palette.BLIND_COLOUR,
                "fillOpacity": palette.BLIND_FILL_OPACITY,
            },
        },
    )
    PageAssets().add_to(fmap)
    PageScript(f"{grids.get_name()}.on('click', GP.onGridClick);").add_to(fmap)
    add_html(fmap, folium.Element(_summary(page)))
    add_html(fmap, folium.Element(_window_form(page)))
    add_html(fmap, folium.Element(coverage_legend(page.blind_days)))
    return render(fmap, title="GridPatrol · 网格彩图 Colour grid map")
