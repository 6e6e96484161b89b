"""Incidents through the HTTP API: creation in three forms, bad input, scope, the GeoJSON list;
and the helpers the other dispatch tests share. Scenes live in 多伦县 (152531), which no other
test touches (see test_dispatch_workflow for the workflow)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
TOWNSHIP = "152531100"  # 大北沟镇
VILLAGE = "152531100205"  # 白音坤兑村 (40 km²)


# ---- helpers shared by the dispatch tests ----------------------------------------------------
def village_point(db: psycopg.Connection[Any], code: str) -> tuple[float, float]:
    row = db.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM admin_area "
        "WHERE code = %s) x",
        (code,),
    ).fetchone()
    assert row is not None, code
    return float(row[0]), float(row[1])


def offset(point: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    lon, lat = point
    return (
        lon + east_m / (111_195.0 * math.cos(math.radians(lat))),
        lat + north_m / 111_195.0,
    )


def place(
    db: psycopg.Connection[Any],
    device_id: int,
    point: tuple[float, float],
    *,
    age_s: float = 5.0,
    status: str = "available",
) -> None:
    """Set a vehicle's latest fix (as ingest would) and its dispatch status."""
    db.execute(
        """
        INSERT INTO device_state (device_id, fix_time, lat, lon, geom, received_at, protocol,
                                  status)
        VALUES (%(d)s, now() - %(age)s * interval '1 second', %(y)s, %(x)s,
                ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), 4326), now(), 'test', %(status)s)
        ON CONFLICT (device_id) DO UPDATE SET fix_time = EXCLUDED.fix_time, lat = EXCLUDED.lat,
            lon = EXCLUDED.lon, geom = EXCLUDED.geom, status = EXCLUDED.status
        """,
        {"d": device_id, "age": age_s, "x": point[0], "y": point[1], "status": status},
    )


def vehicle(
    db: psycopg.Connection[Any],
    make_device: Callable[..., tuple[str, str]],
    village: str,
    point: tuple[float, float] | None = None,
    **state: Any,
) -> int:
    """A new vehicle homed in ``village``, placed at ``point`` (no fix when None)."""
    identifier, _ = make_device(village)
    row = db.execute("SELECT id FROM device WHERE identifier = %s", (identifier,)).fetchone()
    assert row is not None
    if point is not None:
        place(db, int(row[0]), point, **state)
    return int(row[0])


def new_incident(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/incidents", json={"kind": "theft", "priority": 2, **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def act(
    client: TestClient, headers: dict[str, str], incident: int, action: str, **body: Any
) -> Any:
    path = f"/api/v1/incidents/{incident}/{action}"
    return client.post(path, json=body or None, headers=headers)


