"""Shared pieces of the map pages: one basemap with a switcher, GCJ-02 display conversion,
vector-tile layers, legends, page configuration and scripts.

A page draws on exactly one basemap. OpenStreetMap and 天地图 tiles are WGS-84/CGCS2000, so our
features go on them as stored; AMap tiles are GCJ-02, so on that basemap every feature is
converted for display (vector tiles with ``crs=gcj02``, GeoJSON here or in the page script) —
switching basemap reloads the page rather than mixing datums. Data stays WGS-84 everywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import folium
import numpy as np
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from folium.plugins import VectorGridProtobuf
from folium.template import Template

from gis import palette
from gis.crs import wgs84_to_gcj02
from gis.maps import BASEMAPS, add_html

SCRIPT = "/static/maps/gridpatrol.js"
STYLE = "/static/maps/gridpatrol.css"
BASEMAP_LABELS = {"osm": "OpenStreetMap", "tianditu": "天地图", "amap": "高德 AMap"}
# a vehicle's last fix: newer than VEHICLE_FRESH_S, older than VEHICLE_OFFLINE_S, or between
FRESHNESS_LABELS = {"live": "在线 live", "stale": "延迟 stale", "offline": "离线 offline"}
# grid outlines under live vehicles or a track (no fill: what is on top stays readable)
GRID_OUTLINE = "{fill: false, color: '#3b6e8f', weight: 0.8, opacity: 0.7}"
GRID_MIN_ZOOM = 9  # grid outlines from a county's view inwards (a league's are a solid mass)


@dataclass(frozen=True)
class MapPage:
    """What every map page has: where it opens (west, south, east, north; WGS-84), its basemap,
    and its own address and query (for the basemap switcher's links)."""

    bounds: tuple[float, float, float, float]
    basemap: str
    tianditu_key: str | None
    path: str
    query: list[tuple[str, str]]

    def new_map(self, *, min_zoom: int = 3) -> folium.Map:
        """The page's map on its basemap (see ``page_map``)."""
        return page_map(
            self.bounds,
            basemap=self.basemap,
            tianditu_key=self.tianditu_key,
            switch_url=self.path,
            switch_params=self.query,
            min_zoom=min_zoom,
        )


def page_map(
    bounds: tuple[float, float, float, float],
    *,
    basemap: str,
    tianditu_key: str | None,
    switch_url: str,
    switch_params: list[tuple[str, str]],
    min_zoom: int = 3,
) -> folium.Map:
    """A map fitted to ``bounds`` (west, south, east, north; WGS-84) on one basemap.

    Parameters
    ----------
    basemap
        ``osm``, ``tianditu`` (needs ``tianditu_key``) or ``amap`` (GCJ-02: features must be
        converted for display).
    switch_url, switch_params
        The page's path and query items, for the basemap switcher's links.
    """
    if basemap not in BASEMAPS:
        raise ValueError(f"unknown basemap {basemap!r}; choose one of {', '.join(BASEMAPS)}")
    west, south, east, north = bounds
    if basemap == "amap":
        xs, ys = wgs84_to_gcj02(np.array([west, east]), np.array([south, north]))
        west, east, south, north = float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1])
    fmap = folium.Map(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=8,
        tiles=None,
        control_scale=True,
        min_zoom=min_zoom,
    )
    spec = BASEMAPS[basemap]
    folium.TileLayer(
        tiles=spec["tiles"].replace("{key}", tianditu_key or ""),
        attr=spec["attr"],
        name=spec["name"],
        subdomains=spec.get("subdomains", "abc"),
        overlay=False,
        control=False,
        max_zoom=18,
    ).add_to(fmap)
    # Fitted at once: an animated fit would load every layer's tiles at ``zoom_start`` first
    # and then again at the fitted zoom (twice the tile requests before a page is usable).
    fitted = folium.map.FitBounds([[south, west], [north, east]])
    fitted.options["animate"] = False
    fitted.add_to(fmap)
    add_html(
        fmap, basemap_switcher(basemap, switch_url, switch_params, tianditu=bool(tianditu_key))
    )
    return fmap


def basemap_switcher(
    current: str, url: str, params: list[tuple[str, str]], *, tianditu: bool
) -> folium.Element:
    """Links reopening the page on another basemap (天地图 only when a key is set)."""
    kept = [(k, v) for k, v in params if k not in ("basemap", "token")]
    links = []
    for key, label in BASEMAP_LABELS.items():
        if key == "tianditu" and not tianditu:
            continue
        if key == current:
            links.append(f"<b>{label}</b>")
        else:
            href = url + "?" + urlencode([*kept, ("basemap", key)])
            links.append(f'<a href="{href}" data-basemap="{key}">{label}</a>')
    return folium.Element(
        '<div id="gp-basemaps" class="gp-box gp-bottomcentre">底图 Basemap: '
        + " · ".join(links)
        + "</div>"
    )


def page_config(fmap: folium.Map, config: dict[str, Any]) -> None:
    """``window.GP_CONFIG`` for the page script (read when the page's layers start)."""
    body = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
    fmap.get_root().header.add_child(  # type: ignore[attr-defined]
        folium.Element(f"<script>window.GP_CONFIG = {body};</script>")
    )


