"""The planner page in chromium, basemaps blocked: a draft's grids drawn with their codes, a split
drawn on the page changes the draft through the API (one grid more, version + 1), validation
problems appear as red map features, a stale version is reported and reloaded, and activating
from the page makes the draft the active layout. Without a layout the page offers to clone the
active one.

Scene: a ``household`` layout of a township of 正镶白旗 (152529), made and staffed through the
API before the browser starts; the page's user is a planner scoped to that township.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import shape

from tests.api.layout_helpers import make_active_layout, small_township, staff_every_grid
from tests.browser.conftest import Chromium, api_get
from tests.conftest import auth

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
COUNTY = "152529"  # 正镶白旗
LOADED = "GP.planner && GP.planner.state.loaded"


@pytest.fixture(scope="module")
def scene(demo: str, client: TestClient, tokens: dict[str, str], make_token: Any) -> dict[str, Any]:
    township = small_township(demo, COUNTY)
    active = make_active_layout(client, tokens["planner"], township, name="规划页 planner page")
    draft = client.post(
        f"/api/v1/layouts/{active}/clone",
        json={"name": "页面草稿 page draft"},
        headers=auth(tokens["planner"]),
    ).json()
    return {
        "township": township,
        "active": active,
        "draft": draft["id"],
        "planner": make_token("planner", [township]),
    }


@pytest.fixture
def api(live_server: str, scene: dict[str, Any]) -> Iterator[httpx.Client]:
    """Plain HTTP to the live server (no event loop: Playwright's runs in this thread)."""
    with httpx.Client(
        base_url=live_server, headers=auth(scene["planner"]), timeout=60
    ) as http_client:
        yield http_client


# grids drawn from the tiles (a grid across a tile edge is drawn once in each tile)
DRAWN = """new Set(Array.from(document.querySelectorAll('path.gp-grid'))
  .map(p => p.getAttribute('class').match(/gp-grid-(\\d+)/)[1])).size"""


def _bounds(grids: list[dict[str, Any]]) -> list[list[float]]:
    """Leaflet bounds [[south, west], [north, east]] of the grids."""
    boxes = [shape(g["geometry"]).bounds for g in grids]
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return [[south, west], [north, east]]


def _loaded_again(page: Any) -> None:
    page.wait_for_function(f"{LOADED} && !GP.planner.state.busy", timeout=WAIT_MS)


def test_without_a_layout_the_page_offers_to_clone_the_active_one(
    scene: dict[str, Any], live_server: str, chromium: Chromium
) -> None:
    run = chromium.open("/maps/planner", scene["planner"])
    page = run.page
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    assert page.locator(f"a.gp-draft[href$='layout={scene['draft']}']").count() == 1
    page.locator("#gp-clone-name").fill("从页面复制 cloned on the page")
    page.locator(f".gp-clone[data-layout='{scene['active']}']").click()
    page.wait_for_url("**/maps/planner?layout=*", timeout=WAIT_MS)
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    clone = int(page.url.rsplit("=", 1)[1])
    body = api_get(live_server, scene["planner"], f"/api/v1/layouts/{clone}")
    assert (body["status"], body["cloned_from"], body["name"]) == (
        "draft",
        scene["active"],
        "从页面复制 cloned on the page",
    )
    assert page.evaluate(DRAWN) == body["grids"]
    run.screenshot("planner-cloned")
    assert run.errors == []
    assert run.blocked, "the basemap was requested (and blocked)"


def test_split_validate_conflict_and_activate_from_the_page(
    scene: dict[str, Any], api: httpx.Client, chromium: Chromium
) -> None:
    draft = scene["draft"]
    grids = api.get(f"/api/v1/layouts/{draft}/grids").json()["features"]
    run = chromium.open(f"/maps/planner?layout={draft}", scene["planner"])
    page = run.page
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    assert page.evaluate(DRAWN) == len(grids)
    # the draft comes as vector tiles; codes are written only when zoomed in
    assert page.evaluate("GP.map().getZoom()") < 13
    assert page.locator(".gp-code-label").count() == 0
    first = shape(grids[0]["geometry"]).representative_point()
    page.evaluate("([x, y]) => GP.map().setView(L.latLng(y, x), 14)", [first.x, first.y])
    page.wait_for_function("GP.planner.state.labels > 0", timeout=WAIT_MS)
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('.gp-code-label')).map(e => e.textContent)"
    )
    assert grids[0]["properties"]["code"] in labels
    assert set(labels) <= {g["properties"]["code"] for g in grids}
    run.screenshot("planner-labels")
    page.evaluate("b => GP.map().fitBounds(b)", _bounds(grids))
    page.wait_for_function("GP.planner.state.labels === 0", timeout=WAIT_MS)
    assert page.locator("#gp-version").inner_text() == "1"
    assert page.locator("path.gp-violation").count() == 0  # a staffed clone is valid
    run.screenshot("planner-draft")

    # select a grid by clicking it, then finish a line across it with Leaflet.draw's event
    target = grids[0]["properties"]["code"]
    geom = shape(grids[0]["geometry"])
    c = geom.centroid
    south, north = geom.bounds[1] - 0.01, geom.bounds[3] + 0.01
    page.locator(f"path.gp-grid-{target}").first.dispatch_event("click")
    assert page.locator("#gp-selected").inner_text() == target
    page.evaluate(
        "([a, b]) => GP.map().fire('draw:created', {layerType: 'polyline', "
        "layer: L.polyline([L.latLng(a[1], a[0]), L.latLng(b[1], b[0])])})",
        [[c.x, south], [c.x + 1e-4, north]],
    )
    page.wait_for_function("GP.planner.state.edits === 1", timeout=WAIT_MS)
    _loaded_again(page)
    layout = api.get(f"/api/v1/layouts/{draft}").json()
    assert (layout["grids"], layout["version"]) == (len(grids) + 1, 2)
    assert page.locator("#gp-version").inner_text() == "2"
    assert page.evaluate(DRAWN) == len(grids) + 1
    # the new grid has no worker yet: a red violation on the map, its reason in the panel
    assert page.locator("path.gp-violation").count() >= 1
    assert "no_worker" in page.locator("#gp-violations").inner_text()
    assert page.locator("path.gp-diff-added").count() == 1
    run.screenshot("planner-split")

    # someone else edits meanwhile: the page's next edit is refused (409), shown, reloaded
    other = grids[1]
    og = shape(other["geometry"])
    oc = og.centroid
    line = {
        "type": "LineString",
        "coordinates": [[oc.x, og.bounds[1] - 0.01], [oc.x + 1e-4, og.bounds[3] + 0.01]],
    }
    elsewhere = api.post(
        f"/api/v1/layouts/{draft}/edits/split",
        json={"version": 2, "code": other["properties"]["code"], "line": line},
    )
    assert elsewhere.status_code == 200, elsewhere.text
    village = grids[0]["properties"]["village_code"]
    pair = [g["properties"]["code"] for g in grids if g["properties"]["village_code"] == village]
    page.evaluate("codes => GP.planner.merge(codes)", pair[2:4])
    _loaded_again(page)
    assert "版本冲突 version conflict" in page.locator("#gp-message").inner_text()
    assert page.locator("#gp-version").inner_text() == "3"
    assert api.get(f"/api/v1/layouts/{draft}").json()["version"] == 3
    run.screenshot("planner-conflict")

    # staff the new grids, validate and activate with the buttons
    staff_every_grid(api, scene["planner"], draft)
    page.locator("#gp-validate").click()
    page.wait_for_function(
        "document.getElementById('gp-message').textContent.indexOf('校验通过') >= 0",
        timeout=WAIT_MS,
    )
    assert page.locator("path.gp-violation").count() == 0
    page.locator("#gp-activate").click()
    page.wait_for_function(
        "document.getElementById('gp-message').textContent.indexOf('已启用') >= 0",
        timeout=WAIT_MS,
    )
    assert api.get(f"/api/v1/layouts/{draft}").json()["status"] == "active"
    assert api.get(f"/api/v1/layouts/{scene['active']}").json()["status"] == "retired"
    assert page.locator("#gp-status").inner_text() == "active"
    run.screenshot("planner-activated")
    # the refused merge logged its 409 response; nothing else went wrong
    assert [e for e in run.errors if "409" not in e] == []
    assert run.blocked, "the basemap was requested (and blocked)"
    assert all("/static/" not in url for url in run.blocked)