def candidates(client: TestClient, headers: dict[str, str], incident: int, **query: Any) -> Any:
    response = client.get(f"/api/v1/incidents/{incident}/candidates", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def boss(make_token: Callable[..., str]) -> dict[str, str]:
    """A league-wide dispatcher."""
    return auth(make_token("dispatcher"))


@pytest.fixture(scope="module")
def centre(demo: str) -> tuple[float, float]:
    with psycopg.connect(demo) as conn:
        return village_point(conn, VILLAGE)


# ---- creation and bad input ------------------------------------------------------------------
def test_an_incident_is_placed_in_its_grid_whichever_way_it_is_given(
    client: TestClient,
    db: psycopg.Connection[Any],
    boss: dict[str, str],
    centre: tuple[float, float],
) -> None:
    at_point = new_incident(client, boss, lon=centre[0], lat=centre[1], reporter="13900000000")
    assert at_point["status"] == "new"
    assert at_point["escalation_level"] == 0
    assert at_point["village_code"] == VILLAGE
    assert at_point["grid_code"].startswith(VILLAGE)
    assert at_point["outside_grids"] is False
    assert at_point["terrain"] == "rural"
    assert (at_point["lon"], at_point["lat"]) == pytest.approx(centre)
    alert = db.execute(
        "SELECT id, ST_X(geom), ST_Y(geom) FROM alert_point WHERE village_code = %s LIMIT 1",
        (VILLAGE,),
    ).fetchone()
    assert alert is not None
    at_alert = new_incident(client, boss, alert_point_id=alert[0])
    assert at_alert["alert_point_id"] == alert[0]
    assert (at_alert["lon"], at_alert["lat"]) == pytest.approx((alert[1], alert[2]))
    at_grid = new_incident(client, boss, grid_code=at_point["grid_code"])
    assert at_grid["grid_code"] == at_point["grid_code"]
    detail = client.get(f"/api/v1/incidents/{at_point['id']}", headers=boss).json()
    assert [e["kind"] for e in detail["events"]] == ["created"]
    assert detail["dispatches"] == []
    (warning,) = detail["notifications"]
    assert warning["level"] == 0
    assert warning["unit_code"] == at_point["grid_code"]
    assert "网格预警" in warning["message"]
    assert warning["recipient"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"lon": 116.5, "lat": 95.0}, 422, "lat"),
        ({"lon": "east", "lat": 42.2}, 422, "lon"),
        ({"lon": 116.5}, 422, "lat"),
        ({"lon": 116.5, "lat": 42.2, "alert_point_id": 1}, 422, "alert_point_id"),
        ({}, 422, "grid_code"),
        ({"lon": 100.0, "lat": 30.0}, 422, "lon"),  # 1,700 km from every village
        ({"alert_point_id": 999_999_999}, 404, "alert_point_id"),
        ({"grid_code": "152531100205999"}, 404, "grid_code"),
        ({"grid_code": "1525"}, 422, "grid_code"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    client: TestClient, boss: dict[str, str], body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post(
        "/api/v1/incidents", json={"kind": "x", "priority": 3, **body}, headers=boss
    )
    assert response.status_code == status, response.text
    assert field in response.text


def test_priority_and_kind_are_checked(client: TestClient, boss: dict[str, str]) -> None:
    for body in ({"kind": "x", "priority": 0}, {"kind": "", "priority": 1}):
        response = client.post("/api/v1/incidents", json={**body, "grid_code": "x"}, headers=boss)
        assert response.status_code == 422


def test_scope_write_is_403_read_is_404(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_token: Callable[..., str],
    boss: dict[str, str],
    centre: tuple[float, float],
) -> None:
    township = auth(make_token("dispatcher", [TOWNSHIP]))
    elsewhere = village_point(db, "152502100200")
    response = client.post(
        "/api/v1/incidents",
        json={"kind": "x", "priority": 3, "lon": elsewhere[0], "lat": elsewhere[1]},
        headers=township,
    )
    assert response.status_code == 403
    alert = db.execute(
        "SELECT id FROM alert_point WHERE village_code LIKE '152502%' LIMIT 1"
    ).fetchone()
    assert alert is not None
    response = client.post(
        "/api/v1/incidents",
        json={"kind": "x", "priority": 3, "alert_point_id": alert[0]},
        headers=township,
    )
    assert response.status_code == 403
    theirs = new_incident(client, boss, lon=elsewhere[0], lat=elsewhere[1])
    mine = new_incident(client, township, lon=centre[0], lat=centre[1])
    assert client.get(f"/api/v1/incidents/{theirs['id']}", headers=township).status_code == 404
    assert client.get(f"/api/v1/incidents/{mine['id']}", headers=township).status_code == 200
    ids = {
        f["properties"]["id"]
        for f in client.get("/api/v1/incidents", headers=township).json()["features"]
    }
    assert mine["id"] in ids
    assert theirs["id"] not in ids
    for path in ("", "/candidates"):
        assert (
            client.get(f"/api/v1/incidents/{theirs['id']}{path}", headers=township).status_code
            == 404
        )
    for action in ("accept", "cancel", "escalate"):
        assert act(client, township, theirs["id"], action).status_code == 404
    for path in ("", "/candidates"):
        assert client.get(f"/api/v1/incidents/987654321{path}", headers=boss).status_code == 404
    assert act(client, boss, 987654321, "assign", device_id=1).status_code == 404
    assert act(client, boss, mine["id"], "assign", device_id=987654321).status_code == 404
    assert act(client, boss, mine["id"], "assign", staff_id=987654321).status_code == 404


def test_the_list_is_geojson_filtered_by_status(
    client: TestClient, boss: dict[str, str], centre: tuple[float, float]
) -> None:
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    assert act(client, boss, incident["id"], "cancel").json()["status"] == "cancelled"

    def listed(status: str) -> set[int]:
        body = client.get("/api/v1/incidents", params={"status": status}, headers=boss)
        assert body.headers["content-type"].startswith("application/geo+json")
        return {f["properties"]["id"] for f in body.json()["features"]}

    assert incident["id"] not in listed("open")
    assert incident["id"] in listed("cancelled")
    assert incident["id"] in listed("all")
    feature = next(
        f
        for f in client.get("/api/v1/incidents?status=all", headers=boss).json()["features"]
        if f["properties"]["id"] == incident["id"]
    )
    assert feature["geometry"]["type"] == "Point"
    assert feature["geometry"]["coordinates"] == pytest.approx(list(centre))
    assert feature["properties"]["outside_grids"] is False
    bad = client.get("/api/v1/incidents", params={"status": "lost"}, headers=boss)
    assert bad.status_code == 422
