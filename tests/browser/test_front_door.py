"""The front door in chromium, every request to another host blocked: a township dispatcher
signs in at ``/`` with a name and password and reaches a home page whose cards and figures are
those of their role and scope (figures checked against SQL); an out-of-scope incident is the
HTML 404 page; a page opened without a session goes through sign-in and back; the map pages
carry the navigation bar above the map; ``/docs`` and ``/redoc`` render from our own copies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import ConsoleMessage, Route

from api import users
from api.auth import SYSTEM
from api.settings import MapSettings
from tests.browser.conftest import LOCAL_HOSTS, Chromium, PageRun, _wait_without_eval
from tests.conftest import auth, run

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
PASSWORD = "township-dispatch-1"
OUT_COUNTY = "152525"  # 东乌珠穆沁旗, outside the scene's township


async def _create(url: str, name: str, scope: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await users.create_user(
            conn, SYSTEM, name, role="dispatcher", scope=scope, password=PASSWORD
        )


@pytest.fixture(scope="module")
def front(patrol: dict[str, Any], demo: str, client: TestClient, make_token: Any) -> dict[str, Any]:
    """A township dispatcher with a password (made by the user service, as ``gridpatrol users
    add … --password`` does) and an incident in another county."""
    name = f"front-{patrol['township']}"
    run(_create(demo, name, [patrol["township"]]))
    with psycopg.connect(demo) as db:
        lon, lat = db.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM admin_area "
            "WHERE level = 'village' AND code LIKE %s ORDER BY code LIMIT 1) x",
            (OUT_COUNTY + "%",),
        ).fetchone()  # type: ignore[misc]
    made = client.post(
        "/api/v1/incidents",
        json={"kind": "front door elsewhere", "priority": 3, "lon": lon, "lat": lat},
        headers=auth(make_token("dispatcher", ["*"])),
    )
    assert made.status_code == 201, made.text
    return {"name": name, "outside_incident": made.json()["id"]}


@pytest.fixture
def browser_run(chromium: Chromium) -> Iterator[PageRun]:
    """A fresh browser context without a session; other hosts blocked, errors collected."""
    context = chromium.browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN", timezone_id="Asia/Shanghai"
    )
    page_run = PageRun(page=context.new_page())

    def route(r: Route) -> None:
        if urlparse(r.request.url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            page_run.blocked.append(r.request.url)
            r.abort()

    def console(message: ConsoleMessage) -> None:  # as conftest: not the blocked basemaps'
        origin = message.location.get("url", "") if message.location else ""
        if message.type == "error" and (not origin or urlparse(origin).hostname in LOCAL_HOSTS):
            page_run.errors.append(f"console: {message.text} ({origin})")

    context.route("**/*", route)
    _wait_without_eval(page_run.page)
    page_run.page.on("pageerror", lambda exc: page_run.errors.append(f"pageerror: {exc}"))
    page_run.page.on("console", console)
    try:
        yield page_run
    finally:
        context.close()


def _sign_in(page_run: PageRun, name: str) -> None:
    page = page_run.page
    page.locator("#gp-name").fill(name)
    page.locator("#gp-password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("form[action='/signin'] button[type=submit]").click()


def _expected_vehicles(demo: str, township: str) -> dict[str, str]:
    fresh, offline = MapSettings().vehicle_fresh_s, MapSettings().vehicle_offline_s
    with psycopg.connect(demo) as db:
        row = db.execute(
            "SELECT count(*) FILTER (WHERE a < %(f)s), "
            "count(*) FILTER (WHERE a >= %(f)s AND a < %(o)s), "
            "count(*) FILTER (WHERE a IS NULL OR a >= %(o)s), count(*) FROM ("
            "SELECT extract(epoch FROM now() - s.fix_time) a FROM device d "
            "LEFT JOIN device_state s ON s.device_id = d.id "
            "WHERE d.enabled AND d.kind = 'vehicle' AND d.home_village LIKE %(p)s) x",
            {"f": fresh, "o": offline, "p": township[:9] + "%"},
        ).fetchone()
        league = db.execute(
            "SELECT count(*) FROM device WHERE enabled AND kind = 'vehicle'"
        ).fetchone()
    assert row is not None
    assert league is not None
    keys = ("vehicles.online", "vehicles.stale", "vehicles.offline", "vehicles.total")
    return {**dict(zip(keys, map(str, row), strict=True)), "league": str(league[0])}


def test_a_township_dispatcher_signs_in_and_sees_the_home_page_of_their_scope(
    patrol: dict[str, Any], live_server: str, front: dict[str, Any], demo: str, browser_run: PageRun
) -> None:
    page = browser_run.page
    page.goto(f"{live_server}/", wait_until="load")
    page.locator("form[action='/signin']").wait_for(timeout=WAIT_MS)
    browser_run.screenshot("front-door-sign-in")
    _sign_in(browser_run, front["name"])
    assert urlparse(page.url).path == "/"
    page.locator(".gp-figures").first.wait_for(timeout=WAIT_MS)
    browser_run.screenshot("front-door-home")
    shown = {
        key: page.locator(f'[data-figure="{key}"] .gp-value').inner_text()
        for key in ("vehicles.online", "vehicles.stale", "vehicles.offline", "vehicles.total")
    }
    expected = _expected_vehicles(demo, patrol["township"])
    league = expected.pop("league")
    assert shown == expected
    assert int(shown["vehicles.online"]) >= len(patrol["devices"])  # the scene's live fleet
    assert int(shown["vehicles.total"]) < int(league)  # the township, not the league
    cards = page.locator("a.gp-card").evaluate_all("els => els.map(e => e.dataset.card)")
    assert {"dispatch", "coverage", "reports", "track", "devices", "docs"} <= set(cards)
    assert set(
        page.locator(".gp-card.gp-locked").evaluate_all("els => els.map(e => e.dataset.card)")
    ) == {"planner", "users"}
    assert front["name"] in page.locator("nav.gp-nav").inner_text()
    assert browser_run.errors == []
    assert browser_run.blocked == []  # the home page needs nothing from outside


def test_an_out_of_scope_incident_is_the_html_404_page(
    patrol: dict[str, Any], live_server: str, front: dict[str, Any], browser_run: PageRun
) -> None:
    page = browser_run.page
    base = live_server
    page.goto(f"{base}/", wait_until="load")
    _sign_in(browser_run, front["name"])
    response = page.goto(f"{base}/api/v1/incidents/{front['outside_incident']}")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    text = page.locator("main").inner_text()
    assert "未找到" in text
    assert "Not found" in text
    assert "数据权限" in text  # what to do
    assert page.locator("nav.gp-nav a[href='/']").count() >= 1
    browser_run.screenshot("front-door-404")
    own = page.goto(f"{base}/api/v1/incidents/{patrol['incident']}")
    assert own is not None
    assert own.status == 200  # the township's own incident is there (as JSON data)


def test_a_page_without_a_session_goes_through_sign_in_and_back(
    patrol: dict[str, Any], live_server: str, front: dict[str, Any], browser_run: PageRun
) -> None:
    page = browser_run.page
    base = live_server
    page.goto(f"{base}/maps/coverage", wait_until="load")
    assert urlparse(page.url).path == "/"
    assert re.search(r"next=%2Fmaps%2Fcoverage|next=/maps/coverage", page.url)
    page.locator("form[action='/signin']").wait_for(timeout=WAIT_MS)
    _sign_in(browser_run, front["name"])
    assert urlparse(page.url).path == "/maps/coverage"
    page.locator(".leaflet-container").wait_for(timeout=WAIT_MS)
    nav = page.locator("nav.gp-nav").bounding_box()
    mapbox = page.locator(".leaflet-container").bounding_box()
    title = page.locator(".gp-title, .gp-topleft").first.bounding_box()
    assert nav is not None
    assert mapbox is not None
    assert title is not None
    assert nav["y"] == 0
    assert mapbox["y"] >= nav["y"] + nav["height"] - 1  # the map starts below the bar
    assert title["y"] >= nav["height"]  # boxes placed at the top are not hidden by the bar
    assert mapbox["y"] + mapbox["height"] <= 800 + 1  # and ends within the window
    browser_run.screenshot("front-door-coverage-with-nav")
    assert browser_run.errors == []


@pytest.mark.parametrize(
    ("path", "ready"),
    [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id]")],
)
def test_api_docs_render_offline(
    patrol: dict[str, Any], live_server: str, path: str, ready: str, browser_run: PageRun
) -> None:
    page = browser_run.page
    page.goto(f"{live_server}{path}", wait_until="load")
    page.locator(ready).first.wait_for(timeout=WAIT_MS)
    assert page.locator(ready).count() > 10  # the operations of our API are listed
    assert "GridPatrol" in page.title()
    browser_run.screenshot(f"front-door-{path.strip('/')}")
    assert browser_run.blocked == []  # nothing was even asked of another host
    assert browser_run.errors == []