@pytest.fixture(scope="module")
def story(demo: str, client: TestClient, tokens: dict[str, str], make_token: Any) -> dict[str, Any]:
    """Another township of the county (the one above is activated by the test before), its
    staffed active layout, and one more person in its first village to give a new grid."""
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT parent_code FROM admin_area WHERE level = 'village' AND code LIKE %s "
            "GROUP BY parent_code HAVING count(*) >= 2 ORDER BY count(*), parent_code "
            "OFFSET 1 LIMIT 1",
            (COUNTY + "%",),
        ).fetchone()
    assert row is not None
    township = str(row[0])
    active = make_active_layout(client, tokens["planner"], township, name="故事 story")
    grids = client.get(f"/api/v1/layouts/{active}/grids", headers=auth(tokens["planner"])).json()[
        "features"
    ]
    village = min(g["properties"]["village_code"] for g in grids)
    imported = client.post(
        "/api/v1/staff/import",
        params={"filename": "w.csv"},
        content=f"name,phone,village_code\n新网格员,18800{village[-6:]},{village}\n",
        headers=auth(tokens["planner"]),
    )
    assert imported.status_code == 200, imported.text
    people = client.get(
        "/api/v1/staff", params={"village": village}, headers=auth(tokens["planner"])
    ).json()
    staff = next(p["id"] for p in people if p["phone"] == f"18800{village[-6:]}")
    return {
        "township": township,
        "active": active,
        "village": village,
        "staff": staff,
        "planner": make_token("planner", [township]),
    }


