"""The grid worker's phone page, server side (issue 23): sign-in with a password or a one-time
code, a worker's scope (their grids; 404 elsewhere, 403 on every other role's route), foot
patrols through the ingest path counted as foot coverage, reports with photos (checked, capped,
idempotent, flagged outside the grid, escalating like any incident), tasks through the dispatch
workflow, photos readable within scope.

Scenes live in 乌拉盖管理区 (152571), where no other test puts incidents, patrols or workers'
sessions: the first two grids (of two workers) of its first village with grids.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from api.cli import app as cli
from api.dispatch.escalation import escalate_due
from api.errors import Unprocessable, UnsupportedMediaType
from api.mobile.photos import check_image
from api.ratelimit import RateLimiter, SignInLimiter
from api.scope import Scope
from api.settings import DispatchSettings
from gis.units import china_today
from tests.api.test_coverage_update import _settle
from tests.api.test_dispatch_api import offset
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152571"  # 乌拉盖管理区
OTHER_COUNTY = "152525"  # 东乌珠穆沁旗
HTML = {"Accept": "text/html"}
ORIGIN = {"Origin": "http://testserver"}
PASSWORD = "grid-worker-pass-1"


@dataclass
class Scene:
    village: str
    g1: str  # the worker's grid
    g2: str  # the neighbour's grid
    w1: dict[str, Any]  # id, name, phone
    w2: dict[str, Any]
    admin: dict[str, str]
    boss: dict[str, str]  # a dispatcher of the county
    stranger: dict[str, str]  # a dispatcher of another county
    viewer: dict[str, str]  # a viewer of the county


@pytest.fixture(scope="module")
def scene(demo: str, make_token: Callable[..., str]) -> Scene:
    with psycopg.connect(demo, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT g.code, s.id, s.name, s.phone, g.village_code
              FROM grid g JOIN grid_layout l ON l.id = g.layout_id
              JOIN staff s ON s.id = g.worker_id
             WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.code LIKE %s
               AND (SELECT count(*) FROM grid o JOIN grid_layout ol ON ol.id = o.layout_id
                     WHERE o.worker_id = s.id AND ol.status = 'active') = 1
             ORDER BY g.code LIMIT 2
            """,
            (f"{COUNTY}%",),
        ).fetchall()
    assert len(rows) == 2, rows
    assert rows[0][4] == rows[1][4], rows
    (g1, i1, n1, p1, village), (g2, i2, n2, p2, _) = rows
    return Scene(
        village=village,
        g1=g1,
        g2=g2,
        w1={"id": i1, "name": n1, "phone": p1},
        w2={"id": i2, "name": n2, "phone": p2},
        admin=auth(make_token("admin", [COUNTY])),
        boss=auth(make_token("dispatcher", [COUNTY])),
        stranger=auth(make_token("dispatcher", [OTHER_COUNTY])),
        viewer=auth(make_token("viewer", [COUNTY])),
    )


