"""The incident workflow through the HTTP API: transitions and their 409s, unavailable
vehicles, the assignment race, incidents outside every grid, escalation when nobody is within
limits, scope widening, and response times. Scenes in 多伦县 (152531) and 正镶白旗 (152529)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.dispatch.stats import response_times
from api.scope import Scope
from tests.api.test_dispatch_api import (
    TOWNSHIP,
    VILLAGE,
    act,
    candidates,
    new_incident,
    offset,
    vehicle,
    village_point,
)
from tests.conftest import auth, run

pytestmark = pytest.mark.usefixtures("demo")
OTHER_TOWNSHIP_VILLAGE = "152531101201"  # 双井子村, 多伦诺尔镇
EMPTY_VILLAGE = "152529201201"  # a village of 正镶白旗 with no live vehicles anywhere near


@pytest.fixture(scope="module")
def boss(make_token: Callable[..., str]) -> dict[str, str]:
    """A league-wide dispatcher."""
    return auth(make_token("dispatcher"))


@pytest.fixture(scope="module")
def centre(demo: str) -> tuple[float, float]:
    with psycopg.connect(demo) as conn:
        return village_point(conn, VILLAGE)


# ---- the workflow --------------------------------------------------------------------------
def test_the_workflow_and_its_illegal_transitions(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
    centre: tuple[float, float],
) -> None:
    car = vehicle(db, make_device, VILLAGE, offset(centre, 800, 0))
    spare = vehicle(db, make_device, VILLAGE, offset(centre, 0, 900))
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    iid = incident["id"]
    for action in ("accept", "arrive", "clear", "release"):
        assert act(client, boss, iid, action).status_code == 409, action
    assigned = act(client, boss, iid, "assign", device_id=car)
    assert assigned.status_code == 200, assigned.text
    body = assigned.json()
    assert body["status"] == "dispatched"
    assert body["device_id"] == car
    assert body["terminal"]["terminal"] == "offline"  # no 808 terminal connected: recorded only
    assert db.execute(
        "SELECT status FROM device_state WHERE device_id = %s", (car,)
    ).fetchone() == ("busy",)
    again = act(client, boss, iid, "assign", device_id=spare)
    assert again.status_code == 409
    assert again.json()["reason"] == "status"
    released = act(client, boss, iid, "release").json()
    assert released["status"] == "new"
    assert released["device_id"] is None
    assert db.execute(
        "SELECT status FROM device_state WHERE device_id = %s", (car,)
    ).fetchone() == ("available",)
    assert act(client, boss, iid, "assign", device_id=spare).status_code == 200
    assert act(client, boss, iid, "accept").json()["status"] == "accepted"
    assert act(client, boss, iid, "accept").status_code == 409
    arrived = act(client, boss, iid, "arrive").json()
    assert arrived["status"] == "arrived"
    assert arrived["arrival_source"] == "manual"
    assert act(client, boss, iid, "clear").json()["status"] == "cleared"
    for action in ("clear", "cancel", "arrive", "escalate"):
        response = act(client, boss, iid, action)
        assert response.status_code == 409
        assert response.json()["status"] == "cleared"
    assert db.execute(
        "SELECT status FROM device_state WHERE device_id = %s", (spare,)
    ).fetchone() == ("available",)
    detail = client.get(f"/api/v1/incidents/{iid}", headers=boss).json()
    first, second = detail["dispatches"]
    assert (first["device_id"], first["outcome"]) == (car, "released")
    assert (second["device_id"], second["outcome"], second["terminal"]) == (
        spare,
        "cleared",
        "offline",
    )
    assert second["accepted_at"]
    assert second["arrived_at"]
    assert second["ended_at"]
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds == ["created", "assigned", "release", "assigned", "accept", "arrive", "clear"]


def test_assigning_an_unavailable_vehicle_is_409_with_the_reason(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
    centre: tuple[float, float],
) -> None:
    cases = {
        "busy": vehicle(db, make_device, VILLAGE, offset(centre, 300, 0), status="busy"),
        "off_duty": vehicle(db, make_device, VILLAGE, offset(centre, 300, 0), status="off_duty"),
        "stale": vehicle(db, make_device, VILLAGE, offset(centre, 300, 0), age_s=1200),
        "offline": vehicle(db, make_device, VILLAGE, offset(centre, 300, 0), age_s=7200),
    }
    cases["never reported: offline"] = vehicle(db, make_device, VILLAGE)
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    for reason, device in cases.items():
        response = act(client, boss, incident["id"], "assign", device_id=device)
        assert response.status_code == 409, reason
        assert response.json()["reason"] == reason.split(": ")[-1]
        assert "vehicle" in response.json()["detail"]
    assert act(client, boss, incident["id"], "assign", device_id=1, staff_id=1).status_code == 422


def test_two_dispatchers_assigning_at_once_get_exactly_one_200(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    make_token: Callable[..., str],
    centre: tuple[float, float],
) -> None:
    first, second = auth(make_token("dispatcher")), auth(make_token("dispatcher"))
    car = vehicle(db, make_device, VILLAGE, offset(centre, 500, 500))
    other = vehicle(db, make_device, VILLAGE, offset(centre, -500, 500))

    def race(calls: list[tuple[dict[str, str], int, int]]) -> list[int]:
        barrier = threading.Barrier(len(calls))
        codes: list[int] = [0] * len(calls)

        def go(i: int) -> None:
            headers, incident, device = calls[i]
            barrier.wait()
            codes[i] = act(client, headers, incident, "assign", device_id=device).status_code

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(codes)

    for _ in range(5):
        # one vehicle, two incidents
        a = new_incident(client, first, lon=centre[0], lat=centre[1])["id"]
        b = new_incident(client, second, lon=centre[0], lat=centre[1])["id"]
        assert race([(first, a, car), (second, b, car)]) == [200, 409]
        busy = db.execute(
            "SELECT count(*) FROM incident WHERE device_id = %s AND status = 'dispatched'", (car,)
        ).fetchone()
        assert busy == (1,)
        for incident in (a, b):
            act(client, first, incident, "cancel")
        # one incident, two vehicles
        c = new_incident(client, first, lon=centre[0], lat=centre[1])["id"]
        assert race([(first, c, other), (second, c, car)]) == [200, 409]
        dispatches = db.execute("SELECT count(*) FROM dispatch WHERE incident_id = %s", (c,))
        assert dispatches.fetchone() == (1,)
        act(client, first, c, "cancel")
        states = db.execute(
            "SELECT status FROM device_state WHERE device_id = ANY(%s)", ([car, other],)
        ).fetchall()
        assert states == [("available",), ("available",)]


# ---- escalation when nobody is within limits, scope widening --------------------------------
def test_an_incident_outside_every_grid_is_dispatchable_and_flagged(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
) -> None:
    row = db.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_ClosestPoint(geom, ST_SetSRID(ST_MakePoint("
        "116.4, 41.0), 4326)) AS p FROM admin_area WHERE code = '152531000000') x"
    ).fetchone()
    assert row is not None
    outside = offset((row[0], row[1]), 0, -3000)  # 3 km south of 多伦县, in Hebei
    covered = db.execute(
        "SELECT count(*) FROM admin_area WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), "
        "4326))",
        outside,
    ).fetchone()
    assert covered == (0,)
    incident = new_incident(client, boss, lon=outside[0], lat=outside[1])
    assert incident["outside_grids"] is True
    assert incident["grid_code"] is None
    assert 2500 < incident["outside_m"] < 60_000
    village = incident["village_code"]
    assert village.startswith("152531")
    car = vehicle(db, make_device, village, offset(outside, 1500, 1500))
    ranked = candidates(client, boss, incident["id"])
    assert ranked["escalated"] == [
        {"from": "grid", "to": "village", "reason": "no candidate within limits"}
    ]
    assert ranked["escalation_level"] == 1
    assert [c["device_id"] for c in ranked["candidates"]] == [car]
    assert act(client, boss, incident["id"], "assign", device_id=car).status_code == 200
    features = client.get("/api/v1/incidents", headers=boss).json()["features"]
    flagged = next(f for f in features if f["properties"]["id"] == incident["id"])
    assert flagged["properties"]["outside_grids"] is True
    act(client, boss, incident["id"], "cancel")


def test_nobody_within_limits_escalates_to_the_county_and_says_so(
    client: TestClient, db: psycopg.Connection[Any], boss: dict[str, str]
) -> None:
    point = village_point(db, EMPTY_VILLAGE)
    first = new_incident(client, boss, lon=point[0], lat=point[1])
    ranked = candidates(client, boss, first["id"])
    (worker,) = ranked["candidates"]  # nobody but the grid worker, at their grid
    assert worker["kind"] == "worker"
    assert worker["position"] == "grid"
    assert worker["grid_code"] == first["grid_code"]
    assert act(client, boss, first["id"], "assign", staff_id=worker["staff_id"]).status_code == 200
    second = new_incident(client, boss, lon=point[0], lat=point[1])
    ranked = candidates(client, boss, second["id"])
    assert ranked["candidates"] == []
    assert [(e["from"], e["to"]) for e in ranked["escalated"]] == [
        ("grid", "village"),
        ("village", "township"),
        ("township", "county"),
    ]
    assert ranked["escalation"] == "county"
    assert "no candidate within limits" in ranked["note"]
    assert "county" in ranked["note"]
    assert {"kind": "worker", "reason": "busy"}.items() <= ranked["excluded"][0].items()
    busy = act(client, boss, second["id"], "assign", staff_id=worker["staff_id"])
    assert busy.status_code == 409
    assert busy.json()["reason"] == "busy"
    detail = client.get(f"/api/v1/incidents/{second['id']}", headers=boss).json()
    assert [n["level"] for n in detail["notifications"]] == [0, 1, 2, 3]
    assert [n["unit_code"] for n in detail["notifications"][1:]] == [
        EMPTY_VILLAGE,
        EMPTY_VILLAGE[:9],
        EMPTY_VILLAGE[:6],
    ]
    assert act(client, boss, second["id"], "escalate").status_code == 409  # at the top
    for incident in (first, second):
        act(client, boss, incident["id"], "cancel")


def test_escalation_widens_a_township_dispatchers_responders_and_records_it(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    make_token: Callable[..., str],
    centre: tuple[float, float],
) -> None:
    township = auth(make_token("dispatcher", [TOWNSHIP]))
    near = vehicle(db, make_device, OTHER_TOWNSHIP_VILLAGE, offset(centre, 200, 0))
    own = vehicle(db, make_device, VILLAGE, offset(centre, 4000, 0))
    incident = new_incident(client, township, lon=centre[0], lat=centre[1])
    iid = incident["id"]
    for _ in range(2):  # → village → township: still only their own responders
        act(client, township, iid, "escalate")
        ranked = candidates(client, township, iid, k=10)
        ids = [c.get("device_id") for c in ranked["candidates"]]
        assert own in ids
        assert near not in ids
        assert ranked["scope_widened_to"] is None
    refused = act(client, township, iid, "assign", device_id=near)
    assert refused.status_code == 404  # beyond their command: answered like an absent vehicle
    assert act(client, township, iid, "escalate").json()["escalation"] == "county"
    ranked = candidates(client, township, iid, k=10)
    vehicles = [c["device_id"] for c in ranked["candidates"] if c["kind"] == "vehicle"]
    assert vehicles[0] == near
    assert own in vehicles
    assert ranked["scope_widened_to"] == "152531"
    candidates(client, township, iid)  # asked again: recorded once
    assert act(client, township, iid, "assign", device_id=near).status_code == 200
    events = client.get(f"/api/v1/incidents/{iid}", headers=township).json()["events"]
    widened = [e for e in events if e["kind"] == "scope_widened"]
    assert len(widened) == 1
    assert widened[0]["detail"] == {"scope": [TOWNSHIP], "responders_of": "152531"}
    assert widened[0]["level"] == 3
    act(client, township, iid, "cancel")


# ---- statistics -------------------------------------------------------------------------------
def test_response_times_per_grid_and_village(
    client: TestClient,
    db: psycopg.Connection[Any],
    db_url: str,
    make_device: Callable[..., tuple[str, str]],
    boss: dict[str, str],
    centre: tuple[float, float],
) -> None:
    car = vehicle(db, make_device, VILLAGE, offset(centre, 100, 100))
    done = new_incident(client, boss, lon=centre[0], lat=centre[1])
    for action, body in (
        ("assign", {"device_id": car}),
        ("accept", {}),
        ("arrive", {}),
        ("clear", {}),
    ):
        assert act(client, boss, done["id"], action, **body).status_code == 200
    # make the times known: called 10:00, dispatched +60 s, accepted +90 s, arrived +600 s
    db.execute(
        "UPDATE incident SET created_at = timestamptz '2026-01-15 10:00+08', "
        "dispatched_at = timestamptz '2026-01-15 10:01+08', "
        "accepted_at = timestamptz '2026-01-15 10:01:30+08', "
        "arrived_at = timestamptz '2026-01-15 10:10+08' WHERE id = %s",
        (done["id"],),
    )
    body = client.get(
        "/api/v1/incidents/response-times",
        params={"from": "2026-01-15", "to": "2026-01-15", "level": "grid"},
        headers=boss,
    ).json()
    (unit,) = [u for u in body["units"] if u["code"] == done["grid_code"]]
    assert unit["incidents"] == 1
    assert unit["arrived"] == 1
    assert unit["cleared"] == 1
    assert unit["to_dispatch_mean_s"] == 60.0
    assert unit["to_accept_median_s"] == 90.0
    assert unit["to_arrive_p90_s"] == 600.0
    assert unit["travel_mean_s"] == 540.0

    async def village_rows() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            return await response_times(
                conn, Scope.parse([TOWNSHIP]), date(2026, 1, 15), date(2026, 1, 15), "village"
            )

    rows = run(village_rows())
    assert [r["code"] for r in rows] == [VILLAGE]
    assert rows[0]["name_zh"] == "白音坤兑村委会"
    assert (
        client.get(
            "/api/v1/incidents/response-times", params={"level": "planet"}, headers=boss
        ).status_code
        == 422
    )
    yesterday = (date(2026, 1, 15) - timedelta(days=1)).isoformat()
    empty = client.get(
        "/api/v1/incidents/response-times",
        params={"from": yesterday, "to": yesterday},
        headers=boss,
    ).json()
    assert all(u["code"] != VILLAGE for u in empty["units"])