class PageAssets(JSCSSMixin):
    """Our page script and stylesheet, linked after every library the map's layers load
    (add it last; rendering appends its links to the page head in child order)."""

    def __init__(self, *scripts: str) -> None:
        super().__init__()
        self._name = "PageAssets"
        self.default_js = [(f"gp_js_{i}", url) for i, url in enumerate((SCRIPT, *scripts))]
        self.default_css = [("gp_css", STYLE)]


class PageScript(MacroElement):
    """JavaScript run after every layer of the map exists (add it last, after PageAssets)."""

    _template = Template("{% macro script(this, kwargs) %}{{ this.code }}{% endmacro %}")

    def __init__(self, code: str) -> None:
        super().__init__()
        self._name = "PageScript"
        self.code = code


def vector_tiles(
    url: str,
    *,
    name: str,
    layer: str,
    style: str,
    interactive: bool = False,
    show: bool = True,
    feature_id: str | None = None,
    pane: str = "overlayPane",
    min_zoom: int | None = None,
) -> VectorGridProtobuf:
    """A Leaflet.VectorGrid layer of our MVT endpoint (SVG renderer, cookie sent).

    Parameters
    ----------
    url
        Tile URL template (``/tiles/<layer>/{z}/{x}/{y}.pbf?…``).
    style
        JavaScript expression: a style object or ``function(properties, zoom)``.
    feature_id
        Property naming a feature, so the page can restyle it (``setFeatureStyle``).
    min_zoom
        No tiles asked for below this zoom (the layer is hidden there).
    """
    get_id = f"function (f) {{ return f.properties[{json.dumps(feature_id)}]; }}"
    options = (
        "{rendererFactory: L.svg.tile, maxNativeZoom: 18, "
        f"interactive: {'true' if interactive else 'false'}, pane: {json.dumps(pane)}, "
        "fetchOptions: {credentials: 'same-origin'}, "
        f"vectorTileLayerStyles: {{{json.dumps(layer)}: {style}}}"
        + (f", getFeatureId: {get_id}" if feature_id else "")
        + (f", minZoom: {int(min_zoom)}" if min_zoom is not None else "")
        + "}"
    )
    return VectorGridProtobuf(url, name=name, options=options, overlay=True, show=show)


def legend(element_id: str, title: str, rows: list[tuple[str, str]], *, note: str = "") -> str:
    """HTML of a legend box: ``rows`` of (CSS colour, label)."""
    items = "".join(
        f'<div class="gp-legend-row"><span class="gp-swatch" style="background:{colour}">'
        f"</span>{label}</div>"
        for colour, label in rows
    )
    extra = f'<div class="gp-note">{note}</div>' if note else ""
    return (
        f'<div id="{element_id}" class="gp-box gp-legend gp-bottomright">'
        f"<b>{title}</b>{items}{extra}</div>"
    )


def coverage_legend(blind_days: int) -> str:
    """The colour grid map's legend, in Chinese and English."""
    rows = [(k.colour, k.label) for k in palette.COVERAGE_CLASSES]
    rows.append((palette.BLIND_SWATCH_CSS, palette.blind_label(blind_days)))
    return legend("gp-legend", "网格覆盖率 Grid coverage", rows)


def to_display(geojson: dict[str, Any], *, gcj02: bool) -> dict[str, Any]:
    """A copy of a GeoJSON object with coordinates converted to GCJ-02 when ``gcj02`` (for AMap).

    Only for drawing: the result must never be stored or sent back as data.
    """
    if not gcj02:
        return geojson

    def convert(coords: Any) -> Any:
        if not coords:
            return coords
        if isinstance(coords[0], int | float):  # one position
            x, y = wgs84_to_gcj02(np.array(coords[:1]), np.array(coords[1:2]))
            return [round(float(x[0]), 7), round(float(y[0]), 7), *coords[2:]]
        if isinstance(coords[0][0], int | float):  # a list of positions
            arr = np.asarray([c[:2] for c in coords], dtype=np.float64)
            x, y = wgs84_to_gcj02(arr[:, 0], arr[:, 1])
            return [
                [round(float(a), 7), round(float(b), 7), *c[2:]]
                for a, b, c in zip(x, y, coords, strict=True)
            ]
        return [convert(c) for c in coords]

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "coordinates" in obj and "type" in obj:
                return {**obj, "coordinates": convert(obj["coordinates"])}
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    converted: dict[str, Any] = walk(geojson)
    return converted


def grid_outlines(layout_id: int, *, gcj02: bool) -> VectorGridProtobuf:
    """The layout's grids as thin outlines (vector tiles) under what a page is about.

    Only from ``GRID_MIN_ZOOM`` in: a league or county view holds thousands of grids,
    unreadable as outlines, and their tiles would queue ahead of the page's own data on the
    browser's six connections per server (the console's first paint was 7 s for the league).
    """
    crs = "&crs=gcj02" if gcj02 else ""
    return vector_tiles(
        f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout={layout_id}{crs}",
        name="网格 Grids",
        layer="grids",
        style=GRID_OUTLINE,
        min_zoom=GRID_MIN_ZOOM,
    )
