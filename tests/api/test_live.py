"""Live updates (Server-Sent Events) for the dispatcher console, and the API it builds on:
authentication before a byte is streamed, the caps on streams, one shared poll whose events
reach only the subscribers whose scope holds their rows, slow clients dropped; the compact
snapshots; candidates that say why vehicles beyond the level or the scope were left out; a
clear's outcome and a cancel's reason in the timeline; the place search.

Scenes in 苏尼特右旗 (152524): two townships, one dispatcher each, and a league user.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import Principal
from api.dispatch.live import LiveHub, Subscriber
from api.dispatch.locator import GridLocator
from api.errors import TooManyRequests, Unavailable
from api.scope import Scope
from api.settings import MapSettings
from tests.api.test_dispatch_api import (
    act,
    candidates,
    new_incident,
    offset,
    vehicle,
    village_point,
)
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152524"


@pytest.fixture(scope="module")
def scene(demo: str, make_token: Callable[..., str]) -> dict[str, Any]:
    with psycopg.connect(demo, autocommit=True) as db:
        rows = db.execute(
            "SELECT DISTINCT ON (parent_code) parent_code, code FROM admin_area "
            "WHERE level = 'village' AND code LIKE %s ORDER BY parent_code, code LIMIT 2",
            (COUNTY + "%",),
        ).fetchall()
    (town_a, village_a), (town_b, village_b) = rows
    return {
        "town_a": town_a[:9],  # the township's code prefix (152524100, not 152524100000)
        "town_b": town_b[:9],
        "village_a": village_a,
        "village_b": village_b,
        "a": make_token("dispatcher", [town_a]),
        "b": make_token("dispatcher", [town_b]),
        "league": make_token("dispatcher", ["1525"]),
    }


def principal(name: str, *codes: str) -> Principal:
    return Principal(name=name, role="dispatcher", scope=Scope.parse(codes))


def frames(sub: Subscriber) -> list[tuple[str, dict[str, Any]]]:
    """What waits in a subscriber's queue, parsed (event name, data)."""
    out = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        assert item is not None
        lines = dict(line.split(": ", 1) for line in item.strip().splitlines() if ": " in line)
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_the_stream_authenticates_before_streaming(client: TestClient) -> None:
    for headers in ({}, auth("not-a-token")):
        response = client.get("/api/v1/live/stream", headers=headers)
        assert response.status_code == 401
        assert not response.headers["content-type"].startswith("text/event-stream")
        assert "event:" not in response.text


def test_streams_are_capped_in_all_and_per_user(client: TestClient, scene: dict[str, Any]) -> None:
    hub = LiveHub(pool=None, settings=MapSettings(live_max_streams=3, live_streams_per_user=2))  # type: ignore[arg-type]

    async def fill() -> None:
        hub._task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
        hub._hooked = True  # no signal handlers from a test
        hub.subscribe(principal("ann", "152524"))
        hub.subscribe(principal("ann", "152524"))
        with pytest.raises(TooManyRequests, match="at most 2 live streams per user"):
            hub.subscribe(principal("ann", "152524"))
        hub.subscribe(principal("bob", "152524"))
        with pytest.raises(Unavailable, match="too many live streams"):
            hub.subscribe(principal("cat", "152524"))

    run(fill())
    assert len(hub.subscribers) == 3
    assert hub.counters["refused"] == 2
    # over HTTP: refused with a JSON error before a byte of the stream
    app = client.app
    saved = getattr(app.state, "live", None)  # type: ignore[attr-defined]
    app.state.live = hub  # type: ignore[attr-defined]
    try:
        response = client.get("/api/v1/live/stream", headers=auth(scene["a"]))
    finally:
        app.state.live = saved  # type: ignore[attr-defined]
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


