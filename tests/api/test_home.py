"""The front door (issue 19): sign-in at ``/`` with a name and password, the home page's figures
counted inside the user's scope (checked against SQL), sign-out, the device and user pages, and
HTML errors for browsers while API clients keep their JSON.

Scene: 苏尼特右旗 (152524), where no other test puts devices: a township with a live, a stale
and a silent vehicle, a refused fix and an open incident, and a live vehicle in another
township of the county, which the township's dispatcher must not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from api import users
from api.auth import SYSTEM, csrf_token
from api.ratelimit import SignInLimiter
from api.settings import Settings
from api.web import next_path, prefers_html
from tests.conftest import auth, run

COUNTY = "152524"  # 苏尼特右旗
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ORIGIN = {"Origin": "http://testserver"}
PASSWORD = "front-door-pass-1"


@dataclass
class Scene:
    township: str
    other_township: str
    village: str
    name: str  # the township dispatcher (with a password)
    devices: dict[str, int]
    incident: int
    outside_incident: int
    fresh: list[dict[str, Any]]  # fixes that make the live vehicles live again
    admin: str


def _iso(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


async def _create_user(url: str, name: str, role: str, scope: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await users.create_user(conn, SYSTEM, name, role=role, scope=scope, password=PASSWORD)


@pytest.fixture(scope="module")
def scene(demo: str, client: TestClient, make_device: Any, make_token: Any) -> Scene:
    with psycopg.connect(demo, autocommit=True) as db:
        rows = db.execute(
            "SELECT DISTINCT ON (parent_code) parent_code, code, ST_X(p), ST_Y(p) FROM ("
            "SELECT parent_code, code, ST_PointOnSurface(geom) p FROM admin_area "
            "WHERE level = 'village' AND code LIKE %s) x ORDER BY parent_code, code LIMIT 2",
            (COUNTY + "%",),
        ).fetchall()
    (township, village, lon, lat), (other_township, other_village, olon, olat) = rows
    made = {}
    for key, home in (
        ("live", village),
        ("stale", village),
        ("silent", village),
        ("other", other_village),
    ):
        made[key] = make_device(home)
    fixes = [
        {"device": made["live"][0], "time": _iso(60), "lat": lat, "lon": lon},
        {"device": made["stale"][0], "time": _iso(1800), "lat": lat, "lon": lon},
        {"device": made["other"][0], "time": _iso(60), "lat": olat, "lon": olon},
        # a day ahead: refused (future) and quarantined under the live vehicle
        {"device": made["live"][0], "time": _iso(-86400), "lat": lat, "lon": lon},
    ]
    admin = make_token("admin", ["*"])
    stored = client.post("/api/v1/positions", json=fixes, headers=auth(admin))
    assert stored.status_code == 200, stored.text
    assert stored.json()["stored"] == 3, stored.text
    name = f"front-door-{township}"
    run(_create_user(demo, name, "dispatcher", [township]))
    league = make_token("dispatcher", ["*"])
    incident = client.post(
        "/api/v1/incidents",
        json={"kind": "front door 盗畜", "priority": 2, "lon": lon, "lat": lat},
        headers=auth(league),
    )
    outside = client.post(
        "/api/v1/incidents",
        json={"kind": "front door elsewhere", "priority": 3, "lon": olon, "lat": olat},
        headers=auth(league),
    )
    assert incident.status_code == outside.status_code == 201, (incident.text, outside.text)
    with psycopg.connect(demo, autocommit=True) as db:
        ids = dict(
            db.execute(
                "SELECT identifier, id FROM device WHERE identifier = ANY(%s)",
                ([ident for ident, _ in made.values()],),
            ).fetchall()
        )
    return Scene(
        township=township,
        other_township=other_township,
        village=village,
        name=name,
        devices={key: ids[ident] for key, (ident, _) in made.items()},
        incident=incident.json()["id"],
        outside_incident=outside.json()["id"],
        fresh=[fixes[0], fixes[2]],
        admin=admin,
    )


def _keep_live(client: TestClient, scene: Scene) -> None:
    """A new fix for the two live vehicles, so they are live whatever ran before."""
    fixes = [{**fix, "time": _iso(5)} for fix in scene.fresh]
    stored = client.post("/api/v1/positions", json=fixes, headers=auth(scene.admin))
    assert stored.json()["stored"] == 2, stored.text


@pytest.fixture
def browser(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The session's client acting as a browser: its cookies are cleared afterwards, so no
    session leaks into other tests (a GET with the cookie counts as signed in); its sign-ins
    spend a limiter of this test's own (the session's may be drained by the rate-limit tests)."""
    state = client.app.state._state  # type: ignore[attr-defined]
    monkeypatch.setitem(state, "login_limiter", SignInLimiter())
    client.cookies.clear()
    try:
        yield client
    finally:
        client.cookies.clear()


