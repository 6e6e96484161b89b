"""Every map page loads in chromium without a JavaScript error while every request that does
not go to our server is blocked (basemaps), and draws its features anyway; the colour grid map
shows a grid's coverage and blind spots on click; track replay has its slider and stops."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import numpy as np
import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.protocols.gpx import parse_gpx
from gis.palette import COVERAGE_CLASSES
from gis.stops import detect_stops
from gis.units import china_day_bounds
from tests.browser.conftest import TOWNSHIP_OF, Chromium
from tests.conftest import auth

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
VECTOR_PATHS = "svg.leaflet-tile path"
ANY_VECTOR_PATH = f"document.querySelectorAll('{VECTOR_PATHS}').length > 0"
GRID_NAME = "巡逻测试网格甲"  # a grid's name the colour grid map's story searches by


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
    # the patrolled grids in a colour of their class (gis.palette), once their tiles are drawn
    patrolled = json.dumps([k.colour for k in COVERAGE_CLASSES[1:]])
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('{VECTOR_PATHS}'))"
        f".some(p => {patrolled}.includes(p.getAttribute('fill')))",
        timeout=WAIT_MS,
    )
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
    # a browser in another zone still replays in China time (北京时间), within the day's fixes
    run = chromium.open(path, patrol["viewer"], timezone_id="America/New_York")
    page = run.page
    page.locator(".leaflet-bar-timecontrol").wait_for(timeout=WAIT_MS)
    assert page.locator("#gp-stop-count").inner_text() == str(len(expected))
    assert page.locator("path.gp-stop").count() == len(expected)
    china = timezone(timedelta(hours=8))
    first, last = (datetime.fromtimestamp(rows[i][0] / 1e6, tz=china) for i in (0, -1))
    before = page.locator(".timecontrol-date").inner_text()
    page.locator(".timecontrol-forward").click()
    page.wait_for_function(
        f"document.querySelector('.timecontrol-date').textContent !== {before!r}",
        timeout=WAIT_MS,
    )
    for shown in (before, page.locator(".timecontrol-date").inner_text()):
        assert shown.endswith("北京时间"), shown
        stamp = shown.removesuffix("北京时间").strip() + " +0800"
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z")
        assert first - timedelta(minutes=1) <= at <= last + timedelta(minutes=1), shown
    page.wait_for_function(
        ANY_VECTOR_PATH, timeout=WAIT_MS
    )  # the whole day's track, as vector tiles
    run.screenshot("track-replay")
    assert run.errors == []


@pytest.fixture(scope="module")
def outsider(make_token: Any) -> str:
    """A viewer of another banner (made before the browser starts its event loop)."""
    token: str = make_token("viewer", ["152501"])
    return token


def test_track_replay_story_pick_a_vehicle_grids_stops_and_gpx(
    patrol: dict[str, Any], demo: str, live_server: str, outsider: str, chromium: Chromium
) -> None:
    """A viewer opens track replay without a device id, finds the vehicle by part of its plate
    (only vehicles of their township offered), sees the track over the active grids, replays
    at a speed said in words, zooms to a stop from its row and downloads the track as GPX —
    every stored fix of that day, in WGS-84 even on the GCJ-02 basemap."""
    device, plate = patrol["devices"][0][0], patrol["devices"][0][2]
    day = _track_path(patrol).rsplit("day=", 1)[1]
    run = chromium.open(f"/maps/track?day={day}", patrol["viewer"])
    page = run.page
    offered = [int(a.get_attribute("data-device") or 0) for a in page.locator(".gp-hit").all()]
    assert offered
    with psycopg.connect(demo, autocommit=True) as db:
        villages = dict(
            db.execute(
                "SELECT id, home_village FROM device WHERE id = ANY(%s)", (offered,)
            ).fetchall()
        )
    assert all(str(villages[d]).startswith(patrol["township"][:9]) for d in offered)
    page.fill("#gp-pick-vehicle input[name=q]", plate[-4:])
    page.click("#gp-pick-vehicle button")
    page.locator(f".gp-hit[data-device='{device}']").click()
    page.locator(".leaflet-bar-timecontrol").wait_for(timeout=WAIT_MS)
    assert f"device={device}" in page.url
    assert plate in page.locator("#gp-summary").inner_text()
    # the active layout's grids under the track
    page.wait_for_function(
        "performance.getEntriesByType('resource').some(r => r.name.includes('/tiles/grids/'))",
        timeout=WAIT_MS,
    )
    page.wait_for_function(ANY_VECTOR_PATH, timeout=WAIT_MS)
    speed = page.locator(".timecontrol-speed .speed").inner_text()
    assert "min/s" in speed
    assert "fps" not in speed
    stops = page.locator(".gp-stop-row")
    if stops.count():
        row = stops.first
        row.click()
        lat, lon = (
            float(row.get_attribute("data-lat") or 0),
            float(row.get_attribute("data-lon") or 0),
        )
        centre = page.evaluate(
            "[GP.map().getCenter().lat, GP.map().getCenter().lng, GP.map().getZoom()]"
        )
        assert centre[0] == pytest.approx(lat, abs=1e-4)
        assert centre[1] == pytest.approx(lon, abs=1e-4)
        assert centre[2] >= 16
        page.locator(".leaflet-tooltip", has_text="停留 1").wait_for(timeout=WAIT_MS)
    run.screenshot("track-replay-story")
    with page.expect_download() as download:
        page.click("#gp-gpx")
    parsed = parse_gpx(download.value.path(), device="x")
    with psycopg.connect(demo, autocommit=True) as db:
        stored = db.execute(
            "SELECT (extract(epoch FROM fix_time) * 1e6)::bigint, lon, lat FROM position "
            "WHERE device_id = %s AND fix_time >= %s AND fix_time < %s ORDER BY fix_time",
            (device, *china_day_bounds(date.fromisoformat(day))),
        ).fetchall()
    assert len(parsed.fixes.time_us) == len(stored) > 0
    assert np.array_equal(parsed.fixes.time_us, [r[0] for r in stored])
    assert np.allclose(parsed.fixes.lon, [r[1] for r in stored], atol=1e-7)
    assert np.allclose(parsed.fixes.lat, [r[2] for r in stored], atol=1e-7)
    assert run.errors == []
    # on the GCJ-02 basemap the download is the same WGS-84 track
    amap = chromium.open(f"/maps/track?device={device}&day={day}&basemap=amap", patrol["viewer"])
    assert amap.page.locator("#gp-gpx").get_attribute("href") == (
        f"/maps/track.gpx?device={device}&day={day}"
    )
    # outside the scope: no track, no file
    refused = httpx.get(
        f"{live_server}/maps/track.gpx?device={device}&day={day}",
        headers=auth(outsider),
        timeout=30,
    )
    assert refused.status_code == 404
    assert "<trkpt" not in refused.text


@pytest.fixture(scope="module")
def coverage_story(
    patrol: dict[str, Any], demo: str, client: TestClient, make_token: Any
) -> Iterator[dict[str, Any]]:
    """A county leader (viewer of 苏尼特左旗), a second patrol layout of two grids in the patrol
    village, and a name on the patrol's grid to search it by (put back afterwards)."""
    county = TOWNSHIP_OF
    planner = make_token("planner", [county])
    made = client.post(
        "/api/v1/layouts",
        json={
            "name": "试点方案 pilot layout",
            "area": patrol["village"],
            "method": "balanced",
            "per_village": 2,
        },
        headers=auth(planner),
    )
    assert made.status_code == 201, made.text
    with psycopg.connect(demo, autocommit=True) as db:
        active, old_name = db.execute(
            "SELECT g.layout_id, g.name FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.code = %s",
            (patrol["grid"],),
        ).fetchone()  # type: ignore[misc]
        db.execute(
            "UPDATE grid SET name = %s WHERE layout_id = %s AND code = %s",
            (GRID_NAME, active, patrol["grid"]),
        )
        try:
            yield {
                "county": county,
                "leader": make_token("viewer", [county]),
                "pilot": made.json()["id"],
                "active": active,
            }
        finally:
            db.execute(
                "UPDATE grid SET name = %s WHERE layout_id = %s AND code = %s",
                (old_name, active, patrol["grid"]),
            )