def test_a_slow_client_is_dropped_not_waited_for() -> None:
    hub = LiveHub(pool=None, settings=MapSettings(live_queue=8))  # type: ignore[arg-type]
    slow = Subscriber(principal("slow", "152524"), asyncio.Queue(maxsize=8))
    quick = Subscriber(principal("quick", "152524"), asyncio.Queue(maxsize=8))
    hub.subscribers.update({slow, quick})
    for i in range(9):
        hub._offer(slow, f"event: x\ndata: {i}\n\n")
        hub._offer(quick, f"event: x\ndata: {i}\n\n")
        if i < 8:
            quick.queue.get_nowait()  # this one keeps up
    assert slow.dropped
    assert slow not in hub.subscribers
    assert slow.queue.qsize() == 1
    assert slow.queue.get_nowait() is None
    assert not quick.dropped
    assert quick in hub.subscribers
    assert hub.counters["dropped"] == 1


def test_one_poll_feeds_every_stream_only_its_scope(
    client: TestClient,
    demo: str,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    scene: dict[str, Any],
) -> None:
    hub = LiveHub(pool=None, settings=MapSettings())  # type: ignore[arg-type]
    subs = {
        name: Subscriber(principal(name, *codes), asyncio.Queue(maxsize=1000))
        for name, codes in (
            ("a", (scene["town_a"],)),
            ("b", (scene["town_b"],)),
            ("league", ("1525",)),
        )
    }
    hub.subscribers.update(subs.values())

    async def poll() -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            await hub.poll(conn)

    run(poll())  # the first poll only sets the starting point
    assert all(s.queue.empty() for s in subs.values())
    point_a = village_point(db, scene["village_a"])
    car_a = vehicle(db, make_device, scene["village_a"], offset(point_a, 500, 0))
    car_b = vehicle(db, make_device, scene["village_b"], village_point(db, scene["village_b"]))
    incident = new_incident(client, auth(scene["a"]), lon=point_a[0], lat=point_a[1])
    run(poll())
    got = {name: frames(sub) for name, sub in subs.items()}
    polls_before = hub.counters["polls"]

    def incidents(name: str) -> set[int]:
        return {d["incident"]["id"] for e, d in got[name] if e == "incident"}

    def cars(name: str) -> set[int]:
        return {v["id"] for e, d in got[name] if e == "vehicles" for v in d["vehicles"]}

    assert incident["id"] in incidents("a")
    assert incident["id"] in incidents("league")
    assert incident["id"] not in incidents("b")
    assert car_a in cars("a")
    assert car_b not in cars("a")
    streamed = [v for e, d in got["a"] if e == "vehicles" for v in d["vehicles"]]
    grid_a = next(v["grid"] for v in streamed if v["id"] == car_a)
    assert grid_a
    assert grid_a.startswith(scene["village_a"])  # named by the process's grid index
    assert car_b in cars("b")
    assert car_a not in cars("b")
    assert {car_a, car_b} <= cars("league")
    # content: nothing of another township in a township's stream
    for name, town in (("a", scene["town_a"]), ("b", scene["town_b"])):
        for event, data in got[name]:
            if event == "incident":
                assert data["incident"]["area_code"].startswith(town)
                assert [s["kind"] for s in data["events"]][:1] == ["created"]
            else:
                assert all(v["village"].startswith(town) for v in data["vehicles"])
    # a step of the incident is one more event, with the vehicle it touched
    assert (
        act(client, auth(scene["a"]), incident["id"], "assign", device_id=car_a).status_code == 200
    )
    run(poll())
    got = {name: frames(sub) for name, sub in subs.items()}
    steps = [d for e, d in got["a"] if e == "incident"]
    assert steps
    assert steps[-1]["incident"]["status"] == "dispatched"
    assert [s["kind"] for s in steps[-1]["events"]] == ["assigned"]
    busy = [v for e, d in got["a"] if e == "vehicles" for v in d["vehicles"] if v["id"] == car_a]
    assert busy
    assert busy[-1]["status"] == "busy"
    assert not any(e == "incident" for e, _ in got["b"])
    # nothing new: a poll sends nothing (one query set per poll, not one per client)
    run(poll())
    assert all(s.queue.empty() for s in subs.values())
    assert hub.counters["polls"] == polls_before + 2


