"""The dispatcher console in chromium, acted as a TOWNSHIP dispatcher would: open it; take a
call by clicking the map and filling the intake form; see the incident arrive in the list
(pushed by the server: Server-Sent Events) with an alert; read the candidates and why the
others were left out; escalate to widen the search; assign the top vehicle; the vehicle's
fixes (posted to the ingest as its terminal would) drive it to the place, arrival is detected
and the page shows 已到达 arrived without a reload; clear it with an outcome. Throughout, the
incident list, the vehicle panel and the alarm phones hold nothing outside the township.

Scene: the patrol fleet of ``conftest.patrol`` (a township of 苏尼特左旗) plus, in another
township of the county, a vehicle and an incident the dispatcher must never see.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.protocols.jt808 import Location, ReplyResult
from api.protocols.jt808.terminal import Terminal
from gis.crs import wgs84_to_gcj02
from tests.api.protocols.test_jt808_server import new_phone
from tests.browser.conftest import TOWNSHIP_OF, Chromium, api_get
from tests.conftest import auth

pytestmark = pytest.mark.browser
WAIT_MS = 30_000


def _offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (
        lon + east_m / (111_195.0 * math.cos(math.radians(lat))),
        lat + north_m / 111_195.0,
    )


@pytest.fixture(scope="module")
def console(
    patrol: dict[str, Any], demo: str, client: TestClient, make_token: Any, make_device: Any
) -> Iterator[dict[str, Any]]:
    prefix = patrol["township"][:9]
    identifiers = [d[1] for d in patrol["devices"]]
    with psycopg.connect(demo, autocommit=True) as db:
        car = db.execute(
            "SELECT d.id, d.identifier, d.home_village, s.lon, s.lat FROM device d "
            "JOIN device_state s ON s.device_id = d.id "
            "JOIN admin_area a ON a.code = d.home_village WHERE d.identifier = ANY(%s) "
            "AND s.status = 'available' AND ST_Covers(a.geom, s.geom) "
            "ORDER BY s.fix_time DESC, d.id LIMIT 1",
            (identifiers,),
        ).fetchone()
        assert car is not None, "a fleet vehicle stands in its home village"
        # the call comes from 150 m away, in the same village
        for east, north in ((150, 0), (-150, 0), (0, 150), (0, -150), (60, 60)):
            lon, lat = _offset(car[3], car[4], east, north)
            inside = db.execute(
                "SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) FROM admin_area "
                "WHERE code = %s",
                (lon, lat, car[2]),
            ).fetchone()
            if inside and inside[0]:
                break
        other = db.execute(
            "SELECT code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
            "FROM admin_area WHERE level = 'village' AND code LIKE %s AND code NOT LIKE %s "
            "ORDER BY code LIMIT 1",
            (TOWNSHIP_OF + "%", prefix + "%"),
        ).fetchone()
        assert other is not None
        grids = db.execute(
            "SELECT array_agg(g.code) FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
            "WHERE l.status = 'active' AND ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(%s, %s), "
            "4326))",
            (lon, lat),
        ).fetchone()[0]  # type: ignore[index]
        # next to the place: a vehicle of another township on the same grids' roster (never to
        # be named to this dispatcher), and an off-duty one of the village
        stranger, _ = make_device(other[0])
        off_duty, _ = make_device(car[2])
        for identifier, (x, y), status in (
            (stranger, _offset(lon, lat, 0, -80), "available"),
            (off_duty, _offset(lon, lat, 0, 60), "off_duty"),
        ):
            db.execute(
                "UPDATE device SET assigned_grids = %(g)s WHERE identifier = %(i)s",
                {"g": grids, "i": identifier},
            )
            db.execute(
                "INSERT INTO device_state (device_id, fix_time, lat, lon, geom, received_at, "
                "protocol, status) SELECT id, now(), %(y)s, %(x)s, "
                "ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), 4326), now(), 'test', %(s)s "
                "FROM device WHERE identifier = %(i)s",
                {"x": x, "y": y, "i": identifier, "s": status},
            )
        stranger_id = db.execute(
            "SELECT id FROM device WHERE identifier = %s", (stranger,)
        ).fetchone()[0]  # type: ignore[index]
    league = make_token("dispatcher", ["1525"])
    outside = client.post(
        "/api/v1/incidents",
        json={"kind": "外乡警情 elsewhere", "priority": 2, "lon": other[1], "lat": other[2]},
        headers=auth(league),
    )
    assert outside.status_code == 201, outside.text
    yield {
        "prefix": prefix,
        "point": (lon, lat),
        "village": car[2],
        "stranger": stranger_id,
        "stranger_identifier": stranger,
        "outside_incident": outside.json()["id"],
        "writer": make_token("admin", [patrol["township"]]),
    }
    with psycopg.connect(demo, autocommit=True) as db:  # the map tests count the fleet only
        db.execute("UPDATE device SET enabled = false WHERE identifier = %s", (off_duty,))


@pytest.fixture(scope="module")
def terminal(
    console: dict[str, Any], live_server: str, jt808_port: int, demo: str, make_device: Any
) -> Iterator[tuple[int, Terminal]]:
    """A JT/T 808 terminal of the console's village, online and reporting from there; it runs
    on its own event loop in a thread (Playwright holds the test's), stopped on leaving."""
    del live_server  # its listener must be up
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="terminal", daemon=True)
    thread.start()

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    identifier, _ = make_device(console["village"])
    phone = new_phone()
    with psycopg.connect(demo, autocommit=True) as db:
        device = db.execute(
            "UPDATE device SET jt808_phone = %s WHERE identifier = %s RETURNING id",
            (phone, identifier),
        ).fetchone()
    assert device is not None
    lon, lat = _offset(*console["point"], 40, 40)
    here = Location(
        alarm=0,
        status=0b11,
        latitude=round(lat, 6),
        longitude=round(lon, 6),
        altitude=1100,
        speed_ms=0.0,
        direction=0,
        time=datetime.now(UTC).replace(microsecond=0),
    )
    unit = Terminal(phone, host="127.0.0.1", port=jt808_port)

    async def online() -> None:
        await unit.login()
        assert await unit.send_location(here) == ReplyResult.SUCCESS

    call(online())
    try:
        yield int(device[0]), unit
    finally:
        call(unit.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        with psycopg.connect(demo, autocommit=True) as db:  # the map tests count the fleet only
            db.execute("UPDATE device SET enabled = false WHERE id = %s", (device[0],))


def _drive(
    base: str, token: str, device: int, to: tuple[float, float], demo: str, after: str
) -> None:
    """Five fixes a second apart from where the vehicle is to the place, posted to the batch
    ingest in the terminal's own datum, as its terminal would. The last one, at the place, is
    taken at or after ``after`` (the dispatch, ISO 8601): a fix from before the dispatch does not
    count as an arrival, and fixes carry whole seconds, so within the dispatch's own second this
    waits for the next one."""
    dispatched = datetime.fromisoformat(after).timestamp()
    time.sleep(max(0.0, math.ceil(dispatched) - time.time()))
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT d.identifier, d.crs, s.lon, s.lat FROM device d "
            "JOIN device_state s ON s.device_id = d.id WHERE d.id = %s",
            (device,),
        ).fetchone()
    assert row is not None
    identifier, crs, x0, y0 = row
    lons = np.linspace(x0, to[0], 5)
    lats = np.linspace(y0, to[1], 5)
    if crs == "gcj02":
        lons, lats = wgs84_to_gcj02(lons, lats)
    start = int(time.time()) - 4
    fixes = [
        {"time": start + i, "lon": float(x), "lat": float(y), "speed": 12.0}
        for i, (x, y) in enumerate(zip(lons, lats, strict=True))
    ]
    response = httpx.post(
        f"{base}/api/v1/positions",
        params={"device": identifier},
        json=fixes,
        headers=auth(token),
        timeout=30,
    )
    assert response.status_code in (200, 201, 202), response.text
    assert response.json().get("stored", 5) == 5, response.text


