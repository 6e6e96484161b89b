"""Track replay (轨迹回放) of one vehicle on one day: a time slider drives the growing trail
(TimestampedGeoJson), the whole day's track lies underneath as vector tiles over the active
layout's grids, and the stops (≥ N minutes within a small radius, ``gis.stops``) are marked with
arrival, departure and duration — a stop's row zooms the map to it. A vehicle is picked by
plate or village on the page; the shown track downloads as GPX.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape
from typing import Any

import folium
import numpy as np
from folium.plugins import TimestampedGeoJson
from numpy.typing import NDArray

from gis.crs import haversine_m
from gis.maps import add_html, render
from gis.maps_common import (
    FRESHNESS_LABELS,
    MapPage,
    PageAssets,
    grid_outlines,
    page_config,
    to_display,
    vector_tiles,
)
from gis.stops import Stops
from gis.units import CHINA_OFFSET

MAX_REPLAY_POINTS = 2000
SCRIPT = "/static/maps/track.js"
TRACK_STYLE = "{color: '#7f7f7f', weight: 3, opacity: 0.7}"


@dataclass(frozen=True)
class TrackPage(MapPage):
    """A device's fixes on a day (UTC µs, WGS-84) and the stops found in them; ``device`` None:
    no vehicle picked yet. ``hits``: the vehicles matching the picker's search ``q`` (id,
    plate, identifier, village, freshness), ``more_hits`` beyond them; ``layout_id``: the
    active grid layout drawn under the track."""

    device: dict[str, Any] | None
    day: date
    time_us: NDArray[np.int64]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    stops: Stops
    stop_minutes: float
    stop_radius_m: float
    layout_id: int | None = None
    q: str = ""
    hits: tuple[dict[str, Any], ...] = ()
    more_hits: int = 0


def _china_clock(us: int) -> str:
    return (datetime.fromtimestamp(us / 1e6, tz=UTC) + CHINA_OFFSET).strftime("%H:%M:%S")


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def replay_geojson(page: TrackPage, *, gcj02: bool) -> dict[str, Any]:
    """The trail as one timestamped LineString (thinned to ``MAX_REPLAY_POINTS``)."""
    step = max(1, -(-len(page.time_us) // MAX_REPLAY_POINTS))
    keep = np.arange(0, len(page.time_us), step)
    if len(page.time_us) and keep[-1] != len(page.time_us) - 1:
        keep = np.r_[keep, len(page.time_us) - 1]
    feature = {
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": [
                [round(float(page.lon[i]), 6), round(float(page.lat[i]), 6)] for i in keep
            ],
        },
        "properties": {
            "times": [_iso(int(page.time_us[i])) for i in keep],
            "style": {"color": "#d7301f", "weight": 4},
            "icon": "circle",
            "iconstyle": {
                "radius": 7,
                "color": "#ffffff",
                "fillColor": "#d7301f",
                "fillOpacity": 1,
                "weight": 2,
            },
        },
    }
    return to_display({"type": "FeatureCollection", "features": [feature]}, gcj02=gcj02)


def _summary(page: TrackPage, km: float, stop_points: list[list[float]]) -> str:
    if page.device is None:
        return (
            '<div id="gp-summary" class="gp-box gp-title"><b>轨迹回放 Track replay</b><br>'
            "请在右上角选择车辆 pick a vehicle (top right) by plate or village</div>"
        )
    name = page.device.get("plate") or page.device.get("identifier")
    rows = "".join(
        f'<tr class="gp-stop-row" data-i="{i}" data-lon="{xy[0]:.6f}" data-lat="{xy[1]:.6f}" '
        'title="点击定位 click to zoom">'
        f"<td>{i + 1}</td><td>{_china_clock(int(a))}</td><td>{_china_clock(int(b))}</td>"
        f"<td>{(b - a) / 6e7:.0f}</td></tr>"
        for i, (a, b, xy) in enumerate(
            zip(page.stops.start_us, page.stops.end_us, stop_points, strict=True)
        )
    )
    table = (
        '<table class="gp-table"><tr><th>#</th><th>到达 Arrive</th><th>离开 Leave</th>'
        f"<th>分钟 Min</th></tr>{rows}</table>"
        if len(page.stops)
        else ""
    )
    empty = (
        '<div class="gp-error" id="gp-no-fixes">当日无定位 no fixes on this day</div>'
        if len(page.time_us) == 0
        else ""
    )
    gpx = (
        f' · <a id="gp-gpx" href="/maps/track.gpx?device={page.device["id"]}'
        f'&amp;day={page.day.isoformat()}" download>下载 GPX</a>'
        if len(page.time_us)
        else ""
    )
    return (
        '<div id="gp-summary" class="gp-box gp-title" style="max-height:60vh;overflow:auto">'
        f"<b>轨迹回放 Track replay</b> · {escape(str(name))}<br>"
        f"{page.day.isoformat()} (北京时间 China time) · {len(page.time_us)} 定位 fixes · "
        f'{km:.1f} km · <span id="gp-stop-count">{len(page.stops)}</span> 停留 stops '
        f"(≥ {page.stop_minutes:g} min, ≤ {page.stop_radius_m:g} m){gpx}{empty}{table}</div>"
    )


def _picker(page: TrackPage) -> str:
    """The day (for this vehicle) and the vehicle (by plate or village, within the scope)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in page.query
        if k not in ("day", "token", "q")
    )
    day = page.day.isoformat()
    hits = "".join(
        f'<li><a class="gp-hit" data-device="{h["id"]}" '
        f'href="{escape(page.path)}?device={h["id"]}&amp;day={day}">'
        f"{escape(str(h.get('plate') or h.get('identifier')))}</a> "
        f"<small>{escape(str(h.get('village') or ''))} · "
        f"{escape(FRESHNESS_LABELS.get(str(h.get('freshness')), ''))}</small></li>"
        for h in page.hits
    )
    if page.q and not page.hits:
        hits = f'<li class="gp-error">未找到 no vehicle matches “{escape(page.q)}”</li>'
    more = (
        f'<div class="gp-note">另有 {page.more_hits} 辆 {page.more_hits} more: '
        "请缩小搜索 narrow the search</div>"
        if page.more_hits
        else ""
    )
    day_form = (
        f'<form method="get" action="{escape(page.path)}">{hidden}'
        f'日期 day <input type="date" name="day" value="{day}"> '
        '<button type="submit">打开 Open</button></form>'
        if page.device is not None
        else ""
    )
    return (
        '<div id="gp-window" class="gp-box" style="top:10px;right:10px;max-width:340px;'
        f'max-height:50vh;overflow:auto">{day_form}'
        f'<form id="gp-pick-vehicle" method="get" action="{escape(page.path)}">'
        f'<input type="hidden" name="day" value="{day}">'
        f'车辆 vehicle <input type="search" name="q" value="{escape(page.q)}" size="16" '
        'maxlength="64" placeholder="车牌或嘎查村 plate or village"> '
        f'<button type="submit">查找 Find</button></form><ul id="gp-hits">{hits}</ul>{more}</div>'
    )


