"""The map page builders: local assets only, one basemap, GCJ-02 conversion for AMap only,
vector tiles for the large layers, bilingual legends."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from gis.crs import wgs84_to_gcj02
from gis.maps_common import basemap_switcher, page_map, to_display
from gis.maps_coverage import CoveragePage, coverage_map
from gis.maps_dispatch import DispatchPage, dispatch_map
from gis.maps_track import TrackPage, replay_geojson, track_map
from gis.palette import COVERAGE_CLASSES
from gis.stops import detect_stops

EXTERNAL_ASSET = re.compile(r'<(?:script|link)\b[^>]*(?:src|href)="(?:https?:)?//', re.IGNORECASE)
BOUNDS = (116.0, 43.9, 116.3, 44.1)


def _config(html: str) -> dict[str, object]:
    match = re.search(r"window\.GP_CONFIG = (\{.*?\});</script>", html)
    assert match, "the page sets GP_CONFIG"
    config: dict[str, object] = json.loads(match.group(1))
    return config


def _dispatch(basemap: str = "osm") -> str:
    return dispatch_map(
        DispatchPage(
            bounds=BOUNDS,
            basemap=basemap,
            tianditu_key=None,
            path="/maps/dispatch",
            query=[("basemap", basemap)],
            csrf="csrf-of-the-session",
            layout_id=7,
            refresh_s=5,
        )
    )


def test_dispatch_page_is_offline_safe_with_live_layers() -> None:
    html = _dispatch()
    assert not EXTERNAL_ASSET.search(html)
    assert "/static/vendor/leaflet-realtime.js" in html
    assert "/static/vendor/Leaflet.VectorGrid.bundled.min.js" in html
    assert "/static/maps/gridpatrol.js" in html
    assert html.count("L.realtime(") == 2  # vehicles and incidents
    # changes are pushed (Server-Sent Events); the layers poll only as a slow safety net
    assert '"start": false' in html
    assert '"interval": 60000' in html
    assert "/tiles/grids/{z}/{x}/{y}.pbf?layout=7" in html
    config = _config(html)
    assert config["streamUrl"] == "/api/v1/live/stream"
    assert config["transport"] == "stream"  # ?live=poll: snapshots every refreshS instead
    assert config["refreshS"] == 5
    assert config["vehiclesUrl"] == "/api/v1/live/vehicles"
    # the snapshot is fetched while the scripts load: preloaded from the head, before them
    preload = '<link rel="preload" href="/api/v1/live/vehicles" as="fetch" crossorigin="anonymous">'
    assert preload in html
    assert html.index(preload) < html.index("/static/vendor/leaflet-realtime.js")
    assert config["alertPointsUrl"] == "/api/v1/live/alert-points"  # clustered on the page
    assert "GP.startConsole(" in html
    assert config["gcj02"] is False
    assert config["csrf"] == "csrf-of-the-session"
    assert "token" not in config  # the bearer token never reaches the page's script
    assert str(config["map"]).startswith("map_")
    for element in ('id="gp-panel"', 'id="gp-search"', 'id="gp-legend"', 'id="gp-basemaps"'):
        assert element in html


def test_amap_pages_ask_for_gcj02_tiles_and_convert() -> None:
    html = _dispatch("amap")
    assert _config(html)["gcj02"] is True
    assert "layout=7&crs=gcj02" in html  # grids tiles; the live points convert in gridpatrol.js
    assert "webrd0{s}.is.autonavi.com" in html
    assert "tile.openstreetmap.org" not in html  # one basemap per page: no mixed datums


def _coverage(basemap: str) -> str:
    units = [
        {
            "code": "152502",
            "name_zh": "锡林浩特市",
            "grids": 8,
            "cells": 100,
            "seen_cells": 40,
            "coverage_pct": 40.0,
            "blind_cells": 60,
        },
    ]
    return coverage_map(
        CoveragePage(
            bounds=BOUNDS,
            basemap=basemap,
            tianditu_key="tk-test",
            path="/maps/coverage",
            query=[("from", "2026-11-17"), ("token", "gp_x")],
            layout={"id": 3, "name": "巡逻方格"},
            first=date(2026, 11, 17),
            last=date(2026, 11, 23),
            blind_days=7,
            units=units,
        )
    )


@pytest.mark.parametrize("basemap", ["osm", "tianditu", "amap"])
def test_colour_grid_map(basemap: str) -> None:
    html = _coverage(basemap)
    assert not EXTERNAL_ASSET.search(html)
    crs = "&crs=gcj02" if basemap == "amap" else ""
    assert f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout=3&from=2026-11-17&to=2026-11-23{crs}" in html
    for klass in COVERAGE_CLASSES:
        assert klass.colour in html
        assert klass.zh in html
        assert klass.en in html
    assert "网格覆盖率 Grid coverage" in html
    assert "盲区（近7天未巡） Blind spots (unseen in the last 7 d)" in html
    assert "40.0 %" in html  # the scope's total coverage
    config = _config(html)
    assert config["layout"] == 3
    assert config["to"] == "2026-11-23"
    assert config["blindDays"] == 7
    assert "gp_x" not in html  # the token never lands in links or forms
    if basemap == "tianditu":
        assert "tk=tk-test" in html


def _track_page(basemap: str) -> TrackPage:
    t = np.arange(0, 3600, 10, dtype=np.int64) * 1_000_000 + 1_795_000_000_000_000
    lon = np.where(np.arange(360) < 100, 116.0 + np.arange(360) * 1e-4, 116.01)
    lon = np.where(np.arange(360) > 200, 116.01 + (np.arange(360) - 200) * 1e-4, lon)
    lat = np.full(360, 44.0)
    return TrackPage(
        bounds=BOUNDS,
        basemap=basemap,
        tianditu_key=None,
        path="/maps/track",
        query=[("device", "5"), ("day", "2026-11-18")],
        device={"id": 5, "identifier": "sim-1", "plate": "蒙H·S0005", "name": "巡逻车"},
        day=date(2026, 11, 18),
        time_us=t,
        lon=lon,
        lat=lat,
        stops=detect_stops(t, lon, lat, min_duration_s=300, radius_m=50),
        stop_minutes=5,
        stop_radius_m=50,
    )


def test_track_replay_has_a_time_slider_and_the_stop() -> None:
    page = _track_page("osm")
    html = track_map(page)
    assert not EXTERNAL_ASSET.search(html)
    assert "L.timeDimension.layer.geoJson" in html
    assert "/tiles/tracks/{z}/{x}/{y}.pbf?device=5&day=2026-11-18" in html
    assert len(page.stops) == 1
    assert 'id="gp-stop-count">1<' in html
    assert html.count("gp-stop") >= 2  # the count and the marker's class
    trail = replay_geojson(page, gcj02=False)["features"][0]
    assert len(trail["properties"]["times"]) == len(trail["geometry"]["coordinates"]) == 360


def test_track_replay_offers_grids_stops_that_zoom_a_picker_and_gpx() -> None:
    page = replace(
        _track_page("amap"),
        layout_id=7,
        q="S00",
        hits=({"id": 5, "plate": "蒙H·S0005", "village": "<苏吉嘎查>", "freshness": "live"},),
        more_hits=3,
    )
    html = track_map(page)
    assert "/tiles/grids/{z}/{x}/{y}.pbf?layout=7&crs=gcj02" in html  # grids under the track
    assert "/static/maps/track.js" in html
    # a stop's row carries where it is on this basemap (GCJ-02 here), for the zoom
    gx, gy = wgs84_to_gcj02(page.stops.lon, page.stops.lat)
    assert f'data-lon="{gx[0]:.6f}" data-lat="{gy[0]:.6f}"' in html
    # the GPX link: the stored (WGS-84) track, whatever the basemap
    assert 'href="/maps/track.gpx?device=5&amp;day=2026-11-18"' in html
    assert 'href="/maps/track?device=5&amp;day=2026-11-18">蒙H·S0005</a>' in html
    assert "&lt;苏吉嘎查&gt;" in html  # escaped
    assert "3 more" in html
    none = replace(page, hits=(), more_hits=0, q="nothing")
    assert "no vehicle matches “nothing”" in track_map(none)
    unpicked = replace(
        page,
        device=None,
        time_us=page.time_us[:0],
        lon=page.lon[:0],
        lat=page.lat[:0],
        stops=detect_stops(
            page.time_us[:0], page.lon[:0], page.lat[:0], min_duration_s=300, radius_m=50
        ),
    )
    html = track_map(unpicked)
    assert "pick a vehicle" in html
    assert "/tiles/tracks/" not in html
    assert "gp-gpx" not in html


def test_track_replay_on_amap_is_drawn_in_gcj02() -> None:
    page = _track_page("amap")
    trail = replay_geojson(page, gcj02=True)["features"][0]["geometry"]["coordinates"]
    gx, gy = wgs84_to_gcj02(page.lon, page.lat)
    assert np.allclose(np.array(trail), np.c_[gx, gy], atol=2e-6)
    assert "&crs=gcj02" in track_map(page)


def test_to_display_converts_every_geometry_and_keeps_properties() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"coordinates": "kept"},
                "geometry": {"type": "Point", "coordinates": [116.0, 44.0]},
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [[[116.0, 44.0], [116.1, 44.0], [116.1, 44.1], [116.0, 44.0]]],
                        [
                            [[117.0, 45.0], [117.1, 45.0], [117.0, 45.1], [117.0, 45.0]],
                            [[117.01, 45.01], [117.02, 45.01], [117.01, 45.02], [117.01, 45.01]],
                        ],
                    ],
                },
            },
        ],
    }
    out = to_display(fc, gcj02=True)
    assert to_display(fc, gcj02=False) is fc
    assert out["features"][0]["properties"] == {"coordinates": "kept"}
    gx, gy = wgs84_to_gcj02(np.array([117.01]), np.array([45.02]))
    ring = out["features"][1]["geometry"]["coordinates"][1][1]
    assert ring[2] == pytest.approx([gx[0], gy[0]], abs=1e-6)
    assert fc["features"][0]["geometry"]["coordinates"] == [116.0, 44.0]  # input untouched


def test_basemap_switcher_keeps_the_query_but_not_the_token() -> None:
    html = basemap_switcher(
        "osm", "/maps/track", [("device", "5"), ("token", "gp_x")], tianditu=False
    )
    links = re.findall(r'href="([^"]+)"', html.render())
    assert [parse_qs(urlparse(link).query)["basemap"][0] for link in links] == ["amap"]
    assert all("token" not in link and "device=5" in link for link in links)


def test_page_map_refuses_unknown_basemaps() -> None:
    with pytest.raises(ValueError, match="osm, tianditu, amap"):
        page_map(BOUNDS, basemap="google", tianditu_key=None, switch_url="/", switch_params=[])


def test_colour_grid_map_at_a_coarser_level_colours_admin_areas_and_exports_the_view() -> None:
    units = [
        {
            "code": "152502001",
            "name_zh": "宝力根苏木",
            "grids": 4,
            "cells": 80,
            "seen_cells": 20,
            "coverage_pct": 25.0,
            "blind_cells": 60,
        },
    ]
    html = coverage_map(
        CoveragePage(
            bounds=BOUNDS,
            basemap="osm",
            tianditu_key=None,
            path="/maps/coverage",
            query=[("level", "township"), ("token", "gp_x"), ("basemap", "osm")],
            layout={"id": 3, "name": "巡逻方格", "status": "active"},
            first=date(2026, 11, 17),
            last=date(2026, 11, 23),
            blind_days=7,
            units=units,
            level="township",
            area="152502",
            layouts=[
                {"id": 3, "name": "巡逻方格", "status": "active"},
                {"id": 9, "name": "试点", "status": "draft"},
            ],
            note="窗口内无巡逻数据 · no patrol data in this window",
        )
    )
    config = _config(html)
    assert config["level"] == "township"
    assert config["digits"] == 9
    assert config["units"] == {
        "152502001": {k: v for k, v in units[0].items() if k not in ("code", "seen_cells")}
        | {"visits": None, "patrol_km": None, "dwell_h": None, "vehicles": None}
    }
    assert "/tiles/admin_areas/{z}/{x}/{y}.pbf?level=township" in html
    assert "/tiles/grids/" not in html  # the grids are not drawn at a coarser level
    assert "苏木乡镇 Township" in html
    for fmt in ("csv", "xlsx", "geojson"):  # the export asks for exactly this view
        assert (
            f'id="gp-export-{fmt}" href="/maps/coverage/export?level=township&amp;layout=3'
            f'&amp;from=2026-11-17&amp;to=2026-11-23&amp;area=152502&amp;format={fmt}"' in html
        )
    assert '<option value="9">试点 #9 · 草稿 draft</option>' in html
    assert 'id="gp-window-note"' in html
    assert "gp-empty-note" not in html
    assert "gp_x" not in html
    empty = coverage_map(
        CoveragePage(
            bounds=BOUNDS,
            basemap="osm",
            tianditu_key=None,
            path="/maps/coverage",
            query=[],
            layout={"id": 9, "name": "试点"},
            first=date(2026, 11, 17),
            last=date(2026, 11, 23),
            blind_days=7,
            units=[],
        )
    )
    assert "this layout has no grids in this view" in empty
    assert "gp-window-note" not in empty
