"""One out-of-range value no longer makes a device retry forever (issue 18, item 12).

OsmAnd ``altitude=1e308`` used to answer 503 ``Retry-After`` on every resend (the database
refused the value, the writer failed the request); in the batch API one such row rejected the
whole batch with 422, naming no row. Every column is now range-checked against its database
type before the database: such a fix goes to the quarantine as ``unparsable`` naming the field,
and the request is acknowledged (OsmAnd 200; batch: the other rows stored, the bad one named).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
VILLAGE = "152502100200"
LAT, LON = 43.95, 116.05  # inside 锡林浩特市


@pytest.fixture
def device(client: TestClient, tokens: dict[str, str]) -> dict[str, Any]:
    identifier = f"range-{time.time_ns()}"
    response = client.post(
        "/api/v1/devices",
        json={"identifier": identifier, "home_village": VILLAGE},
        headers=auth(tokens["admin"]),
    )
    assert response.status_code == 201, response.text
    return {"identifier": identifier, **response.json()}


@pytest.fixture
def osmand(client: TestClient) -> Any:
    port = client.app.state.osmand.port  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    yield conn
    conn.close()


def _key(device: dict[str, Any]) -> dict[str, str]:
    return {"key": device["osmand_key"]} if device.get("osmand_key") else {}


def _stored(db: psycopg.Connection[Any], identifier: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s",
        (identifier,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _quarantine(db: psycopg.Connection[Any], identifier: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT reason, field, row_no FROM position_rejected WHERE identifier = %s ORDER BY id",
        (identifier,),
    ).fetchall()


@pytest.mark.parametrize(
    ("field", "value"),
    [("altitude", "1e308"), ("altitude", "-4e38"), ("altitude", "3.5e38")],
)
def test_an_out_of_range_osmand_value_is_quarantined_and_acknowledged(
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    device: dict[str, Any],
    field: str,
    value: str,
) -> None:
    fix = {"id": device["identifier"], "lat": LAT, "lon": LON, "timestamp": int(time.time()) - 30}
    query = urlencode({**fix, field: value, **_key(device)})
    for _ in range(3):  # a resend gets the same answer: acknowledged, never "retry later"
        osmand.request("GET", "/?" + query)
        response = osmand.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("X-GridPatrol-Outcome") == "unparsable"
    assert _stored(db, device["identifier"]) == 0
    rows = _quarantine(db, device["identifier"])
    assert len(rows) == 3
    assert {(r[0], r[1]) for r in rows} == {("unparsable", field)}


def test_an_out_of_range_osmand_json_value_is_quarantined(
    osmand: http.client.HTTPConnection, db: psycopg.Connection[Any], device: dict[str, Any]
) -> None:
    body = {
        "device_id": device["identifier"],
        "location": {
            "timestamp": int(time.time()) - 20,
            "coords": {"latitude": LAT, "longitude": LON, "altitude": 1e308},
        },
    }
    path = "/?" + urlencode(_key(device)) if _key(device) else "/"
    headers = {"Content-Type": "application/json"}
    osmand.request("POST", path, body=json.dumps(body), headers=headers)
    response = osmand.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("X-GridPatrol-Outcome") == "unparsable"
    assert [(r[0], r[1]) for r in _quarantine(db, device["identifier"])] == [
        ("unparsable", "altitude")
    ]


@pytest.mark.parametrize("rows", [8, 800], ids=["pipelined", "copy"])
def test_one_bad_row_of_a_batch_is_named_and_the_others_stored(
    client: TestClient,
    db: psycopg.Connection[Any],
    device: dict[str, Any],
    tokens: dict[str, str],
    rows: int,
) -> None:
    ident = device["identifier"]
    start = time.time() - 3 * rows - 60
    fixes: list[dict[str, Any]] = [
        {"device": ident, "time": start + 3 * i, "lat": LAT, "lon": LON + i * 1e-5, "speed": 3.0}
        for i in range(rows)
    ]
    fixes[1]["altitude"] = 1e308  # row 2
    fixes[3]["speed"] = -1e300  # row 4
    fixes[4]["battery"] = 5e38  # row 5
    fixes[5]["time"] = 1e300  # row 6: no time a timestamp can hold
    fixes[6]["extras"] = {"note": "nul\u0000byte"}  # row 7: jsonb cannot hold NUL
    fixes[7]["device"] = ident + "\u0000"  # row 8: text cannot hold NUL
    response = client.post("/api/v1/positions", json=fixes, headers=auth(tokens["admin"]))
    assert response.status_code == 200, response.text
    report = response.json()
    bad = {2: "altitude", 4: "speed", 5: "battery", 6: "time", 7: "extras", 8: "device"}
    assert report["stored"] == rows - len(bad)
    assert report["rejected"] == {"unparsable": len(bad)}
    assert {e["row"]: e["field"] for e in report["errors"]} == bad
    assert _stored(db, ident) == rows - len(bad)
    quarantined = db.execute(
        "SELECT row_no, field, reason FROM position_rejected "
        "WHERE raw LIKE %s AND reason = 'unparsable' ORDER BY row_no",
        (f"%{ident}%",),
    ).fetchall()
    assert {r[0]: r[1] for r in quarantined} == bad


def test_a_fix_the_database_cannot_hold_never_fails_the_writer(
    osmand: http.client.HTTPConnection, db: psycopg.Connection[Any], device: dict[str, Any]
) -> None:
    """A NUL in the device id (percent-encoded) is refused as unparsable, not a 503."""
    fix = {"id": device["identifier"] + "\x00", "lat": LAT, "lon": LON, "timestamp": 0}
    fix["timestamp"] = int(time.time()) - 10
    query = urlencode({**fix, **_key(device)})
    osmand.request("GET", "/?" + query)
    response = osmand.getresponse()
    body = response.read()
    assert response.status in (200, 400), body
    assert response.status != 503
    row = db.execute(
        "SELECT reason, field FROM position_rejected WHERE raw LIKE %s ORDER BY id DESC",
        (f"%{device['identifier']}%",),
    ).fetchone()
    assert row is not None
    assert row[0] == "unparsable"
    assert row[1] in ("id", "device")