def _sign_in(client: TestClient, name: str, password: str = PASSWORD, **kw: Any) -> Any:
    return client.post(
        "/signin",
        data={"name": name, "password": password, **kw},
        headers={**HTML, **ORIGIN},
        follow_redirects=False,
    )


def _figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([\w.]+)"><div class="gp-value">([^<]*)<', html))


# ---- sign-in and sign-out -----------------------------------------------------------------------
def test_the_front_door_is_a_sign_in_form_without_a_session(browser: TestClient) -> None:
    page = browser.get("/", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/signin">' in page.text
    assert 'name="password"' in page.text
    assert "登录" in page.text
    assert "Sign in" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'class="gp-nav"' in page.text
    assert "/signout" not in page.text


def test_sign_in_sets_an_http_only_strict_cookie_and_returns_to_next(
    browser: TestClient, scene: Scene, db_url: str
) -> None:
    answer = _sign_in(browser, scene.name, next="/maps/coverage?from=2026-01-01")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/maps/coverage?from=2026-01-01"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("gp_token=gp_")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Max-Age=43200" in cookie
    token = browser.cookies["gp_token"]
    with psycopg.connect(db_url) as db:
        label = db.execute(
            "SELECT t.label, u.name FROM api_token t JOIN users u ON u.id = t.user_id "
            "WHERE u.name = %s AND t.revoked_at IS NULL AND t.expires_at > now() "
            "ORDER BY t.id DESC LIMIT 1",
            (scene.name,),
        ).fetchone()
    assert label == ("login", scene.name)
    me = browser.get("/api/v1/me")  # the cookie is a session for GETs
    assert me.json()["name"] == scene.name
    assert me.json()["scope"] == [scene.township[:9]]
    assert token not in browser.get("/", headers=HTML).text  # no page carries the token


def test_next_outside_this_server_goes_home(browser: TestClient, scene: Scene) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        assert _sign_in(browser, scene.name, next=target).headers["location"] == "/"


def test_a_wrong_password_shows_the_form_again_and_sets_no_cookie(
    browser: TestClient, scene: Scene
) -> None:
    answer = _sign_in(browser, scene.name, password="not-the-password")
    assert answer.status_code == 401
    assert "用户名或密码错误" in answer.text
    assert "Wrong user name or password" in answer.text
    assert "set-cookie" not in answer.headers
    assert f'value="{scene.name}"' in answer.text  # the name is kept, never the password


def test_a_cross_site_sign_in_form_is_refused(browser: TestClient, scene: Scene) -> None:
    """Login CSRF: another site's form must not sign this browser into an account."""
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
        {},  # neither Origin nor Referer
        {"Origin": "null"},  # an opaque origin, and no Sec-Fetch-Site to vouch for it
    ):
        answer = browser.post(
            "/signin",
            data={"name": scene.name, "password": PASSWORD},
            headers={**HTML, **headers},
            follow_redirects=False,
        )
        assert answer.status_code == 403, headers
        assert "set-cookie" not in answer.headers


