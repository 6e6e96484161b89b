"""Folium maps for people: basemaps, offline-safe assets, admin-area layers.

Pages must draw our features with no internet: every script and stylesheet is served from
``/static/vendor`` (see ``localize_assets``); only basemap tiles come from outside, and when they
fail the features still render on a plain background.
"""

from __future__ import annotations

import re
from typing import Any

import folium
import geopandas as gpd

VENDOR = "/static/vendor"

# CDN address (or its stable tail) → local copy; ``None`` drops an asset our pages do not use.
_ASSETS: dict[str, str | None] = {
    "leaflet.js": f"{VENDOR}/leaflet/leaflet.js",
    "leaflet.css": f"{VENDOR}/leaflet/leaflet.css",
    "jquery-3.7.1.min.js": f"{VENDOR}/jquery.min.js",
    "jquery.min.js": f"{VENDOR}/jquery.min.js",
    "jquery-ui.min.js": f"{VENDOR}/jquery-ui.min.js",
    "leaflet-realtime.js": f"{VENDOR}/leaflet-realtime.js",
    "leaflet.draw.js": f"{VENDOR}/draw/leaflet.draw.js",
    "leaflet.draw.css": f"{VENDOR}/draw/leaflet.draw.css",
    "leaflet.timedimension.min.js": f"{VENDOR}/leaflet.timedimension.min.js",
    "leaflet.timedimension.control.css": f"{VENDOR}/leaflet.timedimension.control.css",
    "iso8601.min.js": f"{VENDOR}/iso8601.js",
    "moment.min.js": f"{VENDOR}/moment.min.js",
    "Leaflet.VectorGrid.bundled.min.js": f"{VENDOR}/Leaflet.VectorGrid.bundled.min.js",
    "Leaflet.VectorGrid.bundled.js": f"{VENDOR}/Leaflet.VectorGrid.bundled.min.js",
    # bootstrap, glyphicons, font-awesome and awesome-markers style folium's icon markers,
    # which our pages do not use (circle markers instead).
    "bootstrap.bundle.min.js": None,
    "bootstrap.min.css": None,
    "bootstrap-glyphicons.css": None,
    "all.min.css": None,
    "leaflet.awesome-markers.js": None,
    "leaflet.awesome-markers.css": None,
    "leaflet.awesome.rotate.min.css": None,
    "default.min.css": None,
}
_TAG = re.compile(
    r'<(script|link)\b[^>]*?(?:src|href)="(https?:)?//[^"]+"[^>]*>(?:</script>)?', re.IGNORECASE
)
_URL = re.compile(r'(?:src|href)="((?:https?:)?//[^"]+)"')

BASEMAPS: dict[str, dict[str, Any]] = {
    "osm": {
        "tiles": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        "attr": "© OpenStreetMap contributors",
        "name": "OpenStreetMap",
        "crs": "wgs84",
    },
    "tianditu": {
        "tiles": "https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile"
        "&VERSION=1.0.0&LAYER=vec&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles"
        "&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={key}",
        "attr": "© 天地图 Tianditu (CGCS2000)",
        "name": "天地图 Tianditu",
        "subdomains": "01234567",
        "crs": "cgcs2000",
    },
    "amap": {
        "tiles": "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1"
        "&style=8&x={x}&y={y}&z={z}",
        "attr": "© 高德 AMap (GCJ-02)",
        "name": "高德 AMap (GCJ-02)",
        "subdomains": "1234",
        "crs": "gcj02",
    },
}


def _figure(fmap: folium.Map) -> folium.Figure:
    root = fmap.get_root()
    assert isinstance(root, folium.Figure)  # noqa: S101 - folium maps live in a Figure
    return root


def add_html(fmap: folium.Map, element: folium.Element) -> None:
    """Add a fixed HTML element (banner, legend) to the page body."""
    _figure(fmap).html.add_child(element)


class ExternalAssetError(ValueError):
    """A page references a script or stylesheet we have no local copy of."""


