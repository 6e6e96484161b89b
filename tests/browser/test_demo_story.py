"""The dispatcher's story with the living demo, as issue 19 tells it: a township dispatcher signs
in at ``/``, goes to the console, creates an incident by clicking the map next to a demo vehicle,
assigns the top vehicle, and the demo vehicle drives there by itself (its terminal reports the
drive; nothing in this test posts a fix), the server detects the arrival, and the dispatcher
clears the incident. The demo fleet (``python -m api.demofleet``) runs in its own process
against the browser tests' server, in a township no other test drives in."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api import users
from api.auth import SYSTEM
from tests.browser.conftest import OUTPUT, Chromium, PageRun, _wait_without_eval, api_get
from tests.browser.test_front_door import PASSWORD, _sign_in
from tests.conftest import run
from tests.security.live import demo_fleet, demo_fleet_env, township

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
FROM_LAST = 2  # the league's third township from the end (test_demo_fleet uses the last two)


@pytest.fixture(scope="module")
def area(demo: str) -> str:
    """The league's third township from the end (test_demo_fleet drives in the last two)."""
    return township(demo, FROM_LAST)


@pytest.fixture(scope="module")
def fleet(
    demo: str, area: str, live_server: str, osmand_port: int, jt808_port: int
) -> Iterator[Path]:
    """Two demo vehicles of the township's first village (one OsmAnd phone, one JT/T 808
    terminal), a fix a second, driving to a call at 108 km/h; returns its log's path."""
    del live_server  # its listeners take the fleet
    env = demo_fleet_env(
        demo,
        osmand_port,
        jt808_port,
        area[:9],
        2,
        interval_s="1",
        shift_hours="1",
        gaps_per_h="0",
        history_days="0",
        incidents_per_hour="0",
        auto_assign_s="0",  # the dispatcher assigns
        errand_speed_kmh="108",
        dwell_s="120",
    )
    log_path = OUTPUT / "demo_story_fleet.log"
    with demo_fleet(env, log_path):
        yield log_path


async def _create_dispatcher(url: str, name: str, scope: list[str]) -> str:
    """A dispatcher with a password, as ``gridpatrol users add … --password`` makes one;
    returns the token it was also given (for the test's own API reads)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        user = await users.create_user(
            conn, SYSTEM, name, role="dispatcher", scope=scope, password=PASSWORD
        )
    return str(user.token)


def _live_vehicles(demo: str, township: str, log_path: Path) -> list[tuple[Any, ...]]:
    """The fleet's vehicles once both report live: (id, lon, lat, home village)."""
    deadline = time.monotonic() + 90
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(demo, autocommit=True) as db:
        while time.monotonic() < deadline:
            rows = db.execute(
                "SELECT d.id, s.lon, s.lat, d.home_village FROM device d "
                "JOIN device_state s ON s.device_id = d.id WHERE d.identifier LIKE %s "
                "AND s.protocol IN ('osmand', 'jt808') AND s.received_at > now() - interval '5 s'"
                " ORDER BY d.id",
                (f"sim-{township[:9]}%",),
            ).fetchall()
            if len(rows) == 2:
                return rows
            time.sleep(1)
    pytest.fail(f"the demo fleet is not live: {rows}\n{log_path.read_text()[-2000:]}")


def _place_near(demo: str, lon: float, lat: float, village: str) -> tuple[float, float]:
    """A point ≈ 400 m from the vehicle, inside its home village."""
    with psycopg.connect(demo, autocommit=True) as db:
        for bearing in range(0, 360, 30):
            east = 400 * math.sin(math.radians(bearing))
            north = 400 * math.cos(math.radians(bearing))
            x = lon + east / (111_195.0 * math.cos(math.radians(lat)))
            y = lat + north / 111_195.0
            inside = db.execute(
                "SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) FROM admin_area "
                "WHERE code = %s",
                (x, y, village),
            ).fetchone()
            if inside and inside[0]:
                return x, y
    return lon, lat + 400 / 111_195.0


@pytest.fixture(scope="module")
def dispatcher(demo: str, area: str) -> tuple[str, str]:
    """The township's dispatcher (name, token), made before Playwright holds the event loop."""
    name = f"story-{area}"
    return name, run(_create_dispatcher(demo, name, [area[:9]]))