def _texts(page: Any, selector: str, attribute: str) -> list[str]:
    return list(
        page.evaluate(
            f"Array.from(document.querySelectorAll({selector!r}))"
            f".map(e => e.getAttribute({attribute!r}))"
        )
    )


def test_a_township_dispatcher_takes_a_call_to_close(
    patrol: dict[str, Any],
    console: dict[str, Any],
    demo: str,
    live_server: str,
    chromium: Chromium,
) -> None:
    prefix = console["prefix"]
    run = chromium.open("/maps/dispatch", patrol["dispatcher"])
    page = run.page
    page.wait_for_function(
        "GP.state.live === true && GP.state.snapshots >= 1 && GP.state.vehicles >= 1",
        timeout=WAIT_MS,
    )
    page.locator(".gp-vehicle-row").first.wait_for(timeout=WAIT_MS)
    # ---- nothing outside the township: vehicles, incidents, alarm phones
    villages = _texts(page, ".gp-vehicle-row", "data-village")
    assert villages
    assert all(v.startswith(prefix) for v in villages)
    assert page.evaluate(f"GP.vehicleRows[{console['stranger']}] === undefined")
    page.select_option("#gp-f-status", "all")
    areas = _texts(page, ".gp-incident-row", "data-area")
    assert areas
    assert all(a.startswith(prefix) for a in areas)
    assert page.evaluate(f"GP.incidentRows[{console['outside_incident']}] === undefined")
    page.wait_for_function("GP.state.alertPoints > 0", timeout=WAIT_MS)
    assert page.evaluate("GP.alertPoints.every(a => a[5].startsWith('" + prefix + "'))")
    assert page.locator(".gp-alert-cluster, path.gp-alert-point").count() > 0
    run.screenshot("console-1-open")

    # ---- a call: pick the place on the map, fill the intake form
    lon, lat = console["point"]
    page.evaluate(f"void GP.map().setView(GP.latLng({lon}, {lat}), 15, {{animate: false}})")
    page.click("#gp-pick")
    at = f"GP.map().latLngToContainerPoint(GP.latLng({lon}, {lat}))"
    box = "GP.map().getContainer().getBoundingClientRect()"
    x, y = page.evaluate(f"[{at}.x + {box}.left, {at}.y + {box}.top]")
    page.mouse.click(x, y)
    assert "地图点选" in page.locator("#gp-place").inner_text()
    picked = page.evaluate("[GP.place.lon, GP.place.lat]")
    assert picked == pytest.approx([lon, lat], abs=1e-4)  # one pixel at zoom 15 ≈ 5 m
    page.fill("#gp-intake input[name=caller]", "巴特尔")
    page.fill("#gp-intake input[name=phone]", "13947900000")
    page.fill("#gp-intake input[name=kind]", "盗畜 livestock theft")
    page.select_option("#gp-intake select[name=priority]", "1")
    page.fill("#gp-intake textarea[name=description]", "三头牛被赶走 three cattle driven off")
    alerts = page.evaluate("GP.state.alerts")
    page.click("#gp-create")
    page.locator("#gp-intake-result .gp-ok").wait_for(timeout=WAIT_MS)
    incident = int(page.evaluate("GP.state.created"))
    # the list learns of it from the stream (the page does not add it itself)
    row = page.locator(f".gp-incident-row[data-id='{incident}']")
    row.wait_for(timeout=WAIT_MS)
    assert (row.get_attribute("data-area") or "").startswith(prefix)
    assert page.evaluate("GP.state.alerts") == alerts + 1
    assert page.evaluate("GP.state.beeps") >= 1
    assert f"#{incident}" in page.locator("#gp-alert").inner_text()
    run.screenshot("console-2-new-incident")

    # ---- candidates, and why the others were left out
    page.locator("#gp-panel .gp-left-out").wait_for(timeout=WAIT_MS)
    reasons = set(_texts(page, "#gp-panel .gp-excluded", "data-reason"))
    assert {"off_duty", "outside_scope"} <= reasons
    left_out = page.locator("#gp-panel .gp-left-out").inner_text()
    assert "休班 off duty" in left_out
    assert "管辖范围外 outside your scope" in left_out
    assert console["stranger_identifier"] not in page.locator("#gp-panel").inner_text()
    run.screenshot("console-3-left-out")
    page.click("#gp-panel .gp-widen")  # escalate: widen the search
    page.click("#gp-confirm-yes")
    # the panel is drawn again at the village level, with the village's vehicles as candidates
    page.wait_for_function(
        "(document.querySelector('#gp-incident-status') || {}).textContent"
        ".indexOf('嘎查村 village') >= 0"
        " && document.querySelector('#gp-panel .gp-assign[data-key=device_id]') !== null",
        timeout=WAIT_MS,
    )
    top = page.locator("#gp-panel .gp-assign").first
    assert top.get_attribute("data-key") == "device_id"
    chosen = int(top.get_attribute("data-id") or 0)
    assert "km" in page.locator("#gp-panel .gp-candidate").first.inner_text()
    top.click()
    assert "指派" in page.locator("#gp-confirm").inner_text()
    page.click("#gp-confirm-yes")
    page.locator("#gp-assign-result .gp-ok").wait_for(timeout=WAIT_MS)
    page.wait_for_function("(GP.state.route || '').indexOf('ETA') >= 0", timeout=WAIT_MS)
    body = api_get(live_server, patrol["dispatcher"], f"/api/v1/incidents/{incident}")
    assert body["status"] == "dispatched"
    assert body["device_id"] == chosen
    assert body["reporter"] == "巴特尔 13947900000"
    run.screenshot("console-4-assigned")

    # ---- the vehicle drives there; its fixes mark the arrival; the page follows live
    _drive(live_server, console["writer"], chosen, (lon, lat), demo, body["dispatched_at"])
    status = ""
    for _ in range(40):  # the server detects the arrival on its own …
        status = api_get(live_server, patrol["dispatcher"], f"/api/v1/incidents/{incident}")[
            "status"
        ]
        if status == "arrived":
            break
        time.sleep(0.5)
    assert status == "arrived", "the vehicle's fixes at the place did not mark the arrival"
    page.wait_for_function(  # … and the page follows, pushed
        "document.querySelector('#gp-panel .gp-status').textContent.indexOf('已到达') >= 0",
        timeout=WAIT_MS,
    )
    assert "arrived" in page.locator("#gp-panel .gp-status").inner_text()
    assert "已到达" in row.inner_text()
    page.wait_for_function(
        f"Math.abs(GP.vehicleRows[{chosen}].lat - {lat}) < 1e-4", timeout=WAIT_MS
    )
    assert "arrived (by fix)" in page.locator("#gp-panel .gp-timeline").inner_text()
    run.screenshot("console-5-arrived")

    # ---- clear it, with an outcome (required)
    page.click("#gp-panel .gp-action-clear")
    page.click("#gp-confirm-yes")
    assert "required" in page.locator("#gp-confirm-error").inner_text()
    page.fill("#gp-confirm-text", "已找回 recovered")
    page.click("#gp-confirm-yes")
    page.wait_for_function(
        "document.querySelector('#gp-panel .gp-status').textContent.indexOf('已处置') >= 0",
        timeout=WAIT_MS,
    )
    assert "已找回 recovered" in page.locator("#gp-panel .gp-timeline").inner_text()
    body = api_get(live_server, patrol["dispatcher"], f"/api/v1/incidents/{incident}")
    assert body["status"] == "cleared"
    assert [e["detail"].get("outcome") for e in body["events"] if e["kind"] == "clear"] == [
        "已找回 recovered"
    ]
    page.wait_for_function(
        f"GP.vehicleRows[{chosen}].status === 'available'", timeout=WAIT_MS
    )  # freed, pushed by the stream

    # ---- the vehicle panel: search by part of a plate and by village name; follow
    plate = page.evaluate(f"GP.vehicleRows[{chosen}].plate")
    page.fill("#gp-vehicle-q", plate[-3:])
    assert plate in page.locator("#gp-vehicle-list").inner_text()
    village_name = page.evaluate(f"GP.vehicleRows[{chosen}].village_name")
    page.fill("#gp-vehicle-q", village_name)
    assert str(chosen) in _texts(page, ".gp-vehicle-row", "data-id")
    assert all(v.startswith(prefix) for v in _texts(page, ".gp-vehicle-row", "data-village"))
    page.click(f".gp-follow[data-id='{chosen}']")
    assert page.evaluate("GP.followId") == chosen
    # still nothing from the other township, after everything the stream brought
    assert page.evaluate(f"GP.incidentRows[{console['outside_incident']}] === undefined")
    assert page.evaluate(f"GP.vehicleRows[{console['stranger']}] === undefined")
    run.screenshot("console-6-cleared")
    assert run.errors == []


