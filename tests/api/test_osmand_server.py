"""OsmAnd / Traccar Client over a real socket: answered only after commit, idempotent,
unknown devices refused with 400 and counted per source address, bad fields refused with 400 and
kept in the quarantine. Devices send their OsmAnd key (``key=``), as the platform issues one."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import SYSTEM
from api.devices import DeviceIn, create_device
from tests.api.test_ingest_store import LAT, LON, VILLAGE
from tests.conftest import run

KEYS: dict[str, str] = {}  # identifier → OsmAnd key of the devices made here


async def _keyed_device(url: str) -> str:
    identifier = f"osm-{time.time_ns()}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row, _ = await create_device(
            conn, SYSTEM, DeviceIn(identifier=identifier, home_village=VILLAGE)
        )
    KEYS[identifier] = row["osmand_key"]
    return identifier


@pytest.fixture
def osmand(client: TestClient) -> http.client.HTTPConnection:
    port = client.app.state.osmand.port  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    yield conn
    conn.close()


@pytest.fixture
def device(db_url: str, demo: str) -> str:  # the demo villages must exist
    return run(_keyed_device(db_url))


def _get(conn: http.client.HTTPConnection, **params: Any) -> tuple[int, str, str | None]:
    if params.get("id") in KEYS:
        params["key"] = KEYS[params["id"]]
    conn.request("GET", "/?" + urlencode(params))
    response = conn.getresponse()
    return response.status, response.read().decode(), response.getheader("X-GridPatrol-Outcome")


def _rows(db: psycopg.Connection[Any], identifier: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT p.lat, p.lon, p.speed, p.protocol FROM position p "
        "JOIN device d ON d.id = p.device_id WHERE d.identifier = %s ORDER BY p.fix_time",
        (identifier,),
    ).fetchall()


def test_a_fix_is_committed_before_the_answer(
    osmand: http.client.HTTPConnection, device: str, db: psycopg.Connection[Any]
) -> None:
    now = int(time.time()) - 60
    status, body, outcome = _get(
        osmand, id=device, lat=LAT, lon=LON, timestamp=now, speed=10, bearing=90
    )
    assert (status, body, outcome) == (200, "", "stored")
    rows = _rows(db, device)  # visible the moment the device got its 200
    assert len(rows) == 1
    assert rows[0][2] == pytest.approx(10 * 0.514444, rel=1e-3)  # knots → m/s
    assert rows[0][3] == "osmand"


def test_retries_create_no_duplicates_on_one_keep_alive_connection(
    osmand: http.client.HTTPConnection, device: str, db: psycopg.Connection[Any]
) -> None:
    now = int(time.time()) - 120
    for _ in range(3):
        assert _get(osmand, id=device, lat=LAT, lon=LON, timestamp=now)[0] == 200
    assert len(_rows(db, device)) == 1


def test_form_post_and_json_body(
    client: TestClient, device: str, db: psycopg.Connection[Any]
) -> None:
    port = client.app.state.osmand.port  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    now = int(time.time())
    form = urlencode({"id": device, "lat": LAT, "lon": LON + 0.001, "timestamp": now - 50})
    path = "/?" + urlencode({"key": KEYS[device]})
    conn.request(
        "POST", path, body=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"")
    payload = {
        "device_id": device,
        "location": {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 40)),
            "coords": {"latitude": LAT, "longitude": LON + 0.002, "speed": 5.0, "heading": 45},
            "battery": {"level": 0.5, "is_charging": False},
        },
    }
    conn.request(
        "POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    conn.close()
    rows = _rows(db, device)
    assert len(rows) == 2
    assert rows[1][2] == pytest.approx(5.0)  # JSON speed is already m/s


def test_unknown_device_gets_400_and_is_counted_per_address(
    osmand: http.client.HTTPConnection, db: psycopg.Connection[Any]
) -> None:
    def counted() -> int:
        row = db.execute(
            "SELECT coalesce(sum(n), 0) FROM ingest_refusal WHERE protocol = 'osmand' "
            "AND source = '127.0.0.1' AND reason = 'unknown_device'"
        ).fetchone()
        return int(row[0]) if row else 0

    before = counted()
    status, body, _ = _get(osmand, id="stranger-42", lat=LAT, lon=LON, timestamp=int(time.time()))
    assert status == 400
    assert "unknown device" in body
    assert counted() == before + 1  # one count per source, not one quarantine row per request
    row = db.execute("SELECT count(*) FROM position_rejected WHERE identifier = 'stranger-42'")
    assert row.fetchone() == (0,)


def test_a_bad_field_is_named_and_quarantined(
    osmand: http.client.HTTPConnection, device: str, db: psycopg.Connection[Any]
) -> None:
    status, body, outcome = _get(osmand, id=device, lat="north", lon=LON)
    assert status == 400
    assert body.startswith("lat:")
    assert outcome == "unparsable"
    row = db.execute(
        "SELECT field, raw FROM position_rejected WHERE reason = 'unparsable' AND raw LIKE %s",
        (f"%{device}%lat=north%",),
    ).fetchone()
    assert row is not None
    assert row[0] == "lat"


def test_a_filtered_fix_is_answered_200_so_the_device_does_not_resend(
    osmand: http.client.HTTPConnection, device: str, db: psycopg.Connection[Any]
) -> None:
    status, _, outcome = _get(
        osmand, id=device, lat=LAT, lon=LON, timestamp=int(time.time()) - 10, accuracy=9000
    )
    assert (status, outcome) == (200, "poor_accuracy")
    assert _rows(db, device) == []


def test_other_methods_are_refused(osmand: http.client.HTTPConnection) -> None:
    osmand.request("DELETE", "/?id=x")
    response = osmand.getresponse()
    assert response.status == 405
    response.read()
