"""Track replay (轨迹回放) of one vehicle on one day: a time slider drives the growing trail
(TimestampedGeoJson), the whole day's track lies underneath as vector tiles, and the stops
(≥ N minutes within a small radius, ``gis.stops``) are marked with arrival, departure and
duration.
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
from gis.maps_common import MapPage, PageAssets, to_display, vector_tiles
from gis.stops import Stops
from gis.units import CHINA_OFFSET

MAX_REPLAY_POINTS = 2000
TRACK_STYLE = "{color: '#7f7f7f', weight: 3, opacity: 0.7}"


@dataclass(frozen=True)
class TrackPage(MapPage):
    """A device's fixes on a day (UTC µs, WGS-84) and the stops found in them."""

    device: dict[str, Any]
    day: date
    time_us: NDArray[np.int64]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    stops: Stops
    stop_minutes: float
    stop_radius_m: float


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


def _summary(page: TrackPage, km: float) -> str:
    name = page.device.get("plate") or page.device.get("identifier")
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{_china_clock(int(a))}</td><td>{_china_clock(int(b))}</td>"
        f"<td>{(b - a) / 6e7:.0f}</td></tr>"
        for i, (a, b) in enumerate(zip(page.stops.start_us, page.stops.end_us, strict=True))
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
    return (
        '<div id="gp-summary" class="gp-box gp-title" style="max-height:60vh;overflow:auto">'
        f"<b>轨迹回放 Track replay</b> · {escape(str(name))}<br>"
        f"{page.day.isoformat()} (北京时间 China time) · {len(page.time_us)} 定位 fixes · "
        f'{km:.1f} km · <span id="gp-stop-count">{len(page.stops)}</span> 停留 stops '
        f"(≥ {page.stop_minutes:g} min, ≤ {page.stop_radius_m:g} m){empty}{table}</div>"
    )


def _day_form(page: TrackPage) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in page.query
        if k not in ("day", "token")
    )
    return (
        '<div id="gp-window" class="gp-box" style="top:10px;right:10px">'
        f'<form method="get" action="{escape(page.path)}">{hidden}'
        f'日期 day <input type="date" name="day" value="{page.day.isoformat()}"> '
        '<button type="submit">打开 Open</button></form></div>'
    )


def track_map(page: TrackPage) -> str:
    """The track replay page's HTML (local assets only)."""
    gcj02 = page.basemap == "amap"
    fmap = page.new_map()
    vector_tiles(
        f"/tiles/tracks/{{z}}/{{x}}/{{y}}.pbf?device={page.device['id']}"
        f"&day={page.day.isoformat()}" + ("&crs=gcj02" if gcj02 else ""),
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
            className="gp-stop",
            tooltip=f"停留 {i + 1}: {_china_clock(int(a))}–{_china_clock(int(b))} "
            f"({(b - a) / 6e7:.0f} min)",
        ).add_to(stops)
    stops.add_to(fmap)
    folium.LayerControl(position="topleft", collapsed=True).add_to(fmap)
    PageAssets().add_to(fmap)
    km = (
        float(haversine_m(page.lon[:-1], page.lat[:-1], page.lon[1:], page.lat[1:]).sum()) / 1e3
        if len(page.time_us) > 1
        else 0.0
    )
    add_html(fmap, folium.Element(_summary(page, km)))
    add_html(fmap, folium.Element(_day_form(page)))
    return render(fmap, title="GridPatrol · 轨迹回放 Track replay")
