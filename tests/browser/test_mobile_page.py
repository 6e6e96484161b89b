"""The grid worker's phone page (``/m/``, issue 23) in chromium's mobile emulation: a 360×740
phone, geolocation granted and moved by the test, every request to another host blocked (the
basemap fails; the grid must still draw).

The story: a worker of the patrol scene's grid signs in with phone and password, sees the grid,
starts a foot patrol and walks a path (the fixes go through the ingest as the worker's handheld
device; after the coverage job they are foot coverage in the database and on the page), goes
offline, reports an event with a photo (kept on the phone), comes back online (sent once) and
the township dispatcher's console shows the report exactly once, marked 网格员上报, with its
photo. The dispatcher assigns it to the worker, who accepts, arrives and finishes it on the
phone. Then: another grid answers 404 and the page says so; bad input gets clear messages.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import BrowserContext, ConsoleMessage, Route

from tests.browser.conftest import LOCAL_HOSTS, OUTPUT, Chromium, PageRun, _wait_without_eval
from tests.conftest import auth

pytestmark = pytest.mark.browser
WAIT_MS = 30_000
PASSWORD = "worker-pass-23"
PHONE = {"width": 360, "height": 740}
STEP_M = 10.0
STEPS = 16


def _offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (
        lon + east_m / (111_195.0 * math.cos(math.radians(lat))),
        lat + north_m / 111_195.0,
    )


@pytest.fixture(scope="module")
def worker(
    patrol: dict[str, Any], demo: str, client: TestClient, make_token: Any
) -> dict[str, Any]:
    """The worker (网格员) of the scene's grid, with a password set by an admin; a walk of
    ``STEPS`` × ``STEP_M`` inside the grid; a grid of the township that is not theirs."""
    grid = patrol["grid"]
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT g.worker_id, g.village_code, ST_X(ST_PointOnSurface(g.geom)), "
            "ST_Y(ST_PointOnSurface(g.geom)) FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE g.code = %s AND l.status = 'active' AND l.purpose = 'patrol'",
            (grid,),
        ).fetchone()
        assert row is not None
        staff_id, village, lon, lat = row
        if staff_id is None:  # the demo staffs every grid; a test may have left it without
            phone = "1390523" + str(uuid.uuid4().int % 10_000).zfill(4)
            staff_id = db.execute(
                "INSERT INTO staff (name, phone, role, village_code) VALUES "
                "('测试网格员', %s, 'worker', %s) RETURNING id",
                (phone, village),
            ).fetchone()[0]  # type: ignore[index]
            db.execute("UPDATE grid SET worker_id = %s WHERE code = %s", (staff_id, grid))
        name, phone = db.execute(
            "SELECT name, phone FROM staff WHERE id = %s", (staff_id,)
        ).fetchone()  # type: ignore[misc]
        walk = None
        for east, north in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            points = [
                _offset(lon, lat, east * STEP_M * i, north * STEP_M * i) for i in range(STEPS)
            ]
            line = "LINESTRING(" + ", ".join(f"{x} {y}" for x, y in points) + ")"
            inside = db.execute(
                "SELECT ST_Covers(geom, ST_GeomFromText(%s, 4326)) FROM grid g "
                "JOIN grid_layout l ON l.id = g.layout_id "
                "WHERE g.code = %s AND l.status = 'active' AND l.purpose = 'patrol'",
                (line, grid),
            ).fetchone()
            if inside and inside[0]:
                walk = points
                break
        assert walk is not None, "a 150 m walk fits in the grid"
        other = db.execute(
            "SELECT g.code FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE l.status = 'active' AND l.purpose = 'patrol' AND g.code LIKE %s "
            "AND g.worker_id IS DISTINCT FROM %s ORDER BY g.code LIMIT 1",
            (patrol["township"][:9] + "%", staff_id),
        ).fetchone()[0]  # type: ignore[index]
        # outside the worker's grid(s): the other grid's inside point
        outside = db.execute(
            "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) FROM grid g "
            "JOIN grid_layout l ON l.id = g.layout_id WHERE g.code = %s "
            "AND l.status = 'active' AND l.purpose = 'patrol'",
            (other,),
        ).fetchone()
    admin = make_token("admin", ["*"])
    made = client.put(
        f"/api/v1/staff/{staff_id}/password", json={"password": PASSWORD}, headers=auth(admin)
    )
    assert made.status_code == 200, made.text
    return {
        "staff_id": int(staff_id),
        "name": name,
        "phone": phone,
        "grid": grid,
        "walk": walk,
        "other_grid": other,
        "outside": outside,
        "admin": admin,
    }


def _photo(path: Any, size: tuple[int, int]) -> Any:
    """A camera-sized JPEG (noise, so it does not compress to nothing)."""
    image = Image.effect_noise(size, 60).convert("RGB")
    image.save(path, "JPEG", quality=92)
    return path


class Phone:
    """A phone: its own browser context (360×740, touch, geolocation), one page."""

    def __init__(self, chromium: Chromium, at: tuple[float, float]) -> None:
        self.base = chromium.base
        self.context: BrowserContext = chromium.browser.new_context(
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            geolocation={"longitude": at[0], "latitude": at[1], "accuracy": 8},
            permissions=["geolocation"],
        )
        self.run = PageRun(page=self.context.new_page())

        def route(r: Route) -> None:
            if urlparse(r.request.url).hostname in LOCAL_HOSTS:
                r.continue_()
            else:
                self.run.blocked.append(r.request.url)
                r.abort()

        def console(message: ConsoleMessage) -> None:
            origin = message.location.get("url", "") if message.location else ""
            host = urlparse(origin).hostname
            text = message.text
            # offline on purpose: the page's own fetches fail until it is back online
            offline = "ERR_INTERNET_DISCONNECTED" in text or "Failed to fetch" in text
            # before sign-in the page asks who is signed in: 401 is the answer it expects
            asked = "status of 401" in text and origin.endswith("/api/v1/m/me")
            if message.type == "error" and (not origin or host in LOCAL_HOSTS) and not offline:
                if asked:
                    return
                self.run.errors.append(f"console: {text} ({origin})")

        self.context.route("**/*", route)
        _wait_without_eval(self.run.page)
        self.run.page.on("pageerror", lambda exc: self.run.errors.append(f"pageerror: {exc}"))
        self.run.page.on("console", console)

    @property
    def page(self) -> Any:
        return self.run.page

    def wait(self, expression: str) -> Any:
        return self.page.wait_for_function(expression, timeout=WAIT_MS)

    def sign_in(self, phone: str, password: str, screenshot: str | None = None) -> None:
        """Open /m/ without a session: the form; fill it in and send it."""
        self.page.goto(f"{self.base}/m/", wait_until="load")
        self.wait("window.GPM && !document.getElementById('m-signin').hidden")
        _no_horizontal_scroll(self.page)
        _touch_targets(self.page, "#m-phone, #m-password, #m-signin-form button, .m-choice")
        if screenshot:
            self.page.screenshot(path=str(OUTPUT / f"{screenshot}.png"))
        self.page.fill("#m-phone", phone)
        self.page.fill("#m-password", password)
        self.page.click("#m-signin-form button[type=submit]")
        self.page.wait_for_load_state("load")

    def sign_out(self) -> None:
        """The sign-out button: the page forgets what it kept (ending a patrol first), then
        posts the form; back to the sign-in form."""
        with self.page.expect_navigation(wait_until="load", timeout=WAIT_MS):
            self.page.click("#m-signout button")
        self.wait("window.GPM && !document.getElementById('m-signin').hidden")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def phone(chromium: Chromium, worker: dict[str, Any]) -> Iterator[Phone]:
    device = Phone(chromium, worker["walk"][0])
    try:
        yield device
    finally:
        device.close()


def _db(demo: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(demo, autocommit=True) as db:
        return db.execute(query, args).fetchall()


def _contains(text: str, *parts: str) -> None:
    missing = [p for p in parts if p not in text]
    assert not missing, f"{missing} not in {text!r}"


def _no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a 360 px screen"


def _touch_targets(page: Any, selector: str) -> None:
    boxes = page.evaluate(
        f"Array.from(document.querySelectorAll({selector!r})).filter(e => e.offsetParent)"
        ".map(e => [e.id || e.className, e.getBoundingClientRect().height])"
    )
    assert boxes, selector
    small = [b for b in boxes if b[1] < 44]
    assert not small, f"touch targets under 44 px: {small}"


def test_a_worker_patrols_reports_offline_and_the_console_gets_it_once(
    worker: dict[str, Any],
    patrol: dict[str, Any],
    demo: str,
    live_server: str,
    tmp_path: Any,
    phone: Phone,
    chromium: Chromium,
) -> None:
    page = phone.page
    # ---- sign in: phone number and password -----------------------------------------------------
    phone.sign_in(worker["phone"], PASSWORD, screenshot="mobile-signin")
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    assert worker["name"] in page.inner_text("#m-who")
    me = page.evaluate("GPM.me")
    assert worker["grid"] in [g["code"] for g in me["grids"]]
    assert me["event_kinds"], me

    # ---- my grid: drawn although the basemap cannot load ----------------------------------------
    phone.wait("GPM.tabs.grid.loads >= 1 && GPM.tabs.grid.view.counts.grid === 1")
    assert page.locator("#m-map path.m-grid-outline").count() >= 1
    phone.wait("!document.getElementById('m-basemap-note').hidden")
    assert any("openstreetmap" in url for url in phone.run.blocked), phone.run.blocked[:3]
    facts = page.inner_text("#m-grid-facts")
    for label in ("覆盖率", "车巡", "步巡", "户数", "最近打卡"):
        assert label in facts, facts
    data = page.evaluate("GPM.tabs.grid.data")
    assert data["grid"]["properties"]["code"] == worker["grid"]
    if data["blind_spots"]["features"]:
        assert page.locator("#m-map path.m-blind").count() >= 1
    assert page.locator("#m-map path.m-alert-point").count() == len(
        data["alert_points"]["features"]
    )
    # the grid's households as points on the map (the grid's count beside them)
    assert page.locator("#m-map path.m-household").count() == len(
        data["household_points"]["features"]
    )
    assert bool(data["household_points"]["features"]) == bool(data["households"])
    _no_horizontal_scroll(page)
    _touch_targets(page, ".m-tab, #m-grid-refresh, #m-grid-pick")
    page.screenshot(path=str(OUTPUT / "mobile-grid.png"))

    # ---- patrol: start, walk, stop --------------------------------------------------------------
    page.click("#m-tab-patrol")
    _touch_targets(page, "#m-patrol-toggle")
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active !== null && GPM.tabs.patrol.fixes >= 1")
    gap = range(8, 12)  # no signal for these steps: the fixes wait on the phone
    for i, (lon, lat) in enumerate(worker["walk"][1:], start=2):
        if i == gap.start:
            phone.context.set_offline(True)
        if i == gap.stop:
            assert page.evaluate("GPM.state.queued.fixes") >= 1
            assert "定位 fixes" in page.inner_text("#m-queue")
            page.screenshot(path=str(OUTPUT / "mobile-patrol-offline.png"))
            phone.context.set_offline(False)
        phone.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 8})
        phone.wait(f"GPM.tabs.patrol.fixes >= {i}")
        page.wait_for_timeout(600)  # a walker's pace: ≤ 10 m in 0.6 s between readings
    recorded = page.evaluate("GPM.tabs.patrol.fixes")
    assert recorded == len(worker["walk"])
    phone.wait("GPM.state.queued && GPM.state.queued.fixes === 0")
    page.screenshot(path=str(OUTPUT / "mobile-patrol.png"))
    assert page.locator("#m-map path.m-track").count() == 1
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active === null")
    phone.wait(
        "document.querySelectorAll('#m-patrols .m-patrol').length >= 1 && "
        "!document.querySelector('#m-patrols .m-patrol').textContent.includes('进行中')"
    )
    identifier = f"staff-{worker['staff_id']}"
    stored = _db(
        demo,
        "SELECT d.kind, count(p.*) FROM device d JOIN position p ON p.device_id = d.id "
        "WHERE d.identifier = %s AND p.fix_time > now() - interval '1 hour' GROUP BY d.kind",
        identifier,
    )
    assert stored == [("handheld", recorded)], stored

    # the coverage job (hourly in the server; run now by an admin) makes them foot coverage
    done = httpx.post(
        f"{live_server}/api/v1/coverage/update", headers=auth(worker["admin"]), timeout=120
    )
    assert done.status_code == 200, done.text
    foot = _db(
        demo,
        "SELECT count(*) FROM cell_visit c JOIN device d ON d.id = c.device_id "
        "WHERE d.identifier = %s AND d.kind = 'handheld'",
        identifier,
    )
    assert foot[0][0] >= 1, "the walk's cells are stored as the handheld's coverage"
    page.click("#m-tab-grid")
    page.click("#m-grid-refresh")
    phone.wait("GPM.tabs.grid.data && GPM.tabs.grid.data.coverage.foot_share > 0")
    assert page.inner_text("[data-fact=foot] dd").strip() != "0 %"
    _contains(page.inner_text("[data-fact=checkin] dd"), f"{recorded} 定位", worker["name"])
    page.screenshot(path=str(OUTPUT / "mobile-grid-foot-coverage.png"))

    # ---- offline: report an event with a photo; it waits on the phone ---------------------------
    phone.context.set_offline(True)
    phone.wait("document.getElementById('m-net').classList.contains('m-offline')")
    page.click("#m-tab-report")
    text = f"羊群走失 {uuid.uuid4().hex[:8]}: 三十只羊越过围栏"
    kind = me["event_kinds"][0]
    page.select_option("#m-kind", kind)
    page.fill("#m-text", text)
    page.set_input_files("#m-photo", str(_photo(tmp_path / "camera.jpg", (3000, 2000))))
    phone.wait("document.querySelectorAll('#m-photos img').length === 1")
    resized = page.evaluate("[GPM.tabs.report.photos[0].width, GPM.tabs.report.photos[0].height]")
    assert max(resized) == 1600, resized
    phone.wait("GPM.tabs.report.phoneFix !== null")
    _touch_targets(page, "#m-report-send, .m-photo-remove, .m-choice")
    _no_horizontal_scroll(page)
    page.click("#m-report-send")
    phone.wait("document.querySelectorAll('#m-reports .m-report-queued').length === 1")
    assert "待发送" in page.inner_text("#m-queue")
    page.screenshot(path=str(OUTPUT / "mobile-report-offline.png"))
    assert _db(demo, "SELECT id FROM incident WHERE description = %s", text) == []

    # ---- back online: sent once -----------------------------------------------------------------
    phone.context.set_offline(False)
    phone.wait("document.querySelectorAll('#m-reports .m-report-queued').length === 0")
    phone.wait(
        "GPM.tabs.report.rows.some(r => r.text && r.text.indexOf(" + repr(text[-10:]) + ") >= 0)"
    )
    rows = _db(
        demo,
        "SELECT i.id, i.source, i.reported_by, i.escalation_level, i.status, "
        "(SELECT count(*) FROM incident_photo ph WHERE ph.incident_id = i.id) "
        "FROM incident i WHERE i.description = %s",
        text,
    )
    assert len(rows) == 1, rows
    incident, source, reporter, level, _, photos = rows[0]
    assert (source, reporter, level, photos) == ("worker", worker["staff_id"], 0, 1), rows
    # a replay of the same report (an answer lost on the way) changes nothing
    client_id = page.evaluate(f"GPM.tabs.report.rows.filter(r => r.id === {incident})[0].client_id")
    replay = page.evaluate(
        """async ([clientId, kind, text, grid]) => {
            const form = new FormData();
            form.append('client_id', clientId); form.append('kind', kind);
            form.append('text', text); form.append('grid_code', grid);
            const r = await fetch('/api/v1/m/reports', {method: 'POST', body: form,
              headers: {'X-CSRF-Token': GPM.me.csrf, 'Accept': 'application/json'}});
            return [r.status, (await r.json()).id];
        }""",
        [client_id, kind, text, worker["grid"]],
    )
    assert replay == [200, incident], replay
    assert len(_db(demo, "SELECT id FROM incident WHERE description = %s", text)) == 1
    page.screenshot(path=str(OUTPUT / "mobile-report-sent.png"))

    # ---- the dispatcher's console: the report once, marked, with its photo ----------------------
    console = chromium.open("/maps/dispatch", patrol["dispatcher"])
    desk = console.page
    desk.wait_for_function(
        f"document.querySelectorAll('.gp-incident-row[data-id=\"{incident}\"]').length === 1",
        timeout=WAIT_MS,
    )
    row = desk.locator(f'.gp-incident-row[data-id="{incident}"]')
    assert row.count() == 1
    row_text = row.inner_text()
    _contains(row_text, "网格员上报", kind, "照片 1")
    row.click()
    desk.wait_for_function(
        "document.querySelector('#gp-panel img.gp-photo') && "
        "document.querySelector('#gp-panel img.gp-photo').complete && "
        "document.querySelector('#gp-panel img.gp-photo').naturalWidth > 0",
        timeout=WAIT_MS,
    )
    panel = desk.inner_text("#gp-panel")
    _contains(panel, "网格员上报", text)
    # the worker's handheld is listed among the responders by the worker's name, not "staff-N"
    handheld = _db(demo, "SELECT id FROM device WHERE identifier = %s", identifier)[0][0]
    desk.wait_for_function(
        f"document.querySelector('.gp-vehicle-row[data-id=\"{handheld}\"]') !== null",
        timeout=WAIT_MS,
    )
    listed = desk.inner_text(f'.gp-vehicle-row[data-id="{handheld}"]')
    assert worker["name"] in listed, listed
    assert identifier not in listed, listed
    size = desk.evaluate(
        "[document.querySelector('#gp-panel img.gp-photo').naturalWidth, "
        "document.querySelector('#gp-panel img.gp-photo').naturalHeight]"
    )
    assert max(size) == 1600, size
    desk.locator("#gp-panel img.gp-photo").scroll_into_view_if_needed()
    console.screenshot("mobile-report-in-console")
    # a click on the worker's grid: its worker and their last check-in (the walk above)
    checkin = _db(
        demo,
        "SELECT max(coalesce(last_fix_at, started_at)) FROM patrol "
        "WHERE grid_codes @> ARRAY[%s]::text[]",
        worker["grid"],
    )[0][0]
    desk.evaluate(
        "([lon, lat]) => { const m = GP.map(); m.setView(GP.latLng(lon, lat), 14, "
        "{animate: false}); m.fire('click', {latlng: GP.latLng(lon, lat)}); }",
        list(worker["walk"][0]),
    )
    desk.wait_for_function(f"GP.state.gridPopup === {worker['grid']!r}", timeout=WAIT_MS)
    popup = desk.inner_text(".gp-grid-popup")
    china = (checkin.astimezone(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
    _contains(popup, worker["grid"], worker["name"], "网格员最近打卡", china)
    console.screenshot("mobile-console-grid-popup")

    # ---- the dispatcher gives it to the worker; the phone follows -------------------------------
    assigned = httpx.post(
        f"{live_server}/api/v1/incidents/{incident}/assign",
        json={"staff_id": worker["staff_id"]},
        headers=auth(patrol["dispatcher"]),
        timeout=30,
    )
    assert assigned.status_code == 200, assigned.text
    page.click("#m-tab-tasks")
    phone.wait(f"document.querySelector('#m-tasks .m-task[data-id=\"{incident}\"]') !== null")
    task = page.locator(f'#m-tasks .m-task[data-id="{incident}"]')
    _touch_targets(page, "#m-tasks .m-task-act")
    task.locator(".m-task-act").click()  # accept
    phone.wait(
        f"document.querySelector('#m-tasks .m-task[data-id=\"{incident}\"] .m-task-act') "
        "&& document.querySelector('#m-tasks .m-task[data-id=\"" + str(incident) + "\"]')"
        ".classList.contains('m-st-accepted')"
    )
    task.locator(".m-task-act").click()  # arrived
    phone.wait(
        f"document.querySelector('#m-tasks .m-task[data-id=\"{incident}\"]')"
        ".classList.contains('m-st-arrived')"
    )
    task.locator(".m-task-note").fill("羊已找回，围栏已修复")
    task.locator(".m-task-photo").set_input_files(str(_photo(tmp_path / "done.jpg", (800, 600))))
    task.locator(".m-task-act").click()  # done
    phone.wait(
        f"document.querySelector('#m-tasks .m-task[data-id=\"{incident}\"]')"
        ".classList.contains('m-st-cleared')"
    )
    page.screenshot(path=str(OUTPUT / "mobile-task-done.png"))
    final = _db(
        demo, "SELECT status, accepted_at IS NOT NULL FROM incident WHERE id = %s", incident
    )
    assert final == [("cleared", True)], final
    page.click("#m-tab-report")  # the tab shows my reports' statuses as they are now
    phone.wait(
        f"document.querySelector('#m-reports .m-report-sent[data-id=\"{incident}\"]')"
        ".classList.contains('m-st-cleared')"
    )
    assert phone.run.errors == [], phone.run.errors
    assert console.errors == [], console.errors


def test_a_worker_cannot_open_another_grid(
    worker: dict[str, Any], live_server: str, phone: Phone
) -> None:
    page = phone.page
    phone.sign_in(worker["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && GPM.tabs.grid.loads >= 1")
    other = worker["other_grid"]
    page.goto(f"{live_server}/m/?grid={other}", wait_until="load")
    phone.wait("!document.getElementById('m-grid-error').hidden")
    message = page.inner_text("#m-grid-error")
    _contains(message, other, "不是您的网格", "not yours")
    assert page.locator("#m-map path.m-grid-outline").count() == 0
    answered = page.evaluate(
        f"fetch('/api/v1/m/grids/{other}', {{headers: {{Accept: 'application/json'}}}})"
        ".then(r => r.status)"
    )
    assert answered == 404
    page.screenshot(path=str(OUTPUT / "mobile-other-grid-404.png"))
    # the worker's own grid is still theirs
    page.select_option("#m-grid-pick", worker["grid"])
    phone.wait("GPM.tabs.grid.data && document.getElementById('m-grid-error').hidden")
    # signing out ends the session and forgets the kept data; the form again
    phone.sign_out()
    kept = page.evaluate("caches.has('gp-m-data')")
    assert kept is False
    status = page.evaluate("fetch('/api/v1/m/me').then(r => r.status)")
    assert status == 401
    errors = [e for e in phone.run.errors if "status of 404" not in e and "status of 401" not in e]
    assert errors == [], errors


def test_bad_input_gets_clear_messages(
    worker: dict[str, Any], live_server: str, demo: str, tmp_path: Any, phone: Phone
) -> None:
    page = phone.page
    # a wrong password: the form again, with the reason in both languages
    phone.sign_in(worker["phone"], "not-the-password")
    phone.wait("!document.getElementById('m-signin').hidden")
    error = page.inner_text("#m-signin .m-error")
    _contains(error, "错误", "Wrong")
    page.screenshot(path=str(OUTPUT / "mobile-signin-refused.png"))
    phone.sign_in(worker["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && GPM.tabs.grid.loads >= 1")
    page.click("#m-tab-report")
    # a file that is not an image, named as one
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a picture\n" * 50)
    page.set_input_files("#m-photo", str(fake))
    phone.wait("!document.getElementById('m-photo-error').hidden")
    message = page.inner_text("#m-photo-error")
    _contains(message, "不是图片", "not an image", "photo.jpg")
    assert page.locator("#m-photos img").count() == 0
    # a fourth photo is left out, saying so
    pictures = [str(_photo(tmp_path / f"p{i}.jpg", (640, 480))) for i in range(4)]
    page.set_input_files("#m-photo", pictures)
    phone.wait("document.querySelectorAll('#m-photos img').length === 3")
    phone.wait("!document.getElementById('m-photo-error').hidden")
    assert "最多 3 张" in page.inner_text("#m-photo-error")
    # nothing typed: the form says what is missing and sends nothing
    page.click("#m-report-send")
    phone.wait("!document.getElementById('m-report-error').hidden")
    missing = page.inner_text("#m-report-error")
    _contains(missing, "请选择事件类型", "describe what happened")
    assert page.evaluate("GPM.pending().then(p => p.reports.length)") == 0
    # a place outside the worker's grid: allowed, flagged on the page and by the server
    text = f"越界上报 {uuid.uuid4().hex[:8]}"
    page.select_option("#m-kind", index=1)
    page.fill("#m-text", text)
    lon, lat = worker["outside"]
    phone.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 10})
    page.check("#m-report-form input[name=where][value=map]")
    page.check("#m-report-form input[name=where][value=phone]")
    phone.wait("document.getElementById('m-where').textContent.indexOf('网格外') >= 0")
    page.click("#m-report-send")
    phone.wait("GPM.tabs.report.rows.some(r => r.text === " + repr(text) + " && r.outside_grid)")
    assert "网格外" in page.inner_text("#m-reports")
    flagged = _db(demo, "SELECT outside_grid FROM incident WHERE description = %s", text)
    assert flagged == [(True,)], flagged
    # a report the server refuses (a photo over its limit, forged past the page) is kept on the
    # phone as refused, with the server's reason, and can be discarded
    refused = page.evaluate(
        """async () => {
            const big = new Uint8Array(3 * 1024 * 1024);
            big.set([0xff, 0xd8, 0xff, 0xe0]);
            const item = await GPM.queueReport(
                {kind: GPM.me.event_kinds[0], text: 'too large', grid_code: GPM.me.grids[0].code},
                [{blob: new Blob([big], {type: 'image/jpeg'}), name: 'big.jpg'}]);
            await GPM.flushSoon();
            return item.client_id;
        }"""
    )
    phone.wait(f"document.querySelector('.m-report-failed[data-client=\"{refused}\"]') !== null")
    reason = page.inner_text(f'.m-report-failed[data-client="{refused}"]')
    _contains(reason, "未被接受", "refused")
    page.screenshot(path=str(OUTPUT / "mobile-bad-input.png"))
    assert _db(demo, "SELECT id FROM incident WHERE description = 'too large'") == []
    page.click(f'.m-discard[data-client="{refused}"]')
    phone.wait(f"document.querySelector('.m-report-failed[data-client=\"{refused}\"]') === null")
    errors = [e for e in phone.run.errors if "the server responded with a status of 4" not in e]
    assert errors == [], errors


def test_the_worker_signs_in_with_a_one_time_code_and_sets_a_password(
    worker: dict[str, Any], patrol: dict[str, Any], demo: str, live_server: str, phone: Phone
) -> None:
    """A new worker has no password: the code the township's dispatcher prints works once, and
    signed in with it the page offers to set one."""
    _db(
        demo, "UPDATE staff SET password_hash = NULL WHERE id = %s RETURNING id", worker["staff_id"]
    )
    issued = httpx.post(
        f"{live_server}/api/v1/staff/{worker['staff_id']}/sign-in-code",
        headers=auth(patrol["dispatcher"]),
        timeout=30,
    )
    assert issued.status_code == 200, issued.text
    code = issued.json()["code"]
    page = phone.page
    page.goto(f"{live_server}/m/", wait_until="load")
    phone.wait("window.GPM && !document.getElementById('m-signin').hidden")
    page.fill("#m-phone", worker["phone"])
    page.check("#m-signin-form input[name=how][value=code]")
    assert page.locator("#m-password").is_hidden()
    page.fill("#m-code", code)
    page.click("#m-signin-form button[type=submit]")
    page.wait_for_load_state("load")
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    phone.wait("!document.getElementById('m-password-card').hidden")
    page.screenshot(path=str(OUTPUT / "mobile-code-sign-in.png"))
    page.fill("#m-new-password", "short")
    page.fill("#m-new-again", "short")
    page.click("#m-password-form button[type=submit]")
    phone.wait("!document.getElementById('m-password-error').hidden")
    assert "至少 8 位" in page.inner_text("#m-password-error")
    page.fill("#m-new-password", PASSWORD)
    page.fill("#m-new-again", PASSWORD)
    page.click("#m-password-form button[type=submit]")
    phone.wait("document.getElementById('m-password-card').hidden")
    assert "密码已设置" in page.inner_text("#m-message")
    # the code worked once
    again = httpx.post(
        f"{live_server}/m/signin",
        data={"phone": worker["phone"], "code": code, "next": "/m/"},
        headers={"Origin": live_server, "Sec-Fetch-Site": "same-origin"},
        timeout=30,
    )
    assert again.status_code == 401, again.status_code
    errors = [e for e in phone.run.errors if "status of 4" not in e]
    assert errors == [], errors


def test_offline_the_page_opens_from_the_phone_and_keeps_what_is_made(
    worker: dict[str, Any], live_server: str, demo: str, phone: Phone
) -> None:
    """The service worker keeps the shell and the last grid data: with no network at all the
    page opens again, signed in, the grid drawn from what was kept and saying so. A patrol and
    a report made offline survive the page being closed and reopened, and go once the signal
    returns (the patrol with the time its start was pressed)."""
    page = phone.page
    phone.sign_in(worker["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && GPM.tabs.grid.loads >= 1")
    phone.wait("navigator.serviceWorker.controller !== null")
    page.click("#m-grid-refresh")  # fetched again through the worker, which keeps it
    phone.wait("GPM.tabs.grid.loads >= 2")
    phone.context.set_offline(True)
    page.reload(wait_until="load")
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    phone.wait("GPM.tabs.grid.loads >= 1 && GPM.tabs.grid.view.counts.grid === 1")
    assert page.locator("#m-map path.m-grid-outline").count() >= 1
    assert "离线副本" in page.inner_text("#m-offline-data")
    assert "离线" in page.inner_text("#m-net")
    page.screenshot(path=str(OUTPUT / "mobile-offline-reload.png"))

    # still offline: a patrol started, three readings, a report — all kept on the phone
    page.click("#m-tab-patrol")
    page.click("#m-patrol-toggle")
    pressed = datetime.now(UTC)
    phone.wait("GPM.tabs.patrol.fixes >= 1")
    for i, (lon, lat) in enumerate(worker["walk"][1:3], start=2):
        page.wait_for_timeout(600)  # a walker's pace
        phone.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 8})
        phone.wait(f"GPM.tabs.patrol.fixes >= {i}")
    patrol_client = page.evaluate("GPM.tabs.patrol.active.client_id")
    page.click("#m-tab-report")
    text = f"离线上报 {uuid.uuid4().hex[:8]}"
    page.select_option("#m-kind", index=1)
    page.fill("#m-text", text)
    phone.wait("GPM.tabs.report.phoneFix !== null")
    page.click("#m-report-send")
    phone.wait("document.querySelectorAll('#m-reports .m-report-queued').length === 1")
    # the phone closes the page and opens it again, still without signal: nothing is lost
    page.reload(wait_until="load")
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    phone.wait("GPM.state.queued && GPM.state.queued.reports === 1")
    phone.wait(f"GPM.tabs.patrol.active && GPM.tabs.patrol.active.client_id === {patrol_client!r}")
    waiting = page.evaluate("GPM.state.queued.fixes")
    assert waiting >= 3, waiting
    assert _db(demo, "SELECT id FROM patrol WHERE client_id = %s", patrol_client) == []
    assert _db(demo, "SELECT id FROM incident WHERE description = %s", text) == []
    page.screenshot(path=str(OUTPUT / "mobile-offline-queue.png"))

    # the signal returns: the patrol (started when it was pressed), its fixes and the report go
    phone.context.set_offline(False)
    phone.wait("GPM.state.queued.reports === 0 && GPM.state.queued.fixes === 0")
    patrols = _db(demo, "SELECT started_at, fixes FROM patrol WHERE client_id = %s", patrol_client)
    assert len(patrols) == 1, patrols
    started_at, fixes = patrols[0]
    assert abs((started_at - pressed).total_seconds()) < 5, (started_at, pressed)
    assert fixes >= 3, fixes
    assert len(_db(demo, "SELECT id FROM incident WHERE description = %s", text)) == 1
    page.click("#m-tab-patrol")
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active === null")
    phone.wait("GPM.pending().then(p => p.patrols.length === 0)")  # the stop was answered
    ended = _db(demo, "SELECT ended_at IS NOT NULL FROM patrol WHERE client_id = %s", patrol_client)
    assert ended == [(True,)], ended
    assert phone.run.errors == [], phone.run.errors


@pytest.fixture(scope="module")
def other_worker(worker: dict[str, Any], demo: str, client: TestClient) -> dict[str, Any]:
    """The worker of the township's other grid (not ``worker``'s), with a password: the next
    one to use the same phone."""
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT g.worker_id, g.village_code, ST_X(ST_PointOnSurface(g.geom)), "
            "ST_Y(ST_PointOnSurface(g.geom)) FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE g.code = %s AND l.status = 'active' AND l.purpose = 'patrol'",
            (worker["other_grid"],),
        ).fetchone()
        assert row is not None
        staff_id, village, lon, lat = row
        if staff_id is None:
            phone = "1390524" + str(uuid.uuid4().int % 10_000).zfill(4)
            staff_id = db.execute(
                "INSERT INTO staff (name, phone, role, village_code) VALUES "
                "('测试网格员乙', %s, 'worker', %s) RETURNING id",
                (phone, village),
            ).fetchone()[0]  # type: ignore[index]
            db.execute(
                "UPDATE grid SET worker_id = %s WHERE code = %s", (staff_id, worker["other_grid"])
            )
        name, phone = db.execute(
            "SELECT name, phone FROM staff WHERE id = %s", (staff_id,)
        ).fetchone()  # type: ignore[misc]
    assert staff_id != worker["staff_id"]
    made = client.put(
        f"/api/v1/staff/{staff_id}/password",
        json={"password": PASSWORD},
        headers=auth(worker["admin"]),
    )
    assert made.status_code == 200, made.text
    walk = [_offset(lon, lat, STEP_M * i, 0.0) for i in range(3)]
    return {"staff_id": int(staff_id), "name": name, "phone": phone, "walk": walk}


def test_a_shared_phone_keeps_each_workers_walk_and_forgets_an_ended_session(
    worker: dict[str, Any], other_worker: dict[str, Any], live_server: str, demo: str, phone: Phone
) -> None:
    """One phone, two workers. A starts a patrol (its fixes cannot be sent yet) and signs out:
    the walk ends there, A's fixes stay queued under A. B signs in on the same phone: no patrol
    of A's runs, nothing of A's is counted or sent with B's session, and B's walk is stored as
    B's handheld's on B's patrol. A's session, revoked while A's page is open, ends at the next
    answer (401): the page shows the sign-in form, and opened again offline it shows no data
    of A's."""
    page = phone.page
    a, b = worker, other_worker
    since = _db(demo, "SELECT now()")[0][0]
    # the fixes and stops of A's patrol do not reach the server until told (no signal for
    # them); every try is recorded
    held: dict[str, Any] = {"on": True, "patrol": None, "tries": []}

    def is_held(url: str) -> bool:
        path = urlparse(url).path
        if not path.startswith("/api/v1/m/patrols/") or not path.endswith(("/fixes", "/stop")):
            return False
        return held["patrol"] is None or path.split("/")[5] == str(held["patrol"])

    def hold(r: Route) -> None:
        if held["on"]:
            held["tries"].append(r.request.url)
            r.abort()
        else:
            r.continue_()

    phone.context.route(is_held, hold)

    # ---- A signs in and starts a patrol; the fixes wait on the phone ----------------------------
    phone.sign_in(a["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && GPM.tabs.grid.loads >= 1")
    phone.wait("navigator.serviceWorker.controller !== null")
    page.click("#m-tab-patrol")
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active !== null && GPM.tabs.patrol.fixes >= 1")
    a_client = page.evaluate("GPM.tabs.patrol.active.client_id")
    for i, (lon, lat) in enumerate(a["walk"][1:3], start=2):
        page.wait_for_timeout(600)  # a walker's pace
        phone.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 8})
        phone.wait(f"GPM.tabs.patrol.fixes >= {i}")
    a_fixes = page.evaluate("GPM.tabs.patrol.fixes")
    a_id = phone.wait("GPM.pending().then(p => p.patrols.length === 1 && p.patrols[0].id)")
    held["patrol"] = a_id
    phone.wait(f"GPM.state.queued && GPM.state.queued.fixes === {a_fixes}")
    assert held["tries"], "A's fixes were tried (and held back)"

    # ---- A signs out: the position is no longer followed, the patrol ends on the phone ----------
    phone.sign_out()
    assert page.evaluate("GPM.db.get('kv', 'activePatrol:' + " + str(a["staff_id"]) + ")") is None
    kept = page.evaluate(
        f"GPM.db.get('outbox', {a_client!r}).then(p => p && [p.staff_id, !!p.stop_at])"
    )
    assert kept == [a["staff_id"], True], kept
    queued_a = f"GPM.db.all('fixes').then(f => f.filter(x => x.patrol === {a_client!r}).length)"
    assert page.evaluate(queued_a) == a_fixes
    assert page.evaluate("caches.has('gp-m-data')") is False

    # ---- B signs in on the same phone: nothing of A's runs, counts or goes --------------------
    held["tries"].clear()
    b_start = b["walk"][0]
    phone.context.set_geolocation({"longitude": b_start[0], "latitude": b_start[1], "accuracy": 8})
    phone.sign_in(b["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    assert page.evaluate("GPM.me.staff_id") == b["staff_id"]
    phone.wait("GPM.tabs.grid.loads >= 1 && GPM.state.queued !== undefined")
    page.click("#m-tab-patrol")
    page.wait_for_timeout(1000)  # time for a patrol to be (wrongly) resumed
    assert page.evaluate("[GPM.tabs.patrol.active, GPM.tabs.patrol.watch]") == [None, None]
    assert "开始巡查" in page.inner_text("#m-patrol-toggle")
    assert page.inner_text("#m-patrol-facts").strip() == ""
    assert page.evaluate("GPM.state.queued") == {"reports": 0, "fixes": 0}
    assert page.locator("#m-queue").is_hidden()
    assert page.evaluate("GPM.pending().then(p => [p.patrols.length, p.fixes.length])") == [0, 0]
    assert page.evaluate(queued_a) == a_fixes  # still on the phone, under A
    page.screenshot(path=str(OUTPUT / "mobile-shared-phone-next-worker.png"))

    # B walks: B's patrol, B's handheld
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active !== null && GPM.tabs.patrol.fixes >= 1")
    b_client = page.evaluate("GPM.tabs.patrol.active.client_id")
    assert b_client != a_client
    assert page.evaluate("GPM.tabs.patrol.active.staff_id") == b["staff_id"]
    for i, (lon, lat) in enumerate(b["walk"][1:], start=2):
        page.wait_for_timeout(600)
        phone.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 8})
        phone.wait(f"GPM.tabs.patrol.fixes >= {i}")
    b_fixes = page.evaluate("GPM.tabs.patrol.fixes")
    phone.wait("GPM.state.queued && GPM.state.queued.fixes === 0")
    page.click("#m-patrol-toggle")
    phone.wait("GPM.tabs.patrol.active === null")
    phone.wait("GPM.pending().then(p => p.patrols.length === 0)")  # B's stop was answered
    assert held["tries"] == [], "nothing of A's patrol was sent with B's session"
    assert page.evaluate(queued_a) == a_fixes
    stored = _db(
        demo,
        "SELECT d.identifier, d.kind, p.staff_id, p.fixes, p.ended_at IS NOT NULL FROM patrol p "
        "JOIN device d ON d.id = p.device_id WHERE p.client_id = %s",
        b_client,
    )
    assert stored == [(f"staff-{b['staff_id']}", "handheld", b["staff_id"], b_fixes, True)], stored
    positions = _db(
        demo,
        "SELECT d.identifier, count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier IN (%s, %s) AND p.fix_time >= %s GROUP BY d.identifier",
        f"staff-{a['staff_id']}",
        f"staff-{b['staff_id']}",
        since,
    )
    assert positions == [(f"staff-{b['staff_id']}", b_fixes)], positions
    a_row = _db(
        demo, "SELECT staff_id, fixes FROM patrol WHERE client_id = %s", uuid.UUID(a_client)
    )
    assert a_row == [(a["staff_id"], 0)], a_row

    # B signs out; the signal returns for A's patrol; A signs in again: A's queued walk goes
    # (with A's session), ended when A signed out; no patrol is resumed
    phone.sign_out()
    held["on"] = False
    phone.sign_in(a["phone"], PASSWORD)
    phone.wait("window.GPM && GPM.me && !document.getElementById('m-app').hidden")
    assert page.evaluate("GPM.me.staff_id") == a["staff_id"]
    phone.wait("GPM.pending().then(p => p.patrols.length === 0 && p.fixes.length === 0)")
    assert page.evaluate("GPM.tabs.patrol.active") is None
    a_row = _db(
        demo,
        "SELECT d.identifier, p.fixes, p.ended_at IS NOT NULL FROM patrol p "
        "JOIN device d ON d.id = p.device_id WHERE p.client_id = %s",
        uuid.UUID(a_client),
    )
    assert a_row == [(f"staff-{a['staff_id']}", a_fixes, True)], a_row

    # ---- A's session is revoked (an admin sets A's password: A's sessions end) ---------------
    phone.wait("GPM.tabs.grid.loads >= 1")
    phone.wait(
        "caches.open('gp-m-data').then(c => c.match('/api/v1/m/me')).then(r => !!r)"
    )  # the phone keeps A's data while A is signed in
    ended = httpx.put(
        f"{live_server}/api/v1/staff/{a['staff_id']}/password",
        json={"password": PASSWORD},
        headers=auth(a["admin"]),
        timeout=30,
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["sessions_ended"] >= 1, ended.json()
    page.evaluate("GPM.poll()")  # the next poll (every 15 s) is answered 401
    phone.wait(
        "!document.getElementById('m-signin').hidden && document.getElementById('m-app').hidden"
    )
    assert page.evaluate("GPM.me") is None
    assert "登录已失效" in page.inner_text("#m-signin-note")
    phone.wait("caches.has('gp-m-data').then(h => !h)")
    assert page.evaluate("GPM.db.get('kv', 'me')") is None
    polls = page.evaluate("GPM.state.polls")
    page.evaluate("GPM.poll()")
    assert page.evaluate("GPM.state.polls") == polls, "no polling without a session"
    page.screenshot(path=str(OUTPUT / "mobile-session-ended.png"))
    # opened again with no signal: the sign-in form, nothing of A's
    phone.context.set_offline(True)
    page.reload(wait_until="load")
    phone.wait("window.GPM && !document.getElementById('m-signin').hidden")
    page.wait_for_timeout(500)
    assert page.locator("#m-app").is_hidden()
    assert page.evaluate("GPM.me") is None
    assert a["name"] not in page.inner_text("body")
    assert page.evaluate("GPM.tabs.grid.data || null") is None
    phone.context.set_offline(False)
    # 401: the ended session's answers; ERR_FAILED: A's held fixes, and /me offline with
    # nothing kept to answer it
    errors = [
        e
        for e in phone.run.errors
        if "status of 401" not in e
        and not ("ERR_FAILED" in e and ("/api/v1/m/patrols/" in e or e.endswith("/m/me)")))
    ]
    assert errors == [], errors


def test_the_grid_popup_shows_the_workers_last_check_in(
    worker: dict[str, Any], patrol: dict[str, Any], demo: str, chromium: Chromium
) -> None:
    """On the colour grid map, a grid's popup gives its worker's last foot-patrol check-in."""
    last = _db(
        demo,
        "SELECT max(coalesce(last_fix_at, started_at)) FROM patrol "
        "WHERE grid_codes @> ARRAY[%s]::text[]",
        worker["grid"],
    )[0][0]
    run = chromium.open("/maps/coverage", patrol["viewer"])
    page = run.page
    page.wait_for_function("window.GP && GP.map() && GP.cfg().layout", timeout=WAIT_MS)
    page.evaluate(
        "code => GP.openGrid({code: code, village_code: code.substring(0, 12), coverage_pct: 0, "
        "visits: 0, blind_cells: 0, cells: 0, patrol_km: 0, dwell_h: 0}, GP.map().getCenter())",
        worker["grid"],
    )
    page.wait_for_function(
        "document.querySelector('.leaflet-popup-content') && document.querySelector("
        "'.leaflet-popup-content').textContent.indexOf('最近打卡') >= 0 && "
        "document.querySelector('.leaflet-popup-content').textContent.indexOf('…') < 0",
        timeout=WAIT_MS,
    )
    text = page.inner_text(".leaflet-popup-content")
    if last is None:
        assert "无 none" in text, text
    else:
        china = (last.astimezone(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
        assert china in text, (china, text)
    run.screenshot("mobile-grid-popup-last-check-in")
    assert run.errors == [], run.errors