def test_snapshots_are_compact_and_scoped(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    scene: dict[str, Any],
) -> None:
    car = vehicle(db, make_device, scene["village_a"], village_point(db, scene["village_a"]))
    mine = client.get("/api/v1/live/vehicles", headers=auth(scene["a"])).json()
    others = client.get("/api/v1/live/vehicles", headers=auth(scene["b"])).json()
    assert car in {v["id"] for v in mine["vehicles"]}
    assert car not in {v["id"] for v in others["vehicles"]}
    assert all(v["village"].startswith(scene["town_a"]) for v in mine["vehicles"])
    row = next(v for v in mine["vehicles"] if v["id"] == car)
    assert row["grid"]
    assert row["grid"].startswith(scene["village_a"])
    assert row["village_name"]
    # what changed while a page opened its stream: only vehicles that reported after `now`
    later = vehicle(db, make_device, scene["village_a"], village_point(db, scene["village_a"]))
    since = client.get(
        "/api/v1/live/vehicles", params={"since": mine["now"]}, headers=auth(scene["a"])
    ).json()
    assert later in {v["id"] for v in since["vehicles"]}
    assert car not in {v["id"] for v in since["vehicles"]}
    assert all(v["village"].startswith(scene["town_a"]) for v in since["vehicles"])
    bad = client.get("/api/v1/live/vehicles?since=yesterday", headers=auth(scene["a"]))
    assert bad.status_code == 422
    assert "since" in bad.text
    points = client.get("/api/v1/live/alert-points", headers=auth(scene["a"])).json()
    assert points["columns"] == ["id", "lon", "lat", "kind", "name", "village"]
    assert points["points"]
    assert all(p[5].startswith(scene["town_a"]) for p in points["points"])


def test_the_grid_index_follows_the_active_layouts(demo: str) -> None:
    """Built once, kept while the active layouts stay, rebuilt when one changes — and it names
    the same grid as the database's own point-in-polygon test, vehicle for vehicle."""

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            locator = GridLocator()
            first = await locator.index(conn)
            assert len(first) > 0
            assert await locator.index(conn) is first
            assert locator.builds == 1
            cur = await conn.execute(
                "SELECT s.lon, s.lat, (SELECT g.code FROM grid g JOIN grid_layout l "
                "ON l.id = g.layout_id WHERE l.status = 'active' AND l.purpose = 'patrol' "
                "AND ST_Covers(g.geom, s.geom) ORDER BY length(nbs_prefix(l.area_code)) DESC, "
                "g.code LIMIT 1) FROM device_state s"
            )
            rows = await cur.fetchall()
            assert rows
            got = first.locate([r[0] for r in rows], [r[1] for r in rows])
            assert list(got) == [r[2] for r in rows]
            async with conn.transaction(force_rollback=True):
                await conn.execute(
                    "UPDATE grid_layout SET version = version + 1 "
                    "WHERE status = 'active' AND purpose = 'patrol'"
                )
                assert await locator.index(conn) is not first
            assert locator.builds == 2

    run(go())


def test_candidates_say_how_many_were_beyond_the_level_or_the_scope(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    scene: dict[str, Any],
) -> None:
    here = village_point(db, scene["village_b"])
    # a free vehicle of the same township next to the incident, homed in another village of it
    # (outside the grid level) and one of township A next to it (outside B's scope)
    other_village = db.execute(
        "SELECT code FROM admin_area WHERE level = 'village' AND code LIKE %s AND code <> %s "
        "ORDER BY code LIMIT 1",
        (scene["town_b"] + "%", scene["village_b"]),
    ).fetchone()[0]  # type: ignore[index]
    vehicle(db, make_device, other_village, offset(here, 200, 0))
    vehicle(db, make_device, scene["village_a"], offset(here, 0, 300))
    incident = new_incident(client, auth(scene["b"]), lon=here[0], lat=here[1])
    body = candidates(client, auth(scene["b"]), incident["id"])
    left = body["left_out"]
    assert left["outside_level"] >= 1
    assert left["level"] in ("grid", "village", "township")
    text = json.dumps(body, ensure_ascii=False)
    assert scene["village_a"] not in text  # never named to a scoped dispatcher: counted only
    league = candidates(client, auth(scene["league"]), incident["id"])
    assert league["left_out"]["outside_scope"] == 0