def test_the_demo_vehicle_drives_to_the_call_it_was_assigned(
    demo: str,
    area: str,
    fleet: Path,
    dispatcher: tuple[str, str],
    live_server: str,
    chromium: Chromium,
) -> None:
    name, token = dispatcher
    vehicles = _live_vehicles(demo, area, fleet)
    ours = {int(v[0]) for v in vehicles}
    lon, lat = _place_near(demo, vehicles[0][1], vehicles[0][2], vehicles[0][3])

    # ---- sign in at the front door, then the console from the navigation bar
    context = chromium.browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN", timezone_id="Asia/Shanghai"
    )
    context.route(
        "**/*", lambda r: r.continue_() if r.request.url.startswith(live_server) else r.abort()
    )
    page = context.new_page()
    _wait_without_eval(page)  # the page's CSP refuses the eval behind wait_for_function
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{live_server}/", wait_until="load")
        _sign_in(PageRun(page=page), name)
        with page.expect_navigation():
            page.click("nav a[href='/maps/dispatch']")
        page.wait_for_function("GP.state.live === true && GP.state.vehicles >= 2", timeout=WAIT_MS)
        shown = page.evaluate("Object.keys(GP.vehicleRows).map(Number)")
        assert ours <= set(shown)
        homes = page.evaluate("Object.values(GP.vehicleRows).map(v => v.village)")
        assert all(h.startswith(area[:9]) for h in homes)  # nothing outside the scope

        # ---- the call: the place clicked on the map, the intake form filled
        page.evaluate(f"void GP.map().setView(GP.latLng({lon}, {lat}), 15, {{animate: false}})")
        page.click("#gp-pick")
        at = f"GP.map().latLngToContainerPoint(GP.latLng({lon}, {lat}))"
        box = "GP.map().getContainer().getBoundingClientRect()"
        x, y = page.evaluate(f"[{at}.x + {box}.left, {at}.y + {box}.top]")
        page.mouse.click(x, y)
        page.fill("#gp-intake input[name=caller]", "其其格")
        page.fill("#gp-intake input[name=phone]", "13947911000")
        page.fill("#gp-intake input[name=kind]", "牲畜走失 livestock missing")
        page.select_option("#gp-intake select[name=priority]", "2")
        page.click("#gp-create")
        page.locator("#gp-intake-result .gp-ok").wait_for(timeout=WAIT_MS)
        incident = int(page.evaluate("GP.state.created"))

        # ---- the top vehicle: widen the search until a vehicle ranks first (the grid level
        # offers the grid's worker first)
        page.locator("#gp-panel .gp-assign").first.wait_for(timeout=WAIT_MS)
        for _ in range(3):
            if page.locator("#gp-panel .gp-assign").first.get_attribute("data-key") == "device_id":
                break
            page.click("#gp-panel .gp-widen")
            page.click("#gp-confirm-yes")
            page.wait_for_timeout(1500)
        top = page.locator("#gp-panel .gp-assign").first
        assert top.get_attribute("data-key") == "device_id"
        chosen = int(top.get_attribute("data-id") or 0)
        assert chosen in ours, "the top vehicle is one of the demo fleet's"
        top.click()
        page.click("#gp-confirm-yes")
        page.locator("#gp-assign-result .gp-ok").wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(OUTPUT / "demo-story-1-assigned.png"))

        # ---- nobody posts a fix: the demo vehicle drives there and the page shows the arrival
        page.wait_for_function(
            "document.querySelector('#gp-panel .gp-status').textContent.indexOf('已到达') >= 0",
            timeout=120_000,
        )
        body = api_get(live_server, token, f"/api/v1/incidents/{incident}")
        assert body["status"] == "arrived"
        assert body["arrival_source"] == "fix"
        with psycopg.connect(demo, autocommit=True) as db:
            protocols = db.execute(
                "SELECT DISTINCT protocol FROM position WHERE device_id = %s "
                "AND fix_time >= %s::timestamptz",
                (chosen, body["dispatched_at"]),
            ).fetchall()
        assert {p for (p,) in protocols} <= {"osmand", "jt808"}  # its terminal, nobody else
        page.screenshot(path=str(OUTPUT / "demo-story-2-arrived.png"))

        # ---- cleared, with an outcome
        page.click("#gp-panel .gp-action-clear")
        page.fill("#gp-confirm-text", "牲畜已找回 found")
        page.click("#gp-confirm-yes")
        page.wait_for_function(
            "document.querySelector('#gp-panel .gp-status').textContent.indexOf('已处置') >= 0",
            timeout=WAIT_MS,
        )
        assert api_get(live_server, token, f"/api/v1/incidents/{incident}")["status"] == "cleared"
        assert errors == []
    finally:
        context.close()
