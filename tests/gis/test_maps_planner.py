"""The planner page's HTML: offline-safe (Leaflet.draw from /static/vendor), the draft's
configuration for planner.js, edit buttons only on drafts, a chooser without a layout."""

from __future__ import annotations

import json
import re
from typing import Any

from gis.maps_planner import PlannerPage, planner_map


def _page(**kw: Any) -> PlannerPage:
    return PlannerPage(
        bounds=(116.0, 43.5, 116.5, 44.0),
        basemap=kw.pop("basemap", "osm"),
        tianditu_key=None,
        path="/maps/planner",
        query=[("layout", "7")],
        csrf="csrf-of-the-session",
        **kw,
    )


def _layout(status: str = "draft") -> dict[str, Any]:
    return {
        "id": 7,
        "name": "规划调整 <b>redraw</b>",
        "purpose": "household",
        "area_code": "152524100000",
        "grids": 12,
        "status": status,
        "version": 3,
        "cloned_from": 5,
    }


def _config(html: str) -> dict[str, Any]:
    match = re.search(r"window\.GP_CONFIG = (\{.*?\});</script>", html)
    assert match
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_a_draft_gets_leaflet_draw_from_the_vendor_folder_and_its_version() -> None:
    html = planner_map(_page(layout=_layout()))
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/draw/leaflet.draw.js" in urls
    assert "/static/vendor/draw/leaflet.draw.css" in urls
    assert "/static/maps/planner.js" in urls
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))]
    config = _config(html)
    assert (config["layout"], config["version"], config["clonedFrom"]) == (7, 3, 5)
    assert config["csrf"] == "csrf-of-the-session"
    assert "token" not in config
    assert not config["gcj02"]
    assert 'id="gp-split"' in html
    assert 'id="gp-split" disabled' not in html
    assert "规划调整 &lt;b&gt;redraw&lt;/b&gt;" in html  # names are escaped
    for label in ("切分 Split", "重塑 Reshape", "合并 Merge", "校验 Validate", "启用 Activate"):
        assert label in html


def test_an_active_layout_is_shown_read_only() -> None:
    html = planner_map(_page(layout=_layout("active")))
    assert "leaflet.draw.js" not in html
    assert 'id="gp-activate" disabled' in html


def test_without_a_layout_the_page_lists_drafts_and_offers_clones() -> None:
    drafts = [{**_layout(), "id": 8}]
    actives = [{**_layout("active"), "id": 5}]
    html = planner_map(_page(drafts=drafts, actives=actives, basemap="amap"))
    assert 'href="/maps/planner?layout=8"' in html
    assert 'class="gp-clone" data-layout="5"' in html
    config = _config(html)
    assert config["layout"] is None
    assert config["gcj02"]