def test_clear_keeps_its_outcome_and_cancel_its_reason(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    scene: dict[str, Any],
) -> None:
    here = village_point(db, scene["village_a"])
    car = vehicle(db, make_device, scene["village_a"], offset(here, 100, 0))
    headers = auth(scene["a"])
    first = new_incident(client, headers, lon=here[0], lat=here[1])
    assert act(client, headers, first["id"], "assign", device_id=car).status_code == 200
    assert act(client, headers, first["id"], "arrive").status_code == 200
    cleared = act(client, headers, first["id"], "clear", outcome="已处理 resolved", note="ok")
    assert cleared.status_code == 200, cleared.text
    second = new_incident(client, headers, lon=here[0], lat=here[1])
    assert (
        act(client, headers, second["id"], "cancel", reason="重复报警 duplicate").status_code == 200
    )
    too_long = act(client, headers, second["id"], "cancel", reason="x" * 201)
    assert too_long.status_code == 422
    assert "reason" in too_long.text
    events = client.get(f"/api/v1/incidents/{first['id']}", headers=headers).json()["events"]
    clear = next(e for e in events if e["kind"] == "clear")
    assert clear["detail"]["outcome"] == "已处理 resolved"
    assert clear["detail"]["note"] == "ok"
    assert clear["detail"]["device_id"] == car
    events = client.get(f"/api/v1/incidents/{second['id']}", headers=headers).json()["events"]
    assert (
        next(e for e in events if e["kind"] == "cancel")["detail"]["reason"] == "重复报警 duplicate"
    )
    audit = db.execute(
        "SELECT detail FROM audit_log WHERE action = 'incident.clear' AND object_id = %s",
        (str(first["id"]),),
    ).fetchone()
    assert audit is not None
    assert audit[0]["outcome"] == "已处理 resolved"


def test_places_are_found_by_name_code_or_phone_in_scope(
    client: TestClient, db: psycopg.Connection[Any], scene: dict[str, Any]
) -> None:
    name = db.execute(
        "SELECT name_zh FROM admin_area WHERE code = %s", (scene["village_a"],)
    ).fetchone()[0]  # type: ignore[index]
    found = client.get(
        "/api/v1/incidents/places", params={"q": name}, headers=auth(scene["a"])
    ).json()["places"]
    assert any(p["kind"] == "village" and p["code"] == scene["village_a"] for p in found)
    assert all((p["code"] or "").startswith(scene["town_a"]) for p in found)
    grid = client.get(
        "/api/v1/incidents/places",
        params={"q": scene["village_a"] + "00"},
        headers=auth(scene["a"]),
    ).json()["places"]
    assert any(p["kind"] == "grid" for p in grid)
    point = db.execute(
        "SELECT id, phone FROM alert_point WHERE village_code = %s AND phone IS NOT NULL "
        "ORDER BY id LIMIT 1",
        (scene["village_a"],),
    ).fetchone()
    assert point is not None
    by_phone = client.get(
        "/api/v1/incidents/places", params={"q": point[1]}, headers=auth(scene["a"])
    ).json()["places"]
    assert any(p["kind"] == "alert_point" and p["id"] == point[0] for p in by_phone)
    # another township's dispatcher finds none of it
    hidden = client.get(
        "/api/v1/incidents/places", params={"q": name}, headers=auth(scene["b"])
    ).json()["places"]
    assert not any(p["code"] == scene["village_a"] for p in hidden)
    assert (
        client.get(
            "/api/v1/incidents/places", params={"q": ""}, headers=auth(scene["a"])
        ).status_code
        == 422
    )


def test_the_console_polls_only_when_asked(client: TestClient, scene: dict[str, Any]) -> None:
    """``?live=poll`` (proxies that hold event streams back): the page polls every
    GRIDPATROL_MAP_VEHICLE_REFRESH_S instead of opening the stream; anything else is a 422."""
    headers = auth(scene["a"])
    pushed = client.get("/maps/dispatch", headers=headers)
    polled = client.get("/maps/dispatch?live=poll", headers=headers)
    assert pushed.status_code == polled.status_code == 200
    assert '"transport": "stream"' in pushed.text
    assert '"transport": "poll"' in polled.text
    assert f'"refreshS": {MapSettings().vehicle_refresh_s}' in polled.text
    wrong = client.get("/maps/dispatch?live=carrier-pigeon", headers=headers)
    assert wrong.status_code == 422
    assert "live" in wrong.text