def test_a_dispatcher_texts_a_vehicle_terminal_from_the_panel(
    patrol: dict[str, Any],
    terminal: tuple[int, Terminal],
    demo: str,
    chromium: Chromium,
) -> None:
    """The vehicle panel's 短信 button: the dispatcher writes a text, confirms, and the JT/T 808
    terminal in the vehicle receives it (0x8300), answers, and the answer is on record."""
    device, unit = terminal
    run = chromium.open("/maps/dispatch", patrol["dispatcher"])
    page = run.page
    page.locator(f".gp-text[data-id='{device}']").wait_for(timeout=WAIT_MS)
    page.click(f".gp-text[data-id='{device}']")
    assert "0x8300" in page.locator("#gp-confirm").inner_text()
    page.click("#gp-confirm-yes")  # empty: refused on the page, nothing sent
    assert "required" in page.locator("#gp-confirm-error").inner_text()
    text = "请到 3 号方格巡逻 patrol square 3"
    page.fill("#gp-confirm-text", text)
    page.click("#gp-confirm-yes")
    page.wait_for_function(  # sent, and then the terminal's answer shown
        "document.getElementById('gp-follow').textContent.indexOf('已发送 sent') >= 0",
        timeout=WAIT_MS,
    )
    page.wait_for_function(
        "document.getElementById('gp-follow').textContent.indexOf('终端已确认 acknowledged') >= 0",
        timeout=WAIT_MS,
    )
    deadline = time.monotonic() + 30
    while unit.texts != [text] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unit.texts == [text]  # exactly once, as written
    with psycopg.connect(demo, autocommit=True) as db:
        rows = db.execute(
            "SELECT msg_id, params->>'text', requested_by, answered_at IS NOT NULL "
            "FROM jt808_command WHERE device_id = %s",
            (device,),
        ).fetchall()
    assert len(rows) == 1, rows
    msg_id, sent, requested_by, answered = rows[0]
    assert (msg_id, sent, answered) == (0x8300, text, True)
    assert requested_by
    assert requested_by != "system"
    run.screenshot("console-7-text-sent")
    assert run.errors == []