def test_a_browser_posting_origin_null_from_our_page_is_accepted(
    browser: TestClient, scene: Scene
) -> None:
    """Our pages send ``Referrer-Policy: no-referrer``, so a browser posts their forms with
    ``Origin: null`` and no ``Referer``; ``Sec-Fetch-Site: same-origin`` vouches for them."""
    answer = browser.post(
        "/signin",
        data={"name": scene.name, "password": PASSWORD},
        headers={**HTML, "Origin": "null", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["set-cookie"].startswith("gp_token=gp_")


def test_sign_out_revokes_the_sign_in_token_and_clears_the_cookie(
    browser: TestClient, scene: Scene
) -> None:
    assert _sign_in(browser, scene.name).status_code == 303
    token = browser.cookies["gp_token"]
    home = browser.get("/", headers=HTML)
    assert f'name="csrf" value="{csrf_token(token)}"' in home.text
    refused = browser.post(
        "/signout", data={"csrf": "wrong"}, headers={**HTML, **ORIGIN}, follow_redirects=False
    )
    assert refused.status_code == 403
    assert browser.get("/api/v1/me", headers=auth(token)).status_code == 200
    out = browser.post(
        "/signout",
        data={"csrf": csrf_token(token)},
        headers={**HTML, **ORIGIN},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert out.headers["location"] == "/"
    assert 'gp_token=""' in out.headers["set-cookie"]
    assert browser.get("/api/v1/me", headers=auth(token)).status_code == 401  # revoked


def test_sign_out_keeps_a_cli_token_valid(browser: TestClient, make_token: Any) -> None:
    """A token from the CLI opened as ``/?token=…`` is the user's key elsewhere: sign-out drops
    the cookie only."""
    token = make_token("viewer", [COUNTY])
    moved = browser.get(f"/?token={token}", headers=HTML, follow_redirects=False)
    assert moved.status_code == 303
    assert moved.headers["location"] == "/"
    assert "HttpOnly" in moved.headers["set-cookie"]
    out = browser.post(
        "/signout",
        data={"csrf": csrf_token(token)},
        headers={**HTML, **ORIGIN},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert browser.get("/api/v1/me", headers=auth(token)).status_code == 200


# ---- the home page ------------------------------------------------------------------------------
def _expected(db_url: str, settings: Settings, prefix: str) -> dict[str, str]:
    """The home page's figures for a scope of ``prefix``, counted here independently."""
    fresh, offline = settings.map.vehicle_fresh_s, settings.map.vehicle_offline_s
    with psycopg.connect(db_url) as db:
        ages = [
            row[0]
            for row in db.execute(
                "SELECT extract(epoch FROM now() - s.fix_time) FROM device d "
                "LEFT JOIN device_state s ON s.device_id = d.id "
                "WHERE d.enabled AND d.kind = 'vehicle' AND d.home_village LIKE %s",
                (prefix + "%",),
            ).fetchall()
        ]
        statuses = dict(
            db.execute(
                "SELECT status, count(*) FROM incident WHERE area_code LIKE %s GROUP BY status",
                (prefix + "%",),
            ).fetchall()
        )
        day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if datetime.now(UTC).hour >= 16:  # China-local day (UTC+8)
            day_start += timedelta(hours=16)
        else:
            day_start -= timedelta(hours=8)
        refused = db.execute(
            "SELECT count(DISTINCT r.device_id), count(*) FROM position_rejected r "
            "JOIN device d ON d.id = r.device_id "
            "WHERE r.received_at >= %s AND d.home_village LIKE %s",
            (day_start, prefix + "%"),
        ).fetchone()
    assert refused is not None
    return {
        "vehicles.online": str(sum(1 for a in ages if a is not None and a < fresh)),
        "vehicles.stale": str(sum(1 for a in ages if a is not None and fresh <= a < offline)),
        "vehicles.offline": str(sum(1 for a in ages if a is None or a >= offline)),
        "vehicles.total": str(len(ages)),
        **{f"incidents.{s}": str(statuses.get(s, 0)) for s in ("new", "dispatched", "accepted")},
        "refused.devices": str(refused[0]),
        "refused.fixes": str(refused[1]),
    }


def test_home_figures_count_only_the_users_scope(
    browser: TestClient, scene: Scene, db_url: str, settings: Settings
) -> None:
    _keep_live(browser, scene)
    assert _sign_in(browser, scene.name).status_code == 303
    home = browser.get("/", headers=HTML)
    assert home.status_code == 200
    shown = _figures(home.text)
    expected = _expected(db_url, settings, scene.township[:9])
    assert {k: shown[k] for k in expected} == expected
    # the scene's live, stale and silent vehicles, its refused device and its new incident are
    # among them (the demo may have vehicles there too); the other township's live one is not
    for key in ("vehicles.online", "vehicles.stale", "vehicles.offline"):
        assert int(shown[key]) >= 1, key
    assert int(shown["refused.devices"]) >= 1
    assert int(shown["incidents.new"]) >= 1
    summary = browser.get("/api/v1/summary").json()  # what the page refreshes itself from
    assert {f"vehicles.{k}": str(v) for k, v in summary["vehicles"].items() if k != "never"} == {
        k: shown[k] for k in shown if k.startswith("vehicles.")
    }
    assert summary["refused"]["devices"] == int(shown["refused.devices"])
    county_expected = _expected(db_url, settings, COUNTY)
    assert int(county_expected["vehicles.online"]) > int(shown["vehicles.online"])
    assert re.fullmatch(r"\d+\.\d %|—", shown["coverage.pct"])
    # a county user counts the other township too
    browser.cookies.clear()
    run(_create_user(db_url, f"front-door-county-{COUNTY}", "viewer", [COUNTY]))
    assert _sign_in(browser, f"front-door-county-{COUNTY}").status_code == 303
    county = _figures(browser.get("/", headers=HTML).text)
    assert {k: county[k] for k in county_expected} == _expected(db_url, settings, COUNTY)
    assert int(county["incidents.new"]) >= 2


def test_home_cards_follow_the_role(browser: TestClient, scene: Scene) -> None:
    assert _sign_in(browser, scene.name).status_code == 303
    page = browser.get("/", headers=HTML).text
    links = dict(re.findall(r'<a class="gp-card" data-card="(\w+)" href="([^"]+)"', page))
    locked = set(re.findall(r'gp-locked" data-card="(\w+)"', page))
    assert links == {
        "dispatch": "/maps/dispatch",
        "coverage": "/maps/coverage",
        "reports": "/reports",
        "track": "/devices#track",
        "devices": "/devices",
        "areas": "/map",
        "docs": "/docs",
        "redoc": "/redoc",
    }
    assert locked == {"planner", "users"}  # a dispatcher is neither planner nor admin
    nav = page.split('<nav class="gp-nav"', 1)[1].split("</nav>", 1)[0]
    assert 'href="/maps/dispatch"' in nav
    assert 'href="/users"' not in nav
    assert scene.name in nav
    assert "调度员 dispatcher" in nav


def test_devices_page_lists_only_the_scope_with_track_links(
    browser: TestClient, scene: Scene
) -> None:
    _keep_live(browser, scene)
    assert _sign_in(browser, scene.name).status_code == 303
    page = browser.get("/devices", headers=HTML)
    assert page.status_code == 200
    listed = {int(d) for d in re.findall(r'<tr data-device="(\d+)"', page.text)}
    mine = {scene.devices[k] for k in ("live", "stale", "silent")}
    assert mine <= listed
    assert scene.devices["other"] not in listed
    assert f"/maps/track?device={scene.devices['live']}&amp;day=" in page.text
    live = browser.get("/devices?status=live", headers=HTML).text
    listed_live = {int(d) for d in re.findall(r'<tr data-device="(\d+)"', live)}
    assert scene.devices["live"] in listed_live
    assert scene.devices["stale"] not in listed_live


def test_users_page_is_for_admins(
    browser: TestClient, scene: Scene, make_token: Any, client: TestClient
) -> None:
    assert _sign_in(browser, scene.name).status_code == 303
    refused = browser.get("/users", headers=HTML)
    assert refused.status_code == 403
    assert "无权访问" in refused.text
    assert "Not allowed" in refused.text
    browser.cookies.clear()
    admin = make_token("admin", [COUNTY])
    page = client.get("/users", headers={**HTML, **auth(admin)})
    assert page.status_code == 200
    assert scene.name in page.text  # a township user lies inside the county admin's scope


# ---- errors: pages for browsers, JSON for API clients -------------------------------------------
def test_a_missing_session_redirects_a_browser_to_sign_in(browser: TestClient) -> None:
    answer = browser.get("/maps/coverage?from=2026-01-01", headers=HTML, follow_redirects=False)
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert target.path == "/"
    assert parse_qs(target.query) == {"next": ["/maps/coverage?from=2026-01-01"]}
    api = browser.get("/maps/coverage", follow_redirects=False)  # Accept: */*
    assert api.status_code == 401
    assert api.json()["error"] == "unauthorized"
    assert api.headers["www-authenticate"] == "Bearer"


def test_out_of_scope_incident_is_an_html_404_for_browsers_and_json_for_clients(
    browser: TestClient, scene: Scene
) -> None:
    assert _sign_in(browser, scene.name).status_code == 303
    url = f"/api/v1/incidents/{scene.outside_incident}"
    page = browser.get(url, headers=HTML)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "未找到" in page.text
    assert "Not found" in page.text
    assert "数据权限" in page.text
    assert 'class="gp-nav"' in page.text
    assert "content-security-policy" in page.headers
    assert browser.get(f"/api/v1/incidents/{scene.incident}", headers=HTML).status_code == 200
    api = browser.get(url, headers={"Accept": "application/json"})
    assert api.status_code == 404
    assert api.json() == {"error": "not_found", "detail": f"no incident {scene.outside_incident}"}


def test_bad_parameters_are_an_html_422_naming_the_field(browser: TestClient, scene: Scene) -> None:
    assert _sign_in(browser, scene.name).status_code == 303
    page = browser.get("/maps/coverage?from=not-a-day", headers=HTML)
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert "参数无效" in page.text
    assert "<code>from</code>" in page.text
    api = browser.get("/maps/coverage?from=not-a-day")
    assert api.status_code == 422
    assert api.json()["detail"][0]["loc"] == ["query", "from"]


def test_unknown_addresses_are_an_html_404_for_browsers(browser: TestClient) -> None:
    page = browser.get("/no/such/page", headers=HTML)
    assert page.status_code == 404
    assert "未找到" in page.text
    assert browser.get("/no/such/page").json() == {"detail": "Not Found"}


# ---- API docs from our own copies ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "assets"),
    [
        (
            "/docs",
            (
                "/static/vendor/swagger-ui/swagger-ui-bundle.js",
                "/static/vendor/swagger-ui/swagger-ui.css",
            ),
        ),
        ("/redoc", ("/static/vendor/redoc/redoc.standalone.js",)),
    ],
)
def test_api_docs_load_nothing_from_outside(
    browser: TestClient, path: str, assets: tuple[str, ...]
) -> None:
    page = browser.get(path, headers=HTML)
    assert page.status_code == 200
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), "an asset from outside"
    for asset in assets:
        assert asset in page.text
        assert browser.get(asset).status_code == 200
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None
    assert all(
        f'nonce="{nonce.group(1)}"' in tag for tag in re.findall(r"<script[^>]*>", page.text)
    )


# ---- who counts as a browser, where sign-in may return to ---------------------------------------
@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (HTML["Accept"], True),  # a browser's navigation
        ("text/html", True),
        ("text/html, application/json", True),
        (None, False),  # curl, httpx, requests
        ("*/*", False),  # fetch() from our pages
        ("application/json", False),
        ("application/json, text/html", False),
        ("text/html;q=0.5, application/json", False),
        ("text/event-stream", False),
    ],
)
def test_only_browsers_get_html_errors(accept: str | None, html: bool) -> None:
    headers = [] if accept is None else [(b"accept", accept.encode())]
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": headers})
    assert prefers_html(request) is html


@pytest.mark.parametrize(
    ("given", "goes"),
    [
        ("/maps/dispatch?basemap=amap", "/maps/dispatch?basemap=amap"),
        (None, "/"),
        ("maps/dispatch", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
    ],
)
def test_sign_in_returns_only_to_local_addresses(given: str | None, goes: str) -> None:
    assert next_path(given) == goes