def track_map(page: TrackPage) -> str:
    """The track replay page's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    crs = "&crs=gcj02" if gcj02 else ""
    fmap = page.new_map()
    if page.layout_id is not None:
        grid_outlines(page.layout_id, gcj02=gcj02).add_to(fmap)
    if page.device is not None:
        vector_tiles(
            f"/tiles/tracks/{{z}}/{{x}}/{{y}}.pbf?device={page.device['id']}"
            f"&day={page.day.isoformat()}{crs}",
            name="全天轨迹 Whole day",
            layer="tracks",
            style=TRACK_STYLE,
        ).add_to(fmap)
    if len(page.time_us) > 1:
        TimestampedGeoJson(
            replay_geojson(page, gcj02=gcj02),
            period="PT1M",
            add_last_point=True,
            auto_play=False,
            loop=False,
            transition_time=100,
            date_options="YYYY-MM-DD HH:mm:ss",
        ).add_to(fmap)
    stops = folium.FeatureGroup(name="停留点 Stops")
    points = to_display(
        {
            "type": "MultiPoint",
            "coordinates": [
                [float(x), float(y)] for x, y in zip(page.stops.lon, page.stops.lat, strict=True)
            ],
        },
        gcj02=gcj02,
    )["coordinates"]
    for i, (xy, a, b) in enumerate(
        zip(points, page.stops.start_us, page.stops.end_us, strict=True)
    ):
        folium.CircleMarker(
            location=[xy[1], xy[0]],
            radius=9,
            color="#ffffff",
            weight=2,
            fill=True,
            fill_color="#2166ac",
            fill_opacity=0.95,
            className=f"gp-stop gp-stop-{i}",
            tooltip=f"停留 {i + 1}: {_china_clock(int(a))}–{_china_clock(int(b))} "
            f"({(b - a) / 6e7:.0f} min)",
        ).add_to(stops)
    stops.add_to(fmap)
    folium.LayerControl(position="topleft", collapsed=True).add_to(fmap)
    page_config(fmap, {"map": fmap.get_name(), "gcj02": gcj02})
    PageAssets(SCRIPT).add_to(fmap)
    km = (
        float(haversine_m(page.lon[:-1], page.lat[:-1], page.lon[1:], page.lat[1:]).sum()) / 1e3
        if len(page.time_us) > 1
        else 0.0
    )
    add_html(fmap, folium.Element(_summary(page, km, points)))
    add_html(fmap, folium.Element(_picker(page)))
    return render(fmap, title="GridPatrol · 轨迹回放 Track replay")