def _message(page: Any, text: str) -> None:
    page.wait_for_function(
        f"document.getElementById('gp-message').textContent.indexOf({text!r}) >= 0",
        timeout=WAIT_MS,
    )


def test_the_whole_story_in_the_page(
    story: dict[str, Any], live_server: str, chromium: Chromium
) -> None:
    """Clone the active layout, split a grid, give the new grid its worker, validate, activate
    and roll back — every step a click or a drawing in the page — then abandon a draft."""
    planner = story["planner"]
    run = chromium.open("/maps/planner", planner)
    page = run.page
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    page.locator("#gp-clone-name").fill("故事草稿 story draft")
    page.locator(f".gp-clone[data-layout='{story['active']}']").click()
    page.wait_for_url("**/maps/planner?layout=*", timeout=WAIT_MS)
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    draft = int(page.url.rsplit("=", 1)[1])
    assert (
        api_get(live_server, planner, f"/api/v1/layouts/{draft}")["cloned_from"]
        == (story["active"])
    )
    grids = api_get(live_server, planner, f"/api/v1/layouts/{draft}/grids")["features"]
    assert page.evaluate(DRAWN) == len(grids)
    _message(page, "校验通过 valid")

    # split: select the grid with a click, draw a line across it
    target = next(g for g in grids if g["properties"]["village_code"] == story["village"])
    code = target["properties"]["code"]
    geom = shape(target["geometry"])
    c = geom.centroid
    page.locator(f"path.gp-grid-{code}").first.dispatch_event("click")
    page.evaluate(
        "([a, b]) => GP.map().fire('draw:created', {layerType: 'polyline', "
        "layer: L.polyline([L.latLng(a[1], a[0]), L.latLng(b[1], b[0])])})",
        [[c.x, geom.bounds[1] - 0.01], [c.x + 1e-4, geom.bounds[3] + 0.01]],
    )
    page.wait_for_function("GP.planner.state.edits === 1", timeout=WAIT_MS)
    _loaded_again(page)
    status = page.locator("#gp-message").inner_text()
    # saved, but not valid: the new grid has no worker — the status says so, not just "saved"
    assert "已保存 saved: v2" in status
    assert "校验未通过 invalid: 1" in status
    assert page.evaluate("GP.planner.state.validated") == ["*", story["village"]]
    assert "no_worker" in page.locator("#gp-violations").inner_text()
    after = api_get(live_server, planner, f"/api/v1/layouts/{draft}/grids")["features"]
    new = next(g["properties"]["code"] for g in after if not g["properties"]["worker"])
    run.screenshot("planner-story-split")

    # give the new grid its worker from the staff of its village
    page.locator(f"path.gp-grid-{new}").first.dispatch_event("click")
    assert page.locator("#gp-selected").inner_text() == new
    assert page.locator("#gp-worker-current").inner_text() == "无 none"
    page.wait_for_function(
        "document.querySelectorAll('#gp-worker-select option').length > 1", timeout=WAIT_MS
    )
    # the panel refills its staff list when the village's grids arrive: the choice must survive
    page.locator("#gp-worker-select").select_option(str(story["staff"]))
    page.evaluate("GP.planner.showWorker()")
    assert page.locator("#gp-worker-select").input_value() == str(story["staff"])
    page.locator("#gp-worker-assign").click()
    _message(page, "已指派 assigned")
    _loaded_again(page)
    assert "校验通过 valid" in page.locator("#gp-message").inner_text()
    assert page.locator("path.gp-violation").count() == 0
    assert page.locator("#gp-worker-current").inner_text().startswith("新网格员")
    grid = api_get(live_server, planner, f"/api/v1/grids/{new}?layout={draft}")
    assert grid["worker_id"] == story["staff"]
    run.screenshot("planner-story-worker")

    # validate the whole draft, activate, roll back
    page.locator("#gp-validate").click()
    _message(page, "校验通过 valid")
    page.locator("#gp-activate").click()
    _message(page, "已启用 active")
    assert api_get(live_server, planner, f"/api/v1/layouts/{draft}")["status"] == "active"
    assert api_get(live_server, planner, f"/api/v1/layouts/{story['active']}")["status"] == (
        "retired"
    )
    assert page.locator("#gp-abandon").is_disabled()
    run.screenshot("planner-story-activated")
    page.locator("#gp-rollback").click()
    _message(page, "已回退 rolled back")
    assert api_get(live_server, planner, f"/api/v1/layouts/{story['active']}")["status"] == (
        "active"
    )
    assert api_get(live_server, planner, f"/api/v1/layouts/{draft}")["status"] == "retired"
    assert page.locator("#gp-status").inner_text() == "retired"
    run.screenshot("planner-story-rolled-back")
    assert run.errors == []


