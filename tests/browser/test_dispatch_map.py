"""The dispatcher's live map in chromium: simulated vehicles and the open incident appear,
clicking the incident lists ranked candidates, assigning one dispatches the incident through
the API; search finds grids and plates; on AMap everything is drawn in GCJ-02."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gis.crs import wgs84_to_gcj02
from tests.browser.conftest import Chromium, api_get, positions

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
# per vehicle marker: [on the vehicle canvas, on the map, alpha of the canvas pixel under it]
PAINTED = """(() => {
  const canvas = GP.vehicleCanvas, ctx = canvas._ctx, dpr = window.devicePixelRatio || 1;
  const out = [];
  GP.vehicles._container.eachLayer(l => {
    const p = GP.map().latLngToLayerPoint(l.getLatLng()).subtract(canvas._bounds.min);
    const px = ctx.getImageData(Math.round(p.x * dpr), Math.round(p.y * dpr), 1, 1).data;
    out.push([l.options.renderer === canvas, !!l._map, px[3]]);
  });
  return out;
})()"""


def test_assigning_from_the_map_dispatches_the_incident(
    patrol: dict[str, Any], live_server: str, chromium: Chromium
) -> None:
    run = chromium.open("/maps/dispatch", patrol["dispatcher"])
    page = run.page
    assert page.url.endswith("/maps/dispatch")  # the token moved to a cookie
    page.wait_for_function(f"GP.state.vehicles >= {len(patrol['devices'])}", timeout=WAIT_MS)
    # every vehicle is on the map's one vehicle canvas, and really painted there (the canvas
    # redraws on the next animation frame: waited for)
    n = len(patrol["devices"])
    page.wait_for_function(
        f"{PAINTED}.filter(r => r[0] && r[1] && r[2] > 0).length >= {n}", timeout=WAIT_MS
    )
    assert len(page.evaluate(PAINTED)) == n
    marker = page.locator(f"path.gp-incident-{patrol['incident']}")
    marker.wait_for(state="attached", timeout=WAIT_MS)
    marker.dispatch_event("click")
    page.locator("#gp-panel .gp-candidate").first.wait_for(timeout=WAIT_MS)
    rows = page.locator("#gp-panel .gp-candidate")
    assert rows.count() >= 1
    assert "min" in rows.first.inner_text()
    assert "km" in rows.first.inner_text()
    run.screenshot("dispatch-candidates")
    button = page.locator("#gp-panel .gp-assign").first
    key, chosen = button.get_attribute("data-key"), int(button.get_attribute("data-id") or 0)
    button.click()
    page.click("#gp-confirm-yes")  # every step is confirmed
    page.locator("#gp-assign-result .gp-ok").wait_for(timeout=WAIT_MS)
    incident = api_get(live_server, patrol["dispatcher"], f"/api/v1/incidents/{patrol['incident']}")
    body = incident.get("properties", incident)
    assert body["status"] == "dispatched"
    assert body[key] == chosen
    page.wait_for_function(
        f"document.querySelector('path.gp-incident-{patrol['incident']}')"
        ".getAttribute('fill') === '#2166ac'",
        timeout=WAIT_MS,
    )
    run.screenshot("dispatch-assigned")
    assert run.errors == []
    assert run.blocked, "the basemap was requested (and blocked)"


def test_search_finds_a_grid_and_a_plate(patrol: dict[str, Any], chromium: Chromium) -> None:
    run = chromium.open("/maps/dispatch", patrol["dispatcher"])
    page = run.page
    page.wait_for_function("GP.state.vehicles > 0", timeout=WAIT_MS)
    box = page.locator("#gp-search input[name=q]")
    box.fill(patrol["grid"])
    box.press("Enter")
    result = page.locator("#gp-search-result")
    page.wait_for_function(
        "document.getElementById('gp-search-result').textContent.indexOf('网格') >= 0",
        timeout=WAIT_MS,
    )
    assert patrol["grid"] in result.inner_text()
    assert page.evaluate("GP.searchLayer.getLayers().length") == 1
    plate = patrol["devices"][0][2]
    box.fill(plate)
    box.press("Enter")
    page.wait_for_function(
        "document.getElementById('gp-search-result').textContent.indexOf('车辆') >= 0",
        timeout=WAIT_MS,
    )
    assert plate in result.inner_text()
    box.fill("no-such-thing")
    box.press("Enter")
    page.wait_for_function(
        "document.getElementById('gp-search-result').textContent.indexOf('未找到') >= 0",
        timeout=WAIT_MS,
    )
    run.screenshot("dispatch-search")
    assert run.errors == []


def test_on_amap_vehicles_are_drawn_in_gcj02(
    patrol: dict[str, Any], live_server: str, chromium: Chromium
) -> None:
    run = chromium.open("/maps/dispatch?basemap=amap", patrol["dispatcher"])
    page = run.page
    page.wait_for_function(f"GP.state.vehicles >= {len(patrol['devices'])}", timeout=WAIT_MS)
    drawn = page.evaluate(
        "(() => { const out = []; GP.vehicles._container.eachLayer(l => out.push("
        "[l.feature.properties.id, l.getLatLng().lng, l.getLatLng().lat])); return out; })()"
    )
    # where they are now (an earlier test may have driven one)
    now = api_get(live_server, patrol["dispatcher"], "/api/v1/live/vehicles")["vehicles"]
    stored = {v["id"]: (v["lon"], v["lat"]) for v in now}
    assert set(stored) == set(positions(patrol["devices"]))
    assert {d[0] for d in drawn} == set(stored)
    for device, lng, lat in drawn:
        x, y = stored[device]
        gx, gy = wgs84_to_gcj02(np.array([x]), np.array([y]))
        # the API gives 6 decimals (≈ 0.1 m); the page converts those exactly
        assert lng == pytest.approx(gx[0], abs=2e-6)
        assert lat == pytest.approx(gy[0], abs=2e-6)
        assert abs(lng - x) > 1e-3  # really shifted (≈ 600 m in Xilingol)
    # the page's converter is the same formula as gis.crs, to the last bits
    for lon, lat in [(116.07, 43.93), (111.5, 41.9), (119.8, 46.6)]:
        js = page.evaluate(f"GP.wgs84ToGcj02({lon}, {lat})")
        gx, gy = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
        assert js == pytest.approx([gx[0], gy[0]], abs=1e-12)
        back = page.evaluate(f"GP.gcj02ToWgs84({js[0]}, {js[1]})")
        assert back == pytest.approx([lon, lat], abs=1e-9)
    assert any("autonavi.com" in url for url in run.blocked)
    run.screenshot("dispatch-amap")
    assert run.errors == []
