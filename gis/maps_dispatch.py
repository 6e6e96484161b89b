"""The dispatcher's live map (派警地图): vehicles refreshing every few seconds coloured by status
and freshness, open incidents, ranked candidates with ETAs and an assign button, the active
layout's grids and the alert points (vector tiles), and search by grid code or plate.

Live layers use the Leaflet Realtime plugin over the API (vehicles only in the map's view);
large static layers come as vector tiles. The page logic is ``/static/maps/dispatch.js`` (on
``gridpatrol.js``).
"""

from __future__ import annotations

from dataclasses import dataclass

import folium
from folium.plugins import Realtime
from folium.utilities import JsCode

from gis.maps import add_html, render
from gis.maps_common import (
    MapPage,
    PageAssets,
    PageScript,
    legend,
    page_config,
    vector_tiles,
)

SCRIPT = "/static/maps/dispatch.js"

VEHICLE_LEGEND = [
    ("#1a9850", "空闲 available"),
    ("#d7301f", "出警 busy"),
    ("#4a6fa5", "休班 off duty"),
    ("#f0b429", "定位延迟 stale fix"),
    ("#9e9e9e", "离线 offline"),
    ("#b10026", "警情 new incident"),
    ("#2166ac", "已派警 dispatched"),
]
ALERT_POINT_STYLE = (
    "function (p) { var c = {alarm_phone: '#8c510a', informant: '#762a83', camera: '#35978f',"
    " station: '#01665e'}[p.kind] || '#8c510a'; return {radius: 3.5, fill: true,"
    " fillColor: c, fillOpacity: 0.9, color: '#ffffff', weight: 1}; }"
)
GRID_OUTLINE = "{fill: false, color: '#3b6e8f', weight: 0.8, opacity: 0.7}"


@dataclass(frozen=True)
class DispatchPage(MapPage):
    """What the dispatcher page needs from the server."""

    csrf: str | None
    layout_id: int | None
    refresh_s: float
    incidents_url: str = "/api/v1/incidents?status=open"


def dispatch_map(page: DispatchPage) -> str:
    """The dispatcher page's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    crs = "&crs=gcj02" if gcj02 else ""
    fmap = page.new_map()
    if page.layout_id is not None:
        vector_tiles(
            f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout={page.layout_id}{crs}",
            name="网格 Grids",
            layer="grids",
            style=GRID_OUTLINE,
        ).add_to(fmap)
    vector_tiles(
        "/tiles/alert_points/{z}/{x}/{y}.pbf" + ("?crs=gcj02" if gcj02 else ""),
        name="报警点 Alert points",
        layer="alert_points",
        style=ALERT_POINT_STYLE,
    ).add_to(fmap)
    interval = int(page.refresh_s * 1000)
    vehicles = Realtime(
        JsCode("GP.vehicleSource()"),
        interval=interval,
        get_feature_id=JsCode("function (f) { return f.properties.id; }"),
        update_feature=JsCode("GP.vehicleUpdate"),
        point_to_layer=JsCode("GP.vehicleMarker"),
        remove_missing=True,
    )
    vehicles.layer_name = "车辆 Vehicles"
    vehicles.add_to(fmap)
    incidents = Realtime(
        JsCode("GP.incidentSource()"),
        interval=interval * 2,
        get_feature_id=JsCode("function (f) { return f.properties.id; }"),
        update_feature=JsCode("GP.incidentUpdate"),
        point_to_layer=JsCode("GP.incidentMarker"),
        on_each_feature=JsCode("GP.onIncident"),
        remove_missing=True,
    )
    incidents.layer_name = "警情 Incidents"
    incidents.add_to(fmap)
    folium.LayerControl(position="topleft", collapsed=True).add_to(fmap)
    page_config(
        fmap,
        {
            "map": fmap.get_name(),
            "gcj02": gcj02,
            # no bearer token in the page: its calls use the HTTP-only cookie, writes with
            # this CSRF token (useless without the cookie) in X-CSRF-Token
            "csrf": page.csrf,
            "vehiclesUrl": "/collections/vehicles/items?limit=10000",
            "incidentsUrl": page.incidents_url,
        },
    )
    PageAssets(SCRIPT).add_to(fmap)
    PageScript(
        f"GP.vehicles = GP.watch({vehicles.get_name()}, 'vehicles');\n"
        f"GP.incidents = GP.watch({incidents.get_name()}, 'incidents');\n"
        f"{fmap.get_name()}.on('moveend', function () {{ GP.vehicles.update(); }});"
    ).add_to(fmap)
    add_html(
        fmap,
        folium.Element(
            '<div id="gp-search" class="gp-box"><form id="gp-search-form">'
            '<input name="q" placeholder="网格编码或车牌 grid code or plate"> '
            '<button type="submit">搜索 Search</button></form>'
            '<div id="gp-search-result" class="gp-note"></div></div>'
            '<div id="gp-panel" class="gp-box"></div>'
        ),
    )
    add_html(
        fmap,
        folium.Element(
            legend(
                "gp-legend",
                "派警地图 Dispatch map",
                VEHICLE_LEGEND,
                note=f"每 {page.refresh_s:g} 秒刷新 refreshes every {page.refresh_s:g} s · "
                "点击警情查看候选 click an incident for candidates",
            )
        ),
    )
    return render(fmap, title="GridPatrol · 派警地图 Dispatch")
