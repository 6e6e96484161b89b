"""Pages load no script or stylesheet from the internet; basemaps are the only outside requests."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import pytest
from shapely.geometry import box

from gis import maps

EXTERNAL_ASSET = re.compile(r'<(?:script|link)\b[^>]*(?:src|href)="(?:https?:)?//', re.IGNORECASE)


def test_rendered_page_uses_only_local_assets() -> None:
    fmap = maps.base_map((44.0, 116.0), basemap="amap")
    areas = gpd.GeoDataFrame(
        {
            "code": ["152502100201"],
            "name_zh": ["测试嘎查"],
            "households": [120],
            "synthetic": [True],
        },
        geometry=[box(116.0, 44.0, 116.1, 44.1)],
        crs="EPSG:4326",
    )
    maps.admin_area_layer(areas, "village").add_to(fmap)
    html = maps.render(fmap, title="t")
    assert not EXTERNAL_ASSET.search(html)
    assert "/static/vendor/leaflet/leaflet.js" in html
    assert json.dumps("测试嘎查")[1:-1] in html  # folium escapes non-ASCII in GeoJSON
    assert "webrd0{s}.is.autonavi.com" in html  # basemap tiles may still come from outside


def test_an_asset_without_local_copy_is_refused() -> None:
    html = '<script src="https://cdn.example.com/unknown-plugin.js"></script>'
    with pytest.raises(maps.ExternalAssetError, match=r"unknown-plugin\.js"):
        maps.localize_assets(html)


def test_unknown_basemap() -> None:
    with pytest.raises(ValueError, match="osm, tianditu, amap"):
        maps.base_map((44.0, 116.0), basemap="google")