def test_the_polling_console_follows_the_fleet_without_the_stream(
    patrol: dict[str, Any],
    console: dict[str, Any],
    live_server: str,
    demo: str,
    chromium: Chromium,
) -> None:
    """``?live=poll`` (for proxies that hold event streams back): no stream is opened, and a
    vehicle's new fix still moves its marker, by the next snapshot."""
    run = chromium.open("/maps/dispatch?live=poll", patrol["dispatcher"])
    page = run.page
    page.wait_for_function("GP.state.vehicles >= 1 && GP.state.snapshots >= 1", timeout=WAIT_MS)
    assert page.evaluate("GP.stream === undefined")
    assert "轮询 polling" in page.locator("#gp-live").inner_text()
    device = int(page.evaluate("Number(Object.keys(GP.vehicleRows)[0])"))
    with psycopg.connect(demo, autocommit=True) as db:
        row = db.execute(
            "SELECT s.lon, s.lat FROM device_state s WHERE s.device_id = %s", (device,)
        ).fetchone()
    assert row is not None
    to = _offset(row[0], row[1], 100, 0)  # 100 m in 4 s: a plausible drive
    _drive(live_server, console["writer"], device, to, demo, datetime.now(UTC).isoformat())
    page.wait_for_function(
        f"Math.abs(GP.vehicleRows[{device}].lon - {to[0]}) < 1e-4", timeout=WAIT_MS
    )
    moved = page.evaluate(
        f"GP.vehicles.getLayer({device}).getLatLng().lng"  # the marker, not only the row
    )
    assert moved == pytest.approx(to[0], abs=1e-4)
    assert run.errors == []