def _reopened(page: Any, select: str, value: str) -> None:
    """Choose ``value`` in the view form's ``select``: the page reopens with it."""
    with page.expect_navigation():
        page.select_option(f"#gp-view-form select[name={select}]", value)
    page.wait_for_function(ANY_VECTOR_PATH, timeout=WAIT_MS)


def test_colour_grid_map_story_level_layout_search_and_export(
    patrol: dict[str, Any], demo: str, coverage_story: dict[str, Any], chromium: Chromium
) -> None:
    """A county leader opens the colour grid map, sees it by township, picks the pilot layout
    and back, finds a grid by part of its name (its popup opens with its worker), is told
    clearly when nothing matches, exports the view as CSV, XLSX and GeoJSON — every file holds
    exactly the county's grids of the view — and sees a window without data said so."""
    county, active = coverage_story["county"], coverage_story["active"]
    run = chromium.open("/maps/coverage", coverage_story["leader"])
    page = run.page
    page.wait_for_function(ANY_VECTOR_PATH, timeout=WAIT_MS)
    # level: townships, coloured from their figures; the table and the map say the level
    _reopened(page, "level", "township")
    assert page.evaluate("GP.cfg().level") == "township"
    units = page.evaluate("Object.keys(GP.cfg().units)")
    assert units
    assert all(len(code) == 9 and code.startswith(county) for code in units)
    assert "苏木乡镇 Township" in page.locator("#gp-summary").inner_text()
    coloured = page.evaluate(
        f"Array.from(document.querySelectorAll('{VECTOR_PATHS}'))"
        ".filter(p => p.getAttribute('fill') && p.getAttribute('fill') !== 'none').length"
    )
    assert coloured > 0
    run.screenshot("coverage-story-township")
    # layout: the pilot, then the active layout again (the level is kept)
    _reopened(page, "layout", str(coverage_story["pilot"]))
    assert page.evaluate("GP.cfg().layout") == coverage_story["pilot"]
    assert "试点方案" in page.locator("#gp-summary").inner_text()
    assert "level=township" in page.url
    _reopened(page, "layout", str(active))
    _reopened(page, "level", "grid")
    # search by part of a grid's name: zoomed to it, its popup open with its worker
    page.fill("#gp-find input[name=q]", GRID_NAME[2:])
    page.click("#gp-find button")
    page.wait_for_function(f"GP.state.found === {patrol['grid']!r}", timeout=WAIT_MS)
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for(timeout=WAIT_MS)
    assert patrol["grid"] in popup.inner_text()
    page.wait_for_function(
        "(document.querySelector('.leaflet-popup-content') || {}).textContent"
        ".indexOf('网格员 Worker…') < 0",
        timeout=WAIT_MS,
    )
    assert page.evaluate("GP.map().getZoom()") >= 12
    assert "(UTC+8)" in popup.inner_text()  # the patrolled grid's last patrol, China time
    run.screenshot("coverage-story-found")
    page.fill("#gp-find input[name=q]", "没有这个网格")
    page.click("#gp-find button")
    page.wait_for_function("GP.state.hits === 0", timeout=WAIT_MS)
    assert "未找到 no match" in page.locator("#gp-find-msg").inner_text()
    # export the view: exactly the county's grids of the active layout
    with psycopg.connect(demo, autocommit=True) as db:
        want = [
            r[0]
            for r in db.execute(
                "SELECT code FROM grid WHERE layout_id = %s AND code LIKE %s ORDER BY code",
                (active, county + "%"),
            ).fetchall()
        ]
    assert want
    files = {}
    for fmt in ("csv", "xlsx", "geojson"):
        with page.expect_download() as download:
            page.click(f"#gp-export-{fmt}")
        files[fmt] = download.value.path()
        assert download.value.suggested_filename.endswith(f".{fmt}")
    with files["csv"].open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [r["代码 Code"] for r in rows] == want
    assert {r["层级 Level"] for r in rows} == {"grid"}
    assert {r["网格方案 Layout"] for r in rows} == {str(active)}
    sheet = openpyxl.load_workbook(io.BytesIO(files["xlsx"].read_bytes())).active
    assert sheet is not None
    assert [r[4] for r in sheet.iter_rows(min_row=3, values_only=True) if r[0] == "grid"] == want
    with files["geojson"].open("rb") as f:
        collection = json.load(f)
    assert [feat["properties"]["code"] for feat in collection["features"]] == want
    assert all(feat["geometry"] for feat in collection["features"])
    run.screenshot("coverage-story-exported")
    assert run.errors == []
    # a window without data says so, in both languages
    future = chromium.open("/maps/coverage?from=2099-01-01&to=2099-01-07", coverage_story["leader"])
    note = future.page.locator("#gp-window-note").inner_text()
    assert "尚无数据" in note
    assert "no data yet" in note
    future.screenshot("coverage-story-future-window")
