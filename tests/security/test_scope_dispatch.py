"""Issue 18, item 3: a dispatcher sends only responders of their scope (or of the widened scope
of the incident's recorded escalation).

The review assigned a worker of another county to an incident of a township dispatcher and got
200 with the worker's name: any staff id passed as soon as the incident's grid was in the
dispatcher's scope, so ids enumerated names. A responder outside the dispatcher's command is now
answered like an id that does not exist (404 "no staff member N" / "no device N", nothing of the
responder in the answer) and nothing is written: the incident stays new, no dispatch row, no
event, no audit entry, the vehicle stays available.

Scenes live in 锡林浩特市 (152502), township 152502100, on the demo's active patrol layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.test_dispatch_api import place, vehicle, village_point
from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152502"  # 锡林浩特市
TOWNSHIP = "152502100"
OUT_COUNTY = "152525"  # 东乌珠穆沁旗


def _one(db: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = db.execute(query, args).fetchone()
    assert row is not None, query
    assert row[0] is not None, query
    return row if len(row) > 1 else row[0]


@dataclass
class Scene:
    grid: str  # the incident's grid, in TOWNSHIP
    own_worker: int  # the worker of that grid
    same_township: tuple[int, str]  # (staff id, name) of another grid of TOWNSHIP
    same_county: tuple[int, str]  # of a grid of COUNTY outside TOWNSHIP
    other_county: tuple[int, str]  # of a grid of OUT_COUNTY
    headers: dict[str, str]  # a township dispatcher
    incidents: list[int]


@pytest.fixture(scope="module")
def scene(client: TestClient, db_url: str, make_token: Callable[..., str]) -> Iterator[Scene]:
    with psycopg.connect(db_url, autocommit=True) as db:
        active = _one(
            db, "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        )

        def worker(where: str, *args: Any) -> tuple[str, int, str]:
            return _one(
                db,
                "SELECT g.code, s.id, s.name FROM grid g JOIN staff s ON s.id = g.worker_id "
                f"WHERE g.layout_id = %s AND {where} ORDER BY g.code LIMIT 1",
                active,
                *args,
            )

        grid, own, _ = worker("g.code LIKE %s", TOWNSHIP + "%")
        _, township_id, township_name = worker(
            "g.code LIKE %s AND g.code > %s", TOWNSHIP + "%", grid
        )
        _, county_id, county_name = worker(
            "g.code LIKE %s AND g.code NOT LIKE %s", COUNTY + "%", TOWNSHIP + "%"
        )
        _, out_id, out_name = worker("g.code LIKE %s", OUT_COUNTY + "%")
    made = Scene(
        grid=grid,
        own_worker=own,
        same_township=(township_id, township_name),
        same_county=(county_id, county_name),
        other_county=(out_id, out_name),
        headers=auth(make_token("dispatcher", [TOWNSHIP])),
        incidents=[],
    )
    yield made
    # free every responder this module bound, so no later test finds them busy
    league = auth(make_token("dispatcher", ["*"]))
    for incident in made.incidents:
        client.post(f"/api/v1/incidents/{incident}/cancel", headers=league)


def _incident(client: TestClient, scene: Scene) -> int:
    made = client.post(
        "/api/v1/incidents",
        json={"kind": "scope dispatch", "priority": 2, "grid_code": scene.grid},
        headers=scene.headers,
    )
    assert made.status_code == 201, made.text
    scene.incidents.append(int(made.json()["id"]))
    return scene.incidents[-1]


def _nothing_written(db: psycopg.Connection[Any], incident: int) -> None:
    status = _one(db, "SELECT status FROM incident WHERE id = %s", incident)
    assert status == "new"
    assert _one(db, "SELECT count(*) FROM dispatch WHERE incident_id = %s", incident) == 0
    assert (
        _one(
            db,
            "SELECT count(*) FROM incident_event WHERE incident_id = %s AND kind = 'assigned'",
            incident,
        )
        == 0
    )
    assert (
        _one(
            db,
            "SELECT count(*) FROM audit_log WHERE action = 'incident.assign' AND object_id = %s",
            str(incident),
        )
        == 0
    )


def test_a_worker_of_another_county_is_no_such_staff(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    incident = _incident(client, scene)
    staff_id, name = scene.other_county
    refused = client.post(
        f"/api/v1/incidents/{incident}/assign", json={"staff_id": staff_id}, headers=scene.headers
    )
    assert refused.status_code == 404, refused.text
    assert name not in refused.text
    assert f"no staff member {staff_id}" in refused.json()["detail"]
    _nothing_written(db, incident)
    # an id that does not exist at all answers the same
    absent = client.post(
        f"/api/v1/incidents/{incident}/assign",
        json={"staff_id": 2_000_000_000},
        headers=scene.headers,
    )
    assert absent.status_code == 404
    assert absent.json()["detail"].replace("2000000000", str(staff_id)) == refused.json()["detail"]


def test_a_worker_of_another_township_needs_the_county_escalation(
    client: TestClient, scene: Scene, db: psycopg.Connection[Any]
) -> None:
    incident = _incident(client, scene)
    staff_id, name = scene.same_county
    url = f"/api/v1/incidents/{incident}/assign"
    refused = client.post(url, json={"staff_id": staff_id}, headers=scene.headers)
    assert refused.status_code == 404, refused.text
    assert name not in refused.text
    _nothing_written(db, incident)
    for level in (1, 2):  # village, township: the county's worker is still beyond the unit
        up = client.post(f"/api/v1/incidents/{incident}/escalate", headers=scene.headers)
        assert up.status_code == 200, up.text
        assert up.json()["escalation_level"] == level
        again = client.post(url, json={"staff_id": staff_id}, headers=scene.headers)
        assert again.status_code == 404, (level, again.text)
    # even the county level never reaches another county
    up = client.post(f"/api/v1/incidents/{incident}/escalate", headers=scene.headers)
    assert up.json()["escalation_level"] == 3
    beyond = client.post(url, json={"staff_id": scene.other_county[0]}, headers=scene.headers)
    assert beyond.status_code == 404, beyond.text
    assert scene.other_county[1] not in beyond.text
    _nothing_written(db, incident)
    # the recorded county escalation summons the county's worker
    ok = client.post(url, json={"staff_id": staff_id}, headers=scene.headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "dispatched"


def test_workers_of_the_scope_and_of_the_incidents_grid_are_sent(
    client: TestClient, scene: Scene
) -> None:
    for staff_id in (scene.same_township[0], scene.own_worker):
        incident = _incident(client, scene)
        ok = client.post(
            f"/api/v1/incidents/{incident}/assign",
            json={"staff_id": staff_id},
            headers=scene.headers,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["staff_id"] == staff_id
        freed = client.post(f"/api/v1/incidents/{incident}/cancel", headers=scene.headers)
        assert freed.status_code == 200, freed.text


def test_a_grid_scoped_dispatcher_sends_the_worker_of_their_grid_only(
    client: TestClient, scene: Scene, make_token: Callable[..., str]
) -> None:
    grid_user = auth(make_token("dispatcher", [scene.grid]))
    incident = _incident(client, scene)
    url = f"/api/v1/incidents/{incident}/assign"
    neighbour = client.post(url, json={"staff_id": scene.same_township[0]}, headers=grid_user)
    assert neighbour.status_code == 404, neighbour.text
    assert scene.same_township[1] not in neighbour.text
    ok = client.post(url, json={"staff_id": scene.own_worker}, headers=grid_user)
    assert ok.status_code == 200, ok.text


def test_a_vehicle_of_another_county_is_no_such_device(
    client: TestClient,
    scene: Scene,
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
) -> None:
    out_village = _one(
        db,
        "SELECT min(code) FROM admin_area WHERE level = 'village' AND code LIKE %s",
        OUT_COUNTY + "%",
    )
    car = vehicle(db, make_device, out_village, village_point(db, out_village))
    identifier = _one(db, "SELECT identifier FROM device WHERE id = %s", car)
    incident = _incident(client, scene)
    refused = client.post(
        f"/api/v1/incidents/{incident}/assign", json={"device_id": car}, headers=scene.headers
    )
    assert refused.status_code == 404, refused.text
    assert identifier not in refused.text
    assert f"no device {car}" in refused.json()["detail"]
    assert _one(db, "SELECT status FROM device_state WHERE device_id = %s", car) == "available"
    _nothing_written(db, incident)
    # the same vehicle homed inside the township is sent
    inside = _one(
        db,
        "SELECT min(code) FROM admin_area WHERE level = 'village' AND code LIKE %s",
        TOWNSHIP + "%",
    )
    db.execute("UPDATE device SET home_village = %s WHERE id = %s", (inside, car))
    place(db, car, village_point(db, inside))
    ok = client.post(
        f"/api/v1/incidents/{incident}/assign", json={"device_id": car}, headers=scene.headers
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["device_id"] == car