@pytest.fixture
def browser(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The session's client as a phone: cookies cleared after, a sign-in limiter of its own."""
    state = client.app.state._state  # type: ignore[attr-defined]
    monkeypatch.setitem(state, "login_limiter", SignInLimiter())
    client.cookies.clear()
    try:
        yield client
    finally:
        client.cookies.clear()


def _sign_in(client: TestClient, phone: str, **fields: str) -> Any:
    return client.post(
        "/m/signin",
        data={"phone": phone, "next": "/m/", **fields},
        headers={**HTML, **ORIGIN},
        follow_redirects=False,
    )


def _fresh_limiter(client: TestClient, limiter: SignInLimiter | None = None) -> None:
    client.app.state._state["login_limiter"] = limiter or SignInLimiter()  # type: ignore[attr-defined]


def _set_password(client: TestClient, scene: Scene, who: dict[str, Any]) -> None:
    answer = client.put(
        f"/api/v1/staff/{who['id']}/password", json={"password": PASSWORD}, headers=scene.admin
    )
    assert answer.status_code == 200, answer.text


def _session(client: TestClient, scene: Scene, who: dict[str, Any]) -> dict[str, str]:
    """A worker's session token (signed in through the form) as a bearer header."""
    state = client.app.state._state  # type: ignore[attr-defined]
    saved = state["login_limiter"]
    state["login_limiter"] = SignInLimiter()
    try:
        _set_password(client, scene, who)
        answer = _sign_in(client, who["phone"], password=PASSWORD)
        assert answer.status_code == 303, answer.text
        token = answer.cookies.get("gp_token") or client.cookies.get("gp_token")
    finally:
        state["login_limiter"] = saved
        client.cookies.clear()
    assert token
    return auth(token)


@pytest.fixture(scope="module")
def w1(client: TestClient, scene: Scene) -> dict[str, str]:
    return _session(client, scene, scene.w1)


@pytest.fixture(scope="module")
def w2(client: TestClient, scene: Scene) -> dict[str, str]:
    return _session(client, scene, scene.w2)


def _image(kind: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(out, format=kind)
    return out.getvalue()


def _truncated() -> bytes:
    """The first half of a real JPEG: Pillow knows it, but it does not decode."""
    out = io.BytesIO()
    Image.effect_noise((320, 240), 60).convert("RGB").save(out, format="JPEG")
    whole = out.getvalue()
    return whole[: len(whole) // 2]


def _grid_point(db: psycopg.Connection[Any], code: str) -> tuple[float, float]:
    row = db.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(g.geom) AS p FROM grid g "
        "JOIN grid_layout l ON l.id = g.layout_id WHERE l.status = 'active' "
        "AND l.purpose = 'patrol' AND g.code = %s) x",
        (code,),
    ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


# ---- sign-in ----------------------------------------------------------------------------------
def test_sign_in_with_a_password_then_with_a_one_time_code_used_once(
    browser: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    _set_password(browser, scene, scene.w1)
    wrong = _sign_in(browser, scene.w1["phone"], password="not-the-password")
    assert wrong.status_code == 401
    assert "手机号、密码或验证码错误" in wrong.text
    assert "Wrong phone number" in wrong.text
    assert "gp_token" not in wrong.headers.get("set-cookie", "")
    unknown = _sign_in(browser, "10000000000", password=PASSWORD)
    assert unknown.status_code == 401  # the same answer: it does not tell which phones exist
    signed = _sign_in(
        browser, f" {scene.w1['phone'][:3]}-{scene.w1['phone'][3:]} ", password=PASSWORD
    )
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/m/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("gp_token=gp_")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    me = browser.get("/api/v1/m/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["staff_id"], body["phone"], body["has_password"]) == (
        scene.w1["id"],
        scene.w1["phone"],
        True,
    )
    assert [g["code"] for g in body["grids"]] == [scene.g1]
    assert "火情" in body["event_kinds"]
    assert body["csrf"]
    # a cookie write needs the page's CSRF value and our Origin
    refused = browser.put("/api/v1/m/password", json={"password": "another-pass-1"})
    assert refused.status_code == 401
    csrf = {"X-CSRF-Token": body["csrf"], **ORIGIN}
    # signed in with the password: changing it needs the current one
    for current, reason in ((None, "give your current password"), ("wrong-pass-9", "wrong")):
        denied = browser.put(
            "/api/v1/m/password",
            json={"password": PASSWORD, **({"current": current} if current else {})},
            headers=csrf,
        )
        assert denied.status_code == 403, denied.text
        assert reason in denied.json()["detail"]
    changed = browser.put(
        "/api/v1/m/password", json={"password": PASSWORD, "current": PASSWORD}, headers=csrf
    )
    assert changed.status_code == 200, changed.text
    # sign out: the session ends
    out = browser.post(
        "/m/signout",
        data={"csrf": body["csrf"]},
        headers={**HTML, **ORIGIN},
        follow_redirects=False,
    )
    assert out.status_code == 303
    browser.cookies.clear()
    browser.cookies.set("gp_token", cookie.split(";")[0].split("=", 1)[1])
    assert browser.get("/api/v1/m/me").status_code == 401
    browser.cookies.clear()

    _fresh_limiter(browser)
    # a code from a dispatcher of the county (another county's gets 404)
    assert (
        browser.post(
            f"/api/v1/staff/{scene.w1['id']}/sign-in-code", headers=scene.stranger
        ).status_code
        == 404
    )
    made = browser.post(f"/api/v1/staff/{scene.w1['id']}/sign-in-code", headers=scene.boss)
    assert made.status_code == 200, made.text
    code = made.json()["code"]
    assert len(code) == 6
    assert code.isdigit()
    assert _sign_in(browser, scene.w1["phone"], code=code).status_code == 303
    browser.cookies.clear()
    again = _sign_in(browser, scene.w1["phone"], code=code)
    assert again.status_code == 401  # used once
    # an expired code
    code = browser.post(f"/api/v1/staff/{scene.w1['id']}/sign-in-code", headers=scene.boss).json()[
        "code"
    ]
    db.execute(
        "UPDATE staff SET code_expires_at = now() - interval '1 second' WHERE id = %s",
        (scene.w1["id"],),
    )
    assert _sign_in(browser, scene.w1["phone"], code=code).status_code == 401
    # five wrong codes void the code: the right one then fails too
    code = browser.post(f"/api/v1/staff/{scene.w1['id']}/sign-in-code", headers=scene.boss).json()[
        "code"
    ]
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert _sign_in(browser, scene.w1["phone"], code=wrong_code).status_code == 401
    assert _sign_in(browser, scene.w1["phone"], code=code).status_code == 401
    row = db.execute("SELECT code_hash FROM staff WHERE id = %s", (scene.w1["id"],)).fetchone()
    assert row == (None,)


def test_sign_in_is_limited_per_phone_and_refused_from_another_site(
    browser: TestClient, scene: Scene
) -> None:
    foreign = browser.post(
        "/m/signin",
        data={"phone": scene.w2["phone"], "password": PASSWORD},
        headers={**HTML, "Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403
    # a limiter whose budgets do not refill while the test runs (no timing in the test)
    _fresh_limiter(
        browser,
        SignInLimiter(
            per_name=RateLimiter(rate=1e-9, burst=10), per_address=RateLimiter(rate=1e-9, burst=30)
        ),
    )
    answers = [
        _sign_in(browser, scene.w2["phone"], password="wrong-password-x").status_code
        for _ in range(12)
    ]
    assert answers[:10] == [401] * 10
    assert answers[10:] == [429, 429]
    limited = _sign_in(browser, scene.w2["phone"], password="wrong-password-x")
    assert limited.headers["Retry-After"].isdigit()
    assert "登录尝试过多" in limited.text


def test_cli_prints_a_code_with_clear_exit_codes(
    browser: TestClient,
    scene: Scene,
    db_url: str,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()
    unknown = runner.invoke(cli, ["staff", "code", "10000000001"])
    assert unknown.exit_code == 2, unknown.output
    leader = db.execute(
        "SELECT phone FROM staff WHERE role = 'leader' AND village_code = %s LIMIT 1",
        (scene.village,),
    ).fetchone()
    assert leader is not None
    not_worker = runner.invoke(cli, ["staff", "code", leader[0]])
    assert not_worker.exit_code == 3, not_worker.output
    made = runner.invoke(cli, ["staff", "code", scene.w2["phone"]])
    assert made.exit_code == 0, made.output
    code = made.output.split("sign-in code ")[1][:6]
    assert _sign_in(browser, scene.w2["phone"], code=code).status_code == 303


# ---- scope ------------------------------------------------------------------------------------
def test_a_worker_reads_only_their_grid_and_no_other_roles_route(
    client: TestClient, scene: Scene, w1: dict[str, str]
) -> None:
    mine = client.get(f"/api/v1/m/grids/{scene.g1}", headers=w1)
    assert mine.status_code == 200, mine.text
    assert mine.json()["grid"]["properties"]["code"] == scene.g1
    for code in (scene.g2, "152571999999999", "not-a-grid"):
        other = client.get(f"/api/v1/m/grids/{code}", headers=w1)
        assert other.status_code == 404
        assert set(other.json()) == {"error", "detail"}
        assert scene.g1 not in other.text
    for method, path in (
        ("GET", "/api/v1/incidents"),
        ("GET", f"/api/v1/grids/{scene.g1}"),
        ("GET", "/api/v1/staff"),
        ("GET", "/api/v1/summary"),
        ("GET", "/api/v1/live/vehicles"),
        ("GET", f"/api/v1/coverage/blind-spots?grid={scene.g1}"),
        ("POST", "/api/v1/incidents"),
    ):
        answer = client.request(method, path, headers=w1, json={} if method == "POST" else None)
        assert answer.status_code == 403, (path, answer.text)
        assert "worker" in answer.json()["detail"]
    # and no other role's token opens the worker's routes
    assert client.get("/api/v1/m/me", headers=scene.viewer).status_code == 403
    assert client.get("/api/v1/m/me", headers=scene.admin).status_code == 403


# ---- foot patrols -------------------------------------------------------------------------------
def test_patrol_fixes_are_stored_through_ingest_and_count_as_foot_coverage(
    client: TestClient,
    scene: Scene,
    w1: dict[str, str],
    w2: dict[str, str],
    db: psycopg.Connection[Any],
    db_url: str,
) -> None:
    client_id = str(uuid.uuid4())
    started = datetime.now(UTC) - timedelta(minutes=40)
    first = client.post(
        "/api/v1/m/patrols", json={"client_id": client_id, "at": started.isoformat()}, headers=w1
    )
    assert first.status_code == 201, first.text
    patrol = first.json()
    assert patrol["grid_code"] == scene.g1
    replay = client.post(
        "/api/v1/m/patrols", json={"client_id": client_id, "at": started.isoformat()}, headers=w1
    )
    assert (replay.status_code, replay.json()["id"]) == (200, patrol["id"])
    # a walk across the grid: 25 m every 20 s, points inside the grid only
    centre = _grid_point(db, scene.g1)
    walk = [offset(centre, 25.0 * k, 0.0) for k in range(-30, 31)]
    inside = db.execute(
        "SELECT array_agg(ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(x, y), 4326)) ORDER BY n) "
        "FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY u(x, y, n), grid g "
        "JOIN grid_layout l ON l.id = g.layout_id WHERE l.status = 'active' "
        "AND l.purpose = 'patrol' AND g.code = %s",
        ([p[0] for p in walk], [p[1] for p in walk], scene.g1),
    ).fetchone()
    assert inside is not None
    walk = [p for p, ok in zip(walk, inside[0], strict=True) if ok]
    assert len(walk) >= 10
    fixes = [
        {
            "time": (started + timedelta(seconds=20 * (k + 1))).isoformat(),
            "lon": lon,
            "lat": lat,
            "accuracy": 8.0,
        }
        for k, (lon, lat) in enumerate(walk)
    ]
    bad = {"time": (started + timedelta(seconds=5)).isoformat(), "lon": centre[0], "lat": 95.0}
    # a day before the patrol began: not this patrol's walk (no foot coverage of another day)
    early = {**fixes[0], "time": (started - timedelta(days=1)).isoformat()}
    sent = client.post(
        f"/api/v1/m/patrols/{patrol['id']}/fixes",
        json={"fixes": [*fixes, bad, early]},
        headers=w1,
    )
    assert sent.status_code == 200, sent.text
    assert sent.json() == {
        "accepted": len(fixes),
        "duplicates": 0,
        "rejected": [
            {"index": len(fixes), "reason": "bad_coordinates"},
            {"index": len(fixes) + 1, "reason": "outside_patrol"},
        ],
    }
    at = started.isoformat()
    infinite_fix = f'{{"time": "{at}", "lon": 116, "lat": 44, "accuracy": Infinity}}'
    infinite = client.post(
        f"/api/v1/m/patrols/{patrol['id']}/fixes",
        content='{"fixes": [' + infinite_fix + "]}",
        headers={**w1, "Content-Type": "application/json"},
    )
    assert infinite.status_code == 422, infinite.text
    device = db.execute(
        "SELECT d.id, d.kind, d.identifier FROM device d JOIN staff s ON s.device_id = d.id "
        "WHERE s.id = %s",
        (scene.w1["id"],),
    ).fetchone()
    assert device is not None
    assert device[1:] == ("handheld", f"staff-{scene.w1['id']}")
    stored = db.execute(
        "SELECT count(*), min(protocol), max(extras ->> 'patrol') FROM position "
        "WHERE device_id = %s AND fix_time >= %s",
        (device[0], started),
    ).fetchone()
    assert stored == (len(fixes), "mobile", str(patrol["id"]))
    quarantined = db.execute(
        "SELECT reason, field, identifier FROM position_rejected WHERE device_id = %s "
        "AND lat = 95 ORDER BY id DESC LIMIT 1",
        (device[0],),
    ).fetchone()
    assert quarantined == ("bad_coordinates", "lat/lon", f"staff-{scene.w1['id']}")
    # the fix outside the patrol is kept in quarantine, the patrol's span written beside it
    outside = db.execute(
        "SELECT field, raw FROM position_rejected WHERE protocol = 'mobile' AND field = 'time' "
        "AND raw LIKE %s ORDER BY id DESC LIMIT 1",
        (f"staff-{scene.w1['id']} %",),
    ).fetchone()
    assert outside is not None
    assert f"(patrol {patrol['id']}: " in outside[1]
    # a replay (the phone was not sure it got through) stores nothing new
    again = client.post(
        f"/api/v1/m/patrols/{patrol['id']}/fixes", json={"fixes": fixes}, headers=w1
    )
    assert again.json() == {"accepted": 0, "duplicates": len(fixes), "rejected": []}
    # someone else's patrol is 404, and nothing is stored for them
    neighbour = client.post(
        f"/api/v1/m/patrols/{patrol['id']}/fixes", json={"fixes": fixes}, headers=w2
    )
    assert neighbour.status_code == 404
    assert client.post(f"/api/v1/m/patrols/{patrol['id']}/stop", headers=w2).status_code == 404
    assert client.get("/api/v1/m/patrols", headers=w2).json() == []
    stop = client.post(f"/api/v1/m/patrols/{patrol['id']}/stop", json={}, headers=w1)
    assert stop.status_code == 200, stop.text
    ended = stop.json()
    assert ended["fixes"] == len(fixes)
    assert ended["ended_at"]
    assert ended["km"] > 0.5
    assert ended["grid_codes"] == [scene.g1]
    assert client.post(f"/api/v1/m/patrols/{patrol['id']}/stop", headers=w1).json() == ended
    listed = client.get("/api/v1/m/patrols", headers=w1).json()
    assert listed[0]["id"] == patrol["id"]
    # coverage on foot, once the coverage updater has run
    _settle(db_url, db, [device[0]])
    view = client.get(f"/api/v1/m/grids/{scene.g1}", headers=w1).json()
    coverage = view["coverage"]
    assert coverage["days"] == 7
    assert coverage["foot_share"] > 0
    assert coverage["share"] >= coverage["foot_share"]
    assert coverage["last_patrol_at"] is not None
    assert view["last_checkin"]["id"] == patrol["id"]
    assert view["last_checkin"]["fixes"] == len(fixes)
    assert view["blind_spots"]["type"] == "FeatureCollection"
    assert {f["properties"]["grid"] for f in view["blind_spots"]["features"]} <= {scene.g1}
    assert all(f["properties"]["id"] for f in view["alert_points"]["features"])
    # what the view draws lies in the worker's grid: alert points and households, nothing else
    points = [
        f["geometry"]["coordinates"]
        for layer in ("alert_points", "household_points")
        for f in view[layer]["features"]
    ]
    homes = view["household_points"]["features"]
    assert bool(homes) == bool(view["households"])
    covered = db.execute(
        "SELECT bool_and(ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(x, y), 4326))) "
        "FROM unnest(%s::float8[], %s::float8[]) AS u(x, y), grid g JOIN grid_layout l "
        "ON l.id = g.layout_id WHERE l.status = 'active' AND l.purpose = 'patrol' "
        "AND g.code = %s",
        ([p[0] for p in points], [p[1] for p in points], scene.g1),
    ).fetchone()
    assert covered == (True,) if points else covered == (None,)
    assert {v["device_id"] for v in view["vehicles"]} <= {
        r[0]
        for r in db.execute(
            "SELECT id FROM device WHERE kind = 'vehicle' AND (home_village = %s "
            "OR %s = ANY(assigned_grids))",
            (scene.g1[:12], scene.g1),
        ).fetchall()
    }
    # the coverage reports show coverage on foot apart from the vehicles'
    today = china_today()
    window = {"level": "grid", "from": str(today - timedelta(days=6)), "to": str(today)}
    units = client.get("/api/v1/coverage", params=window, headers=scene.viewer).json()["units"]
    unit = next(u for u in units if u["code"] == scene.g1)
    assert unit["foot_coverage_pct"] > 0
    assert unit["coverage_pct"] >= unit["foot_coverage_pct"]
    assert unit["vehicle_coverage_pct"] is not None
    # the console's grid popup shows the check-in, within the reader's scope only
    popup = client.get(f"/api/v1/grids/{scene.g1}", headers=scene.viewer)
    assert popup.status_code == 200
    assert popup.json()["last_checkin_at"] is not None
    assert client.get(f"/api/v1/grids/{scene.g1}", headers=scene.stranger).status_code == 404


# ---- reports ------------------------------------------------------------------------------------
def _report(
    client: TestClient,
    headers: dict[str, str],
    photos: list[tuple[str, bytes, str]] | None = None,
    **data: Any,
) -> Any:
    files = [("photo", p) for p in photos or []]
    return client.post(
        "/api/v1/m/reports",
        data={"kind": "安全隐患", "text": "桥下有裂缝", **data},
        files=files or None,
        headers=headers,
    )


def _mine(db: psycopg.Connection[Any], staff_id: int) -> tuple[int, int]:
    row = db.execute(
        "SELECT count(*), (SELECT count(*) FROM incident_photo p JOIN incident i "
        "ON i.id = p.incident_id WHERE i.reported_by = %s) FROM incident WHERE reported_by = %s",
        (staff_id, staff_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_bad_reports_are_refused_naming_the_problem_with_nothing_written(
    client: TestClient, scene: Scene, w1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    before = _mine(db, scene.w1["id"])
    jpeg = ("a.jpg", _image(), "image/jpeg")
    cases = [
        (_report(client, w1, client_id="not-a-uuid"), 422, "client_id"),
        (_report(client, w1, client_id=str(uuid.uuid4()), kind="外星人"), 422, "kind"),
        (_report(client, w1, client_id=str(uuid.uuid4()), grid_code=scene.g2), 404, "grid_code"),
        (_report(client, w1, client_id=str(uuid.uuid4()), text="长" * 2001), 422, "text"),
        (_report(client, w1, client_id=str(uuid.uuid4()), lon="116.0"), 422, "lat"),
        (
            _report(
                client,
                w1,
                [("x.jpg", b"just some text, not an image", "image/jpeg")],
                client_id=str(uuid.uuid4()),
            ),
            415,
            "photo",
        ),
        (
            _report(
                client, w1, [("x.jpg", _truncated(), "image/jpeg")], client_id=str(uuid.uuid4())
            ),
            422,
            "photo",
        ),
        (
            _report(
                client, w1, [("g.gif", _image("GIF"), "image/gif")], client_id=str(uuid.uuid4())
            ),
            415,
            "photo",
        ),
        (
            _report(
                client,
                w1,
                [("big.jpg", _image() + b"\0" * (2 * 1024 * 1024), "image/jpeg")],
                client_id=str(uuid.uuid4()),
            ),
            413,
            "photo",
        ),
        (_report(client, w1, [jpeg] * 4, client_id=str(uuid.uuid4())), 422, "photo"),
    ]
    for answer, status, field in cases:
        assert answer.status_code == status, (field, answer.text)
        assert answer.json()["field"] == field, answer.text
        assert answer.json()["detail"]
    as_json = client.post(
        "/api/v1/m/reports", json={"client_id": str(uuid.uuid4()), "kind": "火情"}, headers=w1
    )
    assert as_json.status_code == 415
    # a body past the cap is refused before it is read
    huge = client.post(
        "/api/v1/m/reports",
        content=b"x" * (7 * 1024 * 1024),
        headers={**w1, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert huge.status_code == 413
    assert _mine(db, scene.w1["id"]) == before
    # and without a session the body is not read at all
    assert client.post("/api/v1/m/reports", content=b"x" * 10).status_code == 401


def test_a_report_becomes_an_incident_once_flagged_outside_the_grid_and_escalates(
    client: TestClient,
    scene: Scene,
    w1: dict[str, str],
    w2: dict[str, str],
    db: psycopg.Connection[Any],
    db_url: str,
) -> None:
    before = _mine(db, scene.w1["id"])
    jpeg, png = _image(), _image("PNG", (30, 20))
    client_id = str(uuid.uuid4())
    photos = [("a.jpg", jpeg, "image/jpeg"), ("b.png", png, "application/octet-stream")]
    made = _report(client, w1, photos, client_id=client_id, grid_code=scene.g1)
    assert made.status_code == 201, made.text
    report = made.json()
    assert {
        k: report[k] for k in ("status", "escalation", "outside_grid", "photos", "client_id")
    } == {
        "status": "new",
        "escalation": "grid",
        "outside_grid": False,
        "photos": 2,
        "client_id": client_id,
    }
    replay = _report(client, w1, photos, client_id=client_id, grid_code=scene.g1)
    assert replay.status_code == 200
    assert replay.json()["id"] == report["id"]
    assert _mine(db, scene.w1["id"]) == (before[0] + 1, before[1] + 2)
    # a point in the neighbour's grid: allowed, flagged, kept where it is — and still the
    # worker's grid warning (the worker's grid, village and chain are warned, not the neighbour's)
    there = _grid_point(db, scene.g2)
    outside = _report(
        client,
        w1,
        client_id=str(uuid.uuid4()),
        grid_code=scene.g1,
        lon=str(there[0]),
        lat=str(there[1]),
        kind="火情",
    )
    assert outside.status_code == 201, outside.text
    assert outside.json()["outside_grid"] is True
    # the dispatcher's console sees where it came from, with its photos
    console = client.get(f"/api/v1/incidents/{report['id']}", headers=scene.boss).json()
    assert (console["source"], console["photos"], console["reported_by_name"]) == (
        "worker",
        2,
        scene.w1["name"],
    )
    assert (console["grid_code"], console["priority"], console["escalation"]) == (
        scene.g1,
        3,
        "grid",
    )
    assert console["reporter"] == f"网格员 {scene.w1['name']} {scene.w1['phone']}"
    assert [e["kind"] for e in console["events"]] == ["created"]
    assert [n["level"] for n in console["notifications"]] == [0]
    flagged = client.get(f"/api/v1/incidents/{outside.json()['id']}", headers=scene.boss).json()
    assert (flagged["outside_grid"], flagged["grid_code"]) == (True, scene.g1)
    assert flagged["village_code"] == scene.g1[:12]
    assert (flagged["lon"], flagged["lat"]) == pytest.approx(there, abs=1e-6)
    # far from the grid: refused, naming the distance, nothing written
    far = _report(
        client,
        w1,
        client_id=str(uuid.uuid4()),
        grid_code=scene.g1,
        lon=str(there[0] + 0.5),
        lat=str(there[1]),
    )
    assert far.status_code == 422, far.text
    assert "km from your grid" in far.json()["detail"]
    assert _mine(db, scene.w1["id"])[0] == before[0] + 2
    listed = client.get("/api/v1/incidents?status=all", headers=scene.boss).json()
    feature = next(f for f in listed["features"] if f["properties"]["id"] == report["id"])
    assert feature["properties"]["source"] == "worker"
    # photos: the county's dispatcher and the reporter, not another county nor another worker
    photo = client.get(f"/api/v1/incidents/{report['id']}/photos/1", headers=scene.boss)
    assert (photo.status_code, photo.headers["content-type"], photo.content) == (
        200,
        "image/jpeg",
        jpeg,
    )
    second = client.get(f"/api/v1/incidents/{report['id']}/photos/2", headers=w1)
    assert (second.headers["content-type"], second.content) == ("image/png", png)
    for headers, n in ((scene.stranger, 1), (w2, 1), (scene.boss, 3)):
        hidden = client.get(f"/api/v1/incidents/{report['id']}/photos/{n}", headers=headers)
        assert hidden.status_code == 404
        assert not hidden.content.startswith(jpeg[:4])
    assert (
        client.get(f"/api/v1/incidents/{report['id']}", headers=scene.stranger).status_code == 404
    )
    # my reports, with their live status
    mine = client.get("/api/v1/m/reports", headers=w1).json()
    assert [r["id"] for r in mine[:2]] == [outside.json()["id"], report["id"]]
    assert mine[1]["photos"] == 2
    assert mine[1]["text"] == "桥下有裂缝"
    assert client.get("/api/v1/m/reports", headers=w2).json() == []
    # nobody accepts: it escalates by the existing rules (the clock is injected)
    created = db.execute(
        "SELECT extract(epoch FROM created_at)::float8 FROM incident WHERE id = %s",
        (report["id"],),
    ).fetchone()
    assert created is not None
    settings = DispatchSettings(escalate_after_s=300.0)

    async def tick() -> int:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await escalate_due(
                conn, settings, created[0] + 301.0, scope=Scope(grids=(scene.g1,))
            )

    assert run(tick()) >= 1
    status = client.get("/api/v1/m/reports", headers=w1).json()
    assert next(r for r in status if r["id"] == report["id"])["escalation"] == "village"
    for incident in (report["id"], outside.json()["id"]):
        client.post(f"/api/v1/incidents/{incident}/cancel", json={}, headers=scene.boss)
    assert (
        next(
            r for r in client.get("/api/v1/m/reports", headers=w1).json() if r["id"] == report["id"]
        )["status"]
        == "cancelled"
    )


# ---- tasks --------------------------------------------------------------------------------------
def test_tasks_drive_the_dispatch_workflow_and_refuse_wrong_steps(
    client: TestClient,
    scene: Scene,
    w1: dict[str, str],
    w2: dict[str, str],
    db: psycopg.Connection[Any],
) -> None:
    made = client.post(
        "/api/v1/incidents",
        json={"kind": "牲畜走失", "priority": 2, "grid_code": scene.g1},
        headers=scene.boss,
    )
    assert made.status_code == 201, made.text
    incident = made.json()["id"]
    assigned = client.post(
        f"/api/v1/incidents/{incident}/assign",
        json={"staff_id": scene.w1["id"]},
        headers=scene.boss,
    )
    assert assigned.status_code == 200, assigned.text
    tasks = client.get("/api/v1/m/tasks", headers=w1).json()
    assert [(t["id"], t["status"]) for t in tasks if t["status"] != "cleared"] == [
        (incident, "dispatched")
    ]
    assert client.get("/api/v1/m/tasks", headers=w2).json() == []
    assert client.post(f"/api/v1/m/tasks/{incident}/accept", headers=w2).status_code == 404
    wrong = client.post(f"/api/v1/m/tasks/{incident}/done", json={}, headers=w1)
    assert wrong.status_code == 409
    assert wrong.json()["status"] == "dispatched"
    accepted = client.post(f"/api/v1/m/tasks/{incident}/accept", headers=w1)
    assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
    assert client.post(f"/api/v1/m/tasks/{incident}/accept", headers=w1).status_code == 409
    arrived = client.post(f"/api/v1/m/tasks/{incident}/arrived", headers=w1)
    assert arrived.json()["status"] == "arrived"
    bad_photo = client.post(
        f"/api/v1/m/tasks/{incident}/done",
        data={"note": "找到了"},
        files=[("photo", ("x.jpg", b"not an image", "image/jpeg"))],
        headers=w1,
    )
    assert bad_photo.status_code == 415
    assert client.get(f"/api/v1/incidents/{incident}", headers=scene.boss).json()["status"] == (
        "arrived"
    )
    done = client.post(
        f"/api/v1/m/tasks/{incident}/done",
        data={"note": "牛已找到，交还牧户"},
        files=[("photo", ("done.jpg", _image(), "image/jpeg"))],
        headers=w1,
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["photos"]) == ("cleared", 1)
    detail = client.get(f"/api/v1/incidents/{incident}", headers=scene.boss).json()
    assert detail["accepted_at"]
    assert detail["arrived_at"]
    assert detail["cleared_at"]
    steps = [(e["kind"], e["actor"]) for e in detail["events"] if e["kind"] != "created"]
    worker = f"网格员 {scene.w1['name']}"
    assert steps[-3:] == [("accept", worker), ("arrive", worker), ("clear", worker)]
    assert detail["events"][-1]["detail"]["note"] == "牛已找到，交还牧户"
    assert detail["arrival_source"] == "manual"
    assert client.post(f"/api/v1/m/tasks/{incident}/arrived", headers=w1).status_code == 409
    shown = client.get("/api/v1/m/tasks", headers=w1).json()
    assert (shown[0]["id"], shown[0]["status"]) == (incident, "cleared")
    audit = db.execute(
        "SELECT user_name FROM audit_log WHERE action = 'incident.clear' AND object_id = %s",
        (str(incident),),
    ).fetchone()
    assert audit == (worker,)


def test_a_photo_is_judged_by_its_content_within_a_pixel_cap() -> None:
    webp = check_image(_image("WEBP"), name="photo 1", max_pixels=16_000_000)
    assert (webp.content_type, webp.width, webp.height) == ("image/webp", 64, 48)
    bomb = _image("PNG", (5000, 4000))  # small on the wire, 20 million pixels decoded
    assert len(bomb) < 2 * 1024 * 1024
    with pytest.raises(Unprocessable, match="5000×4000 pixels") as refused:
        check_image(bomb, name="photo 1", max_pixels=16_000_000)
    assert refused.value.extra["field"] == "photo"
    with pytest.raises(UnsupportedMediaType, match="not an image"):
        check_image(b"%PDF-1.4 not a photo", name="photo 2", max_pixels=16_000_000)


def test_a_worker_on_foot_patrol_is_placed_for_dispatch_by_their_handheld(
    client: TestClient, scene: Scene, w1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """The nearest-responder list places the grid's worker where their phone last reported on
    patrol (``position: fix``), not at the grid's centre."""
    patrol = client.post(
        "/api/v1/m/patrols", json={"client_id": str(uuid.uuid4())}, headers=w1
    ).json()
    here = offset(_grid_point(db, scene.g1), 40.0, 30.0)
    fix = {"time": datetime.now(UTC).isoformat(), "lon": here[0], "lat": here[1], "accuracy": 5}
    sent = client.post(f"/api/v1/m/patrols/{patrol['id']}/fixes", json={"fixes": [fix]}, headers=w1)
    assert sent.json()["accepted"] == 1, sent.text
    made = client.post(
        "/api/v1/incidents",
        json={"kind": "test", "priority": 3, "grid_code": scene.g1},
        headers=scene.boss,
    )
    assert made.status_code == 201, made.text
    incident = made.json()["id"]
    try:
        ranked = client.get(f"/api/v1/incidents/{incident}/candidates?k=10", headers=scene.boss)
        assert ranked.status_code == 200, ranked.text
        worker = next(c for c in ranked.json()["candidates"] if c["kind"] == "worker")
        assert (worker["staff_id"], worker["position"]) == (scene.w1["id"], "fix")
        assert (worker["lon"], worker["lat"]) == pytest.approx(here, abs=1e-6)
    finally:
        client.post(
            f"/api/v1/incidents/{incident}/cancel",
            json={"reason": "test over"},
            headers=scene.boss,
        )
        client.post(f"/api/v1/m/patrols/{patrol['id']}/stop", json={}, headers=w1)