def test_a_draft_is_abandoned_from_the_page_after_a_confirmation(
    story: dict[str, Any], api: httpx.Client, live_server: str, chromium: Chromium
) -> None:
    planner = story["planner"]
    draft = api.post(
        f"/api/v1/layouts/{story['active']}/clone",
        json={"name": "放弃 to abandon"},
        headers=auth(planner),
    ).json()["id"]
    run = chromium.open(f"/maps/planner?layout={draft}", planner)
    page = run.page
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#gp-abandon").click()
    _message(page, "未放弃 kept")
    assert api_get(live_server, planner, f"/api/v1/layouts/{draft}")["status"] == "draft"
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#gp-abandon").click()
    page.wait_for_url("**/maps/planner", timeout=WAIT_MS)
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    gone = httpx.get(f"{live_server}/api/v1/layouts/{draft}", headers=auth(planner), timeout=30)
    assert gone.status_code == 404
    assert page.locator(f"a.gp-draft[href$='layout={draft}']").count() == 0
    run.screenshot("planner-abandoned")
    assert run.errors == []


@pytest.fixture(scope="module")
def league(
    demo: str, client: TestClient, tokens: dict[str, str], make_token: Any
) -> dict[str, Any]:
    """The league's active patrol layout (8,704 grids in the demo), one of its grids with the
    grid's centre and extent, a new person in that grid's village, and a league planner."""
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol' "
            "ORDER BY length(nbs_prefix(area_code)), id LIMIT 1"
        ).fetchone()
        assert row is not None
        active = int(row[0])
        grid = conn.execute(
            "SELECT code, village_code, ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)), "
            "ST_YMin(geom), ST_YMax(geom) FROM grid WHERE layout_id = %s AND code LIKE %s "
            "ORDER BY area_m2 DESC LIMIT 1",
            (active, COUNTY + "%"),
        ).fetchone()
        assert grid is not None
    code, village, x, y, south, north = grid
    # other tests may have left a grid of the league layout without its worker: staff them,
    # so the draft is one worker short only where this test splits
    staff_every_grid(client, tokens["planner"], active, phone_prefix="17")
    imported = client.post(
        "/api/v1/staff/import",
        params={"filename": "league.csv"},
        content=f"name,phone,village_code\n盟网格员,18700{village[-6:]},{village}\n",
        headers=auth(tokens["planner"]),
    )
    assert imported.status_code == 200, imported.text
    people = client.get(
        "/api/v1/staff", params={"village": village}, headers=auth(tokens["planner"])
    ).json()
    staff = next(p["id"] for p in people if p["phone"] == f"18700{village[-6:]}")
    return {
        "active": active,
        "code": code,
        "village": village,
        "centre": (x, y),
        "span": (south, north),
        "staff": staff,
        "planner": make_token("planner", ["1525"]),
    }