def localize_assets(html: str) -> str:
    """Point every CDN script/stylesheet of a folium page at ``/static/vendor``.

    Raises
    ------
    ExternalAssetError
        For an external asset with no local copy, so a new plugin cannot silently break the
        offline guarantee.
    """

    def swap(match: re.Match[str]) -> str:
        tag = match.group(0)
        url_match = _URL.search(tag)
        assert url_match is not None  # noqa: S101 - _TAG only matches tags with a URL
        url = url_match.group(1)
        name = url.rsplit("/", 1)[-1].split("?", 1)[0]
        if name not in _ASSETS:
            raise ExternalAssetError(f"no local copy of {url}; add it to tools/vendor-js.sh")
        local = _ASSETS[name]
        return "" if local is None else tag.replace(url, local)

    return _TAG.sub(swap, html)


def base_map(
    center: tuple[float, float],
    *,
    zoom: int = 7,
    basemap: str = "osm",
    tianditu_key: str | None = None,
) -> folium.Map:
    """A map with one chosen basemap (and the others switchable) on a neutral background.

    Parameters
    ----------
    center
        (lat, lon) in WGS-84 degrees.
    basemap
        ``osm``, ``tianditu`` or ``amap``. AMap tiles are GCJ-02: features drawn on it must be
        converted for display (never stored converted).
    """
    if basemap not in BASEMAPS:
        raise ValueError(f"unknown basemap {basemap!r}; choose one of {', '.join(BASEMAPS)}")
    fmap = folium.Map(location=list(center), zoom_start=zoom, tiles=None, control_scale=True)
    _figure(fmap).header.add_child(
        folium.Element("<style>.leaflet-container{background:#eef2f0}</style>")
    )
    order = [basemap] + [b for b in BASEMAPS if b != basemap]
    for key in order:
        spec = BASEMAPS[key]
        if key == "tianditu" and not tianditu_key:
            continue
        folium.TileLayer(
            tiles=spec["tiles"].replace("{key}", tianditu_key or ""),
            attr=spec["attr"],
            name=spec["name"],
            subdomains=spec.get("subdomains", "abc"),
            overlay=False,
            control=True,
            show=key == basemap,
            max_zoom=18,
        ).add_to(fmap)
    return fmap


LEVEL_STYLE: dict[str, dict[str, Any]] = {
    "county": {"color": "#b2182b", "weight": 2.5, "fillOpacity": 0.02},
    "township": {"color": "#2166ac", "weight": 1.5, "fillOpacity": 0.03, "dashArray": "4 3"},
    "village": {"color": "#1b7837", "weight": 0.7, "fillOpacity": 0.04},
}
LEVEL_LABEL = {
    "county": "旗县 Counties",
    "township": "苏木乡镇 Townships",
    "village": "嘎查村 Villages",
}


def admin_area_layer(areas: gpd.GeoDataFrame, level: str, *, show: bool = True) -> folium.GeoJson:
    """One admin level as a styled GeoJSON layer with Chinese names and a synthetic marker."""
    areas = areas.copy()
    areas["source_kind"] = areas["synthetic"].map({True: "合成 synthetic", False: "实测 real"})
    style = LEVEL_STYLE.get(level, LEVEL_STYLE["village"])
    return folium.GeoJson(
        areas[["code", "name_zh", "source_kind", "households", "geometry"]],
        name=f"{LEVEL_LABEL.get(level, level)}",
        show=show,
        style_function=lambda _feature: style,
        highlight_function=lambda _feature: {"weight": style["weight"] + 2, "fillOpacity": 0.2},
        tooltip=folium.GeoJsonTooltip(
            fields=["name_zh", "code", "source_kind", "households"],
            aliases=["名称 Name", "代码 Code", "来源 Source", "户数 Households"],
        ),
        zoom_on_click=False,
    )


def synthetic_banner(text: str) -> folium.Element:
    """A fixed banner that says what on the map is synthetic."""
    return folium.Element(
        '<div id="synthetic-banner" style="position:fixed;top:10px;left:60px;z-index:1000;'
        "background:#fff8e1;border:1px solid #f0b429;padding:6px 10px;font:13px sans-serif;"
        f'border-radius:4px;max-width:420px">{text}</div>'
    )


def render(fmap: folium.Map, *, title: str) -> str:
    """Full HTML page with local assets and a title."""
    figure = _figure(fmap)
    figure.title = title
    html = figure.render()
    return localize_assets(html)
