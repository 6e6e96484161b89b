"""The dispatcher console (派警台): take a call (intake form; the place by a click on the map, a
village/grid/alert-point search, or coordinates in WGS-84 or GCJ-02), the incident list with
filters and counts, per incident its timeline, ranked candidates and why the others were left
out, and the workflow (assign, accept, arrive, clear, cancel, escalate); the vehicle panel
(search, follow, send a text), the alarm phones clustered, and live updates pushed by the
server (Server-Sent Events from ``/api/v1/live/stream``; the page never polls).

Live layers are Leaflet Realtime layers fed by the page script (a snapshot, then the events);
grids come as vector tiles. The page logic is ``/static/maps/dispatch.js`` (on
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
    grid_outlines,
    legend,
    page_config,
)

SCRIPT = "/static/maps/dispatch.js"
STYLE = "/static/maps/dispatch.css"
VEHICLES_URL = "/api/v1/live/vehicles"  # the scope's vehicles, compact (api/routers/live.py)

# Okabe–Ito based: distinguishable with the common colour-vision deficiencies; vehicles are
# circles, incidents larger circles with a white ring, alarm phones small squares
VEHICLE_LEGEND = [
    ("#009e73", "空闲 available"),
    ("#d55e00", "出警 busy"),
    ("#0072b2", "休班 off duty"),
    ("#f0e442", "定位过旧 stale fix"),
    ("#8c8c8c", "离线 offline"),
]
INCIDENT_LEGEND = [
    ("#b10026", "新警情 new incident"),
    ("#2166ac", "已派警 dispatched"),
    ("#5e3c99", "已接警 accepted"),
    ("#1b7837", "已到达 arrived"),
]
ALERT_LEGEND = [("#8c510a", "报警电话 alarm phone (数字 = 聚合数量 number = cluster size)")]


@dataclass(frozen=True)
class DispatchPage(MapPage):
    """What the dispatcher page needs from the server."""

    csrf: str | None
    layout_id: int | None
    refresh_s: float
    incidents_url: str = "/api/v1/incidents?status=all&limit=500"
    transport: str = "stream"  # or "poll": snapshots every refresh_s


INTAKE = """
<div id="gp-console" class="gp-box">
 <div class="gp-console-head"><b>派警台 Dispatch console</b>
  <span id="gp-live" class="gp-live gp-live-off">连接中 connecting</span></div>
 <div id="gp-alert" class="gp-alert" role="alert"></div>
 <details id="gp-intake-box" open><summary>接警 New call</summary>
 <form id="gp-intake" autocomplete="off">
  <div class="gp-row"><input name="caller" placeholder="报警人 caller" maxlength="80">
   <input name="phone" placeholder="电话 phone" maxlength="30"></div>
  <div class="gp-row"><input name="kind" list="gp-kinds" placeholder="类别 kind" maxlength="64"
    required>
   <select name="priority" title="优先级 priority">
    <option value="1">P1 特急 critical</option><option value="2">P2 紧急 urgent</option>
    <option value="3" selected>P3 一般 normal</option><option value="4">P4 较低 low</option>
    <option value="5">P5 咨询 info</option></select></div>
  <datalist id="gp-kinds"><option value="盗畜 livestock theft"><option value="火情 fire">
   <option value="交通事故 traffic accident"><option value="伤病 injury">
   <option value="纠纷 dispute"><option value="走失 missing person"></datalist>
  <textarea name="description" rows="2" maxlength="4000"
    placeholder="情况 what happened"></textarea>
  <div class="gp-row"><button type="button" id="gp-pick">在地图上点选 pick on map</button>
   <span id="gp-place" class="gp-note">地点未定 no place yet</span></div>
  <div class="gp-row"><input id="gp-place-q"
    placeholder="嘎查村/网格/报警点 village, grid, alarm point">
   <button type="button" id="gp-place-search">查 find</button></div>
  <div id="gp-place-results"></div>
  <div class="gp-row"><input id="gp-lon" placeholder="经度 lon" size="10">
   <input id="gp-lat" placeholder="纬度 lat" size="9">
   <select id="gp-datum"><option value="wgs84">WGS-84</option>
    <option value="gcj02">GCJ-02 (高德 AMap)</option></select>
   <button type="button" id="gp-coords">定位 set</button></div>
  <button type="submit" id="gp-create">创建警情 Create incident</button>
  <div id="gp-intake-result"></div>
 </form></details>
 <div class="gp-section"><b>警情 Incidents</b>
  <div class="gp-row"><select id="gp-f-status" title="状态 status">
    <option value="open">未结 open</option><option value="all">全部 all</option>
    <option value="new">新警情 new</option><option value="dispatched">已派警 dispatched</option>
    <option value="accepted">已接警 accepted</option><option value="arrived">已到达 arrived</option>
    <option value="cleared">已处置 cleared</option>
    <option value="cancelled">已撤销 cancelled</option>
   </select>
   <select id="gp-f-age" title="时间 age"><option value="0">任何时间 any time</option>
    <option value="1">1 小时 1 h</option><option value="24">24 小时 24 h</option>
    <option value="168">7 天 7 days</option></select>
   <input id="gp-f-area" placeholder="地区 area (代码/名称 code, name)" size="14"></div>
  <div id="gp-counts" class="gp-note"></div>
  <div id="gp-incident-list"></div></div>
 <div id="gp-panel"></div>
