"""The planner's page (网格规划调整): a draft layout's grids as vector tiles (``layout_grids``;
from a county's zoom in, village outlines further out) with their codes from zoom 13, drawn
edits — a line across a grid splits it, a new outline reshapes it, two selected grids merge —
sent to the redraw API with the draft's version, the selected grid's worker (一格一员) assigned
or replaced from the staff of its village, validation problems in red with their reasons, the
diff against the layout it was cloned from, activate, roll back to the layout it replaced, and
abandon (delete) the draft, each confirmed.

Without a layout the page lists the drafts in the planner's scope (each can be abandoned) and
offers to clone an active layout. Drawing uses Leaflet.draw (``folium.plugins.Draw``, served
from ``/static/vendor``); the page logic is ``/static/maps/planner.js`` (on ``gridpatrol.js``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

import folium
from folium.plugins import Draw

from gis.maps import VENDOR, add_html, render
from gis.maps_common import (
    GRID_MIN_ZOOM,
    MapPage,
    PageAssets,
    PageScript,
    legend,
    page_config,
)

SCRIPT = "/static/maps/planner.js"
VECTOR_GRID = f"{VENDOR}/Leaflet.VectorGrid.bundled.min.js"  # the draft's grids are tiles
LABEL_ZOOM = 13  # grid codes are written from this zoom in (a league's would be a pile)

DIFF_COLOURS = {"added": "#1a9850", "removed": "#762a83", "changed": "#f46d43"}
VIOLATION_COLOUR = "#d7191c"
LEGEND = [
    ("#ffffff", "网格 grid (点击选择 click to select)"),
    ("#2166ac", "已选 selected"),
    (DIFF_COLOURS["added"], "新增 added"),
    (DIFF_COLOURS["removed"], "删除 removed"),
    (DIFF_COLOURS["changed"], "变更 changed"),
    (VIOLATION_COLOUR, "问题 violation"),
]
STYLE = """<style>
#gp-planner { left: 56px; top: 10px; width: 330px; max-height: 80vh; overflow: auto; }
#gp-planner h3 { margin: 0 0 4px; font-size: 15px; }
#gp-planner button { margin: 2px 2px 2px 0; }
#gp-planner ul { margin: 4px 0; padding-left: 18px; }
#gp-worker-select { max-width: 100%; }
.gp-code-label { background: none; border: none; }
.gp-code-text { display: inline-block; transform: translate(-50%, -50%); white-space: nowrap;
  background: rgba(255,255,255,0.8); font-size: 10px; padding: 0 2px; color: #222; }
.gp-violation-list li { color: #b10026; }
</style>"""


@dataclass(frozen=True)
class PlannerPage(MapPage):
    """What the planner page needs: the draft (or none), and layouts to choose from."""

    csrf: str | None
    layout: dict[str, Any] | None = None
    drafts: list[dict[str, Any]] = field(default_factory=list)
    actives: list[dict[str, Any]] = field(default_factory=list)


def _layout_line(lay: dict[str, Any]) -> str:
    return (
        f"#{lay['id']} {escape(str(lay['name']))} · {escape(str(lay['purpose']))} · "
        f"{escape(str(lay['area_code']))} · {lay['grids']} 网格 grids"
    )


def _chooser(page: PlannerPage) -> str:
    drafts = "".join(
        f'<li><a class="gp-draft" href="{escape(page.path)}?layout={d["id"]}">'
        f"{_layout_line(d)}</a> v{d['version']} "
        f'<button class="gp-abandon" data-layout="{d["id"]}" data-version="{d["version"]}">'
        "放弃 Abandon</button></li>"
        for d in page.drafts
    )
    actives = "".join(
        f"<li>{_layout_line(a)} "
        f'<button class="gp-clone" data-layout="{a["id"]}">复制启用布局 Clone active</button></li>'
        for a in page.actives
    )
    return (
        '<div id="gp-planner" class="gp-box"><h3>网格规划调整 Grid planner</h3>'
        "<b>草稿 Drafts</b>"
        + (f"<ul>{drafts}</ul>" if drafts else '<div class="gp-note">无草稿 no drafts</div>')
        + "<b>启用中的布局 Active layouts</b>"
        '<div>草稿名称 draft name <input id="gp-clone-name" value="规划调整 redraw"></div>'
        + (f"<ul>{actives}</ul>" if actives else '<div class="gp-note">无 none</div>')
        + '<div id="gp-message"></div></div>'
    )


def _editor(layout: dict[str, Any], path: str) -> str:
    editable = layout["status"] == "draft"
    disabled = "" if editable else " disabled"
    return (
        '<div id="gp-planner" class="gp-box"><h3>网格规划调整 Grid planner</h3>'
        f"<div>{_layout_line(layout)}</div>"
        f'<div>状态 status <b id="gp-status">{escape(str(layout["status"]))}</b> · '
        f'版本 version <b id="gp-version">{layout["version"]}</b> · '
        f'网格 grids <b id="gp-grid-count">{layout["grids"]}</b></div>'
        '<div id="gp-zoom-hint" class="gp-note" hidden>放大以查看和编辑网格 zoom in to see '
        "and edit the grids (村界 village outlines until then)</div>"
        '<div>已选 selected: <span id="gp-selected">–</span></div>'
        f'<div><button id="gp-split"{disabled}>切分 Split (画线 draw a line)</button>'
        f'<button id="gp-reshape"{disabled}>重塑 Reshape (画面 draw a shape)</button>'
        f'<button id="gp-merge"{disabled}>合并 Merge (选两格 select two)</button></div>'
        '<div id="gp-worker-panel" hidden>网格员 worker: <b id="gp-worker-current">–</b><br>'
        f'<select id="gp-worker-select"{disabled}></select>'
        f'<button id="gp-worker-assign"{disabled}>指派 Assign</button></div>'
        '<div><button id="gp-validate">校验 Validate</button>'
        f'<button id="gp-activate"{disabled}>启用 Activate</button>'
        f'<button id="gp-abandon"{disabled}>放弃草稿 Abandon draft</button>'
        '<button id="gp-rollback" hidden>回退 Roll back</button>'
        f'<a href="{escape(path)}">其他布局 other layouts</a></div>'
        '<div id="gp-message"></div>'
        '<div id="gp-diff-summary" class="gp-note"></div>'
        '<ul id="gp-violations" class="gp-violation-list"></ul></div>'
    )


def planner_map(page: PlannerPage) -> str:
    """The planner page's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    fmap = page.new_map()
    fmap.get_root().header.add_child(folium.Element(STYLE))  # type: ignore[attr-defined]
    layout = page.layout
    drawn = folium.FeatureGroup(name="绘制 Drawing", control=False)
    drawn.add_to(fmap)
    if layout is not None and layout["status"] == "draft":
        Draw(
            feature_group=drawn,
            position="topleft",
            show_geometry_on_click=False,
            draw_options={
                "polyline": {"shapeOptions": {"color": "#2166ac", "weight": 3}},
                "polygon": {"allowIntersection": False, "showArea": False},
                "rectangle": False,
                "circle": False,
                "marker": False,
                "circlemarker": False,
            },
            edit_options={"edit": False, "remove": False},
        ).add_to(fmap)
    page_config(
        fmap,
        {
            "map": fmap.get_name(),
            "drawn": drawn.get_name(),
            "gcj02": gcj02,
            "csrf": page.csrf,  # for X-CSRF-Token on writes; the token stays in the cookie
            "layout": None if layout is None else layout["id"],
            "version": None if layout is None else layout["version"],
            "status": None if layout is None else layout["status"],
            "clonedFrom": None if layout is None else layout.get("cloned_from"),
            "path": page.path,
            "gridMinZoom": GRID_MIN_ZOOM,  # grids from a county's view in; villages outside
            "labelZoom": LABEL_ZOOM,
            "diffColours": DIFF_COLOURS,
            "violationColour": VIOLATION_COLOUR,
        },
    )
    PageAssets(VECTOR_GRID, SCRIPT).add_to(fmap)
    PageScript("GP.planner.start();").add_to(fmap)
    add_html(fmap, folium.Element(_chooser(page) if layout is None else _editor(layout, page.path)))
    if layout is not None:
        add_html(fmap, folium.Element(legend("gp-legend", "规划调整 Redraw", LEGEND)))
    return render(fmap, title="GridPatrol · 网格规划调整 Grid planner")
