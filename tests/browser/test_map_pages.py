"""Every map page loads in chromium without a JavaScript error while every request that does
not go to our server is blocked (basemaps), and draws its features anyway; the colour grid map
shows a grid's coverage and blind spots on click; track replay has its slider and stops."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from gis.stops import detect_stops
from tests.browser.conftest import Chromium

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
VECTOR_PATHS = "svg.leaflet-tile path"
ANY_VECTOR_PATH = f"document.querySelectorAll('{VECTOR_PATHS}').length > 0"


def _track_path(patrol: dict[str, Any]) -> str:
    device, fix_time = patrol["devices"][0][0], patrol["devices"][0][5]
    day = (fix_time.astimezone(UTC) + timedelta(hours=8)).date()
    return f"/maps/track?device={device}&day={day.isoformat()}"


@pytest.mark.parametrize(
    ("name", "path", "who"),
    [
        ("admin-areas", "/map", "viewer"),
        ("dispatch", "/maps/dispatch", "dispatcher"),
        ("dispatch-tianditu", "/maps/dispatch?basemap=tianditu", "dispatcher"),
        ("coverage", "/maps/coverage", "viewer"),
        ("coverage-amap", "/maps/coverage?basemap=amap", "viewer"),
        ("coverage-league", "/maps/coverage", "league_viewer"),
        ("track", "track", "viewer"),
        ("track-amap", "track&basemap=amap", "viewer"),
    ],
)
def test_pages_load_offline_without_errors(
    patrol: dict[str, Any], name: str, path: str, who: str, chromium: Chromium
) -> None:
    if path.startswith("track"):
        path = _track_path(patrol) + path.removeprefix("track")
    run = chromium.open(path, patrol[who])
    page = run.page
    page.locator(".leaflet-container").wait_for(timeout=WAIT_MS)
    if name != "admin-areas":
        page.wait_for_function(ANY_VECTOR_PATH, timeout=WAIT_MS)
    else:
        page.locator(".leaflet-overlay-pane path").first.wait_for(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    run.screenshot(f"page-{name}")
    assert run.errors == []
    assert run.blocked, "the basemap was requested (and blocked)"
    assert all("/static/" not in url for url in run.blocked)  # no asset comes from outside
    if "tianditu" in name:
        assert any("tianditu.gov.cn" in url and "tk=browser-test-key" in url for url in run.blocked)
    if "amap" in name:
        assert any("autonavi.com" in url for url in run.blocked)


def test_colour_grid_map_shows_coverage_and_blind_spots(
    patrol: dict[str, Any], demo: str, chromium: Chromium
) -> None:
    run = chromium.open("/maps/coverage", patrol["viewer"])
    page = run.page
    page.wait_for_function(ANY_VECTOR_PATH, timeout=WAIT_MS)
    legend = page.locator("#gp-legend").inner_text()
    for label in ("网格覆盖率", "Grid coverage", "未巡逻", "not patrolled", "盲区", "Blind spot"):
        assert label in legend
    colours = page.evaluate(
        f"Array.from(new Set(Array.from(document.querySelectorAll('{VECTOR_PATHS}'))"
        ".map(p => p.getAttribute('fill'))))"
    )
    assert set(colours) & {"#67000d", "#d7301f", "#fc8d59", "#fee08b", "#91cf60", "#1a9850"}
    grid = page.locator(f"{VECTOR_PATHS}.leaflet-interactive").nth(
        page.locator(f"{VECTOR_PATHS}.leaflet-interactive").count() // 2
    )
    box = grid.bounding_box()
    assert box is not None
    # the click goes to the grid's own path (a mouse click at its box centre may miss a
    # non-convex grid or fall outside the viewport); Leaflet places the popup at the coordinates
    grid.dispatch_event(
        "click", {"clientX": box["x"] + box["width"] / 2, "clientY": box["y"] + box["height"] / 2}
    )
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for(timeout=WAIT_MS)
    text = popup.inner_text()
    assert "覆盖率 Coverage" in text
    assert "盲区 Blind cells" in text
    page.wait_for_function(
        "document.querySelectorAll('path.gp-blind').length > 0", timeout=WAIT_MS
    )  # nobody patrolled here this week: all blind
    # the grid's worker, name and phone, from the scoped grid API (not from the public tiles)
    page.wait_for_function(
        "(document.querySelector('.leaflet-popup-content') || {}).textContent"
        ".indexOf('网格员 Worker…') < 0",
        timeout=WAIT_MS,
    )
    worker = popup.locator("tr", has_text="网格员 Worker").inner_text()
    code = popup.locator("tr", has_text="网格 Grid").first.inner_text().split()[-1]
    layout = page.evaluate("GP.cfg().layout")
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT s.name, s.phone FROM grid g LEFT JOIN staff s ON s.id = g.worker_id "
            "WHERE g.code = %s AND g.layout_id = %s",
            (code, layout),
        ).fetchone()
    assert row is not None, (code, layout)
    if row[0] is None:
        assert "未配备 none assigned" in worker
    else:
        assert row[0] in worker
        assert row[1] in worker
    run.screenshot("coverage-blind-spots")
    assert run.errors == []


def test_track_replay_has_a_slider_and_the_stops(
    patrol: dict[str, Any], demo: str, chromium: Chromium
) -> None:
    path = _track_path(patrol)
    device = patrol["devices"][0][0]
    with psycopg.connect(demo, autocommit=True) as db:
        rows = db.execute(
            "SELECT (extract(epoch FROM fix_time) * 1e6)::bigint, lon, lat FROM position "
            "WHERE device_id = %s ORDER BY fix_time",
            (device,),
        ).fetchall()
    expected = detect_stops(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        min_duration_s=300,
        radius_m=50,
    )
    run = chromium.open(path, patrol["viewer"])
    page = run.page
    page.locator(".leaflet-bar-timecontrol").wait_for(timeout=WAIT_MS)
    assert page.locator("#gp-stop-count").inner_text() == str(len(expected))
    assert page.locator("path.gp-stop").count() == len(expected)
    before = page.locator(".timecontrol-date").inner_text()
    page.locator(".timecontrol-forward").click()
    page.wait_for_function(
        f"document.querySelector('.timecontrol-date').textContent !== {before!r}",
        timeout=WAIT_MS,
    )
    page.wait_for_function(
        ANY_VECTOR_PATH, timeout=WAIT_MS
    )  # the whole day's track, as vector tiles
    run.screenshot("track-replay")
    assert run.errors == []