</div>
<div id="gp-vehicles" class="gp-box"><b>车辆 Vehicles</b> <span id="gp-vehicle-count"
  class="gp-note"></span>
 <div class="gp-row"><input id="gp-vehicle-q" placeholder="车牌或嘎查村 plate or village"
   size="22"></div>
 <div id="gp-vehicle-list"></div>
 <div id="gp-follow" class="gp-note"></div></div>
<div id="gp-confirm" class="gp-box" role="dialog"></div>
"""


def dispatch_map(page: DispatchPage) -> str:
    """The dispatcher console's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    fmap = page.new_map()
    if page.layout_id is not None:
        grid_outlines(page.layout_id, gcj02=gcj02).add_to(fmap)
    # fed by the page (a snapshot, then Server-Sent Events): never started on a timer
    vehicles = Realtime(
        JsCode("GP.vehicleSource()"),
        start=False,
        get_feature_id=JsCode("function (f) { return f.properties.id; }"),
        update_feature=JsCode("GP.vehicleUpdate"),
        point_to_layer=JsCode("GP.vehicleMarker"),
        remove_missing=True,
    )
    vehicles.layer_name = "车辆 Vehicles"
    vehicles.add_to(fmap)
    incidents = Realtime(
        JsCode("GP.incidentSource()"),
        start=False,
        get_feature_id=JsCode("function (f) { return f.properties.id; }"),
        update_feature=JsCode("GP.incidentUpdate"),
        point_to_layer=JsCode("GP.incidentMarker"),
        on_each_feature=JsCode("GP.onIncident"),
        remove_missing=True,
    )
    incidents.layer_name = "警情 Incidents"
    incidents.add_to(fmap)
    control = folium.LayerControl(position="topleft", collapsed=True)
    control.add_to(fmap)
    page_config(
        fmap,
        {
            "map": fmap.get_name(),
            "gcj02": gcj02,
            # no bearer token in the page: its calls use the HTTP-only cookie, writes with
            # this CSRF token (useless without the cookie) in X-CSRF-Token
            "csrf": page.csrf,
            "vehiclesUrl": VEHICLES_URL,
            "alertPointsUrl": "/api/v1/live/alert-points",
            "streamUrl": "/api/v1/live/stream",
            "incidentsUrl": page.incidents_url,
            "transport": page.transport,
            "refreshS": page.refresh_s,
        },
    )
    PageAssets(SCRIPT).add_to(fmap)
    add_css = folium.Element(f'<link rel="stylesheet" href="{STYLE}">')
    fmap.get_root().header.add_child(add_css)  # type: ignore[attr-defined]
    # the fleet's snapshot is fetched while the scripts load, not after (first paint)
    preload = folium.Element(
        f'<link rel="preload" href="{VEHICLES_URL}" as="fetch" crossorigin="anonymous">'
    )
    fmap.get_root().header.add_child(preload, index=0)  # type: ignore[attr-defined]
    PageScript(
        f"GP.vehicles = GP.watch({vehicles.get_name()}, 'vehicles');\n"
        f"GP.incidents = GP.watch({incidents.get_name()}, 'incidents');\n"
        f"GP.startConsole({control.get_name()});"
    ).add_to(fmap)
    add_html(
        fmap,
        folium.Element(
            '<div id="gp-search" class="gp-box"><form id="gp-search-form">'
            '<input name="q" placeholder="网格编码或车牌 grid code or plate"> '
            '<button type="submit">搜索 Search</button></form>'
            '<div id="gp-search-result" class="gp-note"></div></div>' + INTAKE
        ),
    )
    add_html(
        fmap,
        folium.Element(
            legend(
                "gp-legend",
                "派警台 Dispatch console",
                VEHICLE_LEGEND + INCIDENT_LEGEND + ALERT_LEGEND,
                note="实时推送 live (服务器推送 server-sent) · 放大显示网格和车牌 zoom in for grids"
                " and plates"
                " · 点击警情查看候选 click an incident for candidates"
                " · 点击网格查看网格员与最近打卡 click a grid for its worker and last check-in",
            )
        ),
    )
    return render(fmap, title="GridPatrol · 派警台 Dispatch console")