def test_a_league_planner_redraws_the_league_layout_in_the_page(
    league: dict[str, Any], demo: str, live_server: str, chromium: Chromium
) -> None:
    """The issue's story at league scale: clone the league's patrol layout, split a grid, give
    the new grid its worker, activate (the whole draft validated once) and roll back — all in
    the page, the draft drawn from vector tiles."""
    long_wait = 240_000  # activation validates all 8,704 grids of the draft
    run = chromium.open("/maps/planner", league["planner"])
    page = run.page
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    page.locator("#gp-clone-name").fill("盟草稿 league draft")
    page.locator(f".gp-clone[data-layout='{league['active']}']").click()
    page.wait_for_url("**/maps/planner?layout=*", timeout=WAIT_MS)
    page.wait_for_function(LOADED, timeout=WAIT_MS)
    draft = int(page.url.rsplit("=", 1)[1])
    assert (
        api_get(live_server, league["planner"], f"/api/v1/layouts/{draft}")["cloned_from"]
        == league["active"]
    )
    # zoom to the grid: drawn from the draft's tiles, selected with a click
    code = league["code"]
    x, y = league["centre"]
    page.evaluate("([x, y]) => GP.map().setView(GP.latLng(x, y), 12)", [x, y])
    page.locator(f"path.gp-grid-{code}").first.wait_for(state="attached", timeout=WAIT_MS)
    page.locator(f"path.gp-grid-{code}").first.dispatch_event("click")
    assert page.locator("#gp-selected").inner_text() == code
    south, north = league["span"]
    page.evaluate(
        "([a, b]) => GP.map().fire('draw:created', {layerType: 'polyline', "
        "layer: L.polyline([L.latLng(a[1], a[0]), L.latLng(b[1], b[0])])})",
        [[x, south - 0.01], [x + 1e-4, north + 0.01]],
    )
    page.wait_for_function("GP.planner.state.edits === 1", timeout=WAIT_MS)
    _loaded_again(page)
    status = page.locator("#gp-message").inner_text()
    assert "已保存 saved: v2" in status
    assert "校验未通过 invalid: 1" in status  # only the village was validated: its new grid
    assert page.evaluate("GP.planner.state.validated") == [league["village"]]
    with psycopg.connect(demo) as conn:
        new = conn.execute(
            "SELECT code FROM grid WHERE layout_id = %s AND worker_id IS NULL", (draft,)
        ).fetchall()
    assert [str(r[0])[:12] for r in new] == [league["village"]], new
    assert len(new) == 1
    new_code = str(new[0][0])
    page.locator(f"path.gp-grid-{new_code}").first.wait_for(state="attached", timeout=WAIT_MS)
    page.locator(f"path.gp-grid-{new_code}").first.dispatch_event("click")
    page.wait_for_function(
        "document.querySelectorAll('#gp-worker-select option').length > 1", timeout=WAIT_MS
    )
    page.locator("#gp-worker-select").select_option(str(league["staff"]))
    page.locator("#gp-worker-assign").click()
    _message(page, "已指派 assigned")
    _loaded_again(page)
    assert "校验通过 valid" in page.locator("#gp-message").inner_text()
    run.screenshot("planner-league-worker")
    page.locator("#gp-activate").click()
    page.wait_for_function(
        "document.getElementById('gp-message').textContent.indexOf('已启用 active') >= 0",
        timeout=long_wait,
    )
    planner = league["planner"]
    assert api_get(live_server, planner, f"/api/v1/layouts/{draft}")["status"] == "active"
    assert api_get(live_server, planner, f"/api/v1/layouts/{league['active']}")["status"] == (
        "retired"
    )
    run.screenshot("planner-league-activated")
    page.locator("#gp-rollback").click()
    page.wait_for_function(
        "document.getElementById('gp-message').textContent.indexOf('已回退 rolled back') >= 0",
        timeout=long_wait,
    )
    assert api_get(live_server, planner, f"/api/v1/layouts/{league['active']}")["status"] == (
        "active"
    )
    assert api_get(live_server, planner, f"/api/v1/layouts/{draft}")["status"] == "retired"
    assert run.errors == []
