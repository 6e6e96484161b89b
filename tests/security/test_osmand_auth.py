"""OsmAnd devices authenticate; forged fixes cannot move incidents (issue 18, item 10).

Anyone who knew a device id could post fixes as it over OsmAnd, and those fixes moved incidents
to ``arrived``; 3,000 anonymous unknown-id requests made 3,000 quarantine rows with no 429. Now a
device created through the platform gets an OsmAnd key (shown once, stored hashed) that it must
send (``key=`` in the URL, HTTP Basic, or the key itself as the id); devices registered before
keys existed stay readable as *unauthenticated* legacy devices (refused outright with
``GRIDPATROL_OSMAND_REQUIRE_KEY``) whose fixes never mark an arrival; refusals are limited per
address and counted in aggregate.
"""

from __future__ import annotations

import base64
import http.client
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.test_dispatch_api import VILLAGE, act, new_incident, offset, village_point
from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")


@pytest.fixture
def osmand(client: TestClient) -> Iterator[http.client.HTTPConnection]:
    port = client.app.state.osmand.port  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    yield conn
    conn.close()


@pytest.fixture
def fresh_limits(client: TestClient) -> Iterator[None]:
    """This module floods from 127.0.0.1: leave the address limits as found for the others."""
    server = client.app.state.osmand  # type: ignore[attr-defined]
    yield
    for name in ("address_limiter", "refusal_limiter"):
        limiter = getattr(server, name, None)
        if limiter is not None:
            limiter.reset()


@pytest.fixture
def centre(db: psycopg.Connection[Any]) -> tuple[float, float]:
    return village_point(db, VILLAGE)


def _create(client: TestClient, admin: str) -> dict[str, Any]:
    identifier = f"osm-auth-{time.time_ns()}"
    response = client.post(
        "/api/v1/devices",
        json={"identifier": identifier, "home_village": VILLAGE},
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return {"identifier": identifier, "id": body["device"]["id"], **body}


def _send(
    conn: http.client.HTTPConnection, headers: dict[str, str] | None = None, **params: Any
) -> tuple[int, str, str | None]:
    conn.request("GET", "/?" + urlencode(params), headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read().decode(), response.getheader("X-GridPatrol-Outcome")


def _stored(db: psycopg.Connection[Any], identifier: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT p.fix_time, p.extras FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s ORDER BY p.fix_time",
        (identifier,),
    ).fetchall()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_a_new_device_gets_a_key_stored_hashed(
    client: TestClient, db: psycopg.Connection[Any], tokens: dict[str, str]
) -> None:
    device = _create(client, tokens["admin"])
    key = device["osmand_key"]
    assert isinstance(key, str)
    assert len(key) >= 32
    row = db.execute(
        "SELECT osmand_key_hash FROM device WHERE identifier = %s", (device["identifier"],)
    ).fetchone()
    assert row is not None
    assert row[0] is not None
    assert key not in row[0]
    assert (
        "osmand_key"
        not in client.get(f"/api/v1/devices/{device['id']}", headers=auth(tokens["admin"])).json()
    )


def test_forged_and_wrong_key_fixes_are_refused_and_not_stored(
    client: TestClient,
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    tokens: dict[str, str],
    fresh_limits: None,
) -> None:
    device = _create(client, tokens["admin"])
    ident, now = device["identifier"], int(time.time()) - 120
    fix = {"id": ident, "lat": 43.95, "lon": 116.05}
    status, body, outcome = _send(osmand, **fix, timestamp=now)  # no key at all
    assert status == 401, body
    assert "key" in body
    assert outcome == "unauthenticated"
    status, body, outcome = _send(osmand, **fix, timestamp=now + 1, key="guessed-" + "x" * 30)
    assert status == 401
    assert outcome == "unauthenticated"
    status, _, _ = _send(osmand, _basic(ident, "wrong"), **fix, timestamp=now + 2)
    assert status == 401
    assert _stored(db, ident) == []
    rows = db.execute(
        "SELECT reason, field, raw FROM position_rejected WHERE identifier = %s ORDER BY id",
        (ident,),
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("unauthenticated", "key")] * 3
    assert all("guessed-" not in r[2] for r in rows)  # a presented key is never kept


def test_the_key_is_accepted_in_the_url_by_basic_auth_and_as_the_id(
    client: TestClient,
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    tokens: dict[str, str],
) -> None:
    device = _create(client, tokens["admin"])
    ident, key, now = device["identifier"], device["osmand_key"], int(time.time()) - 100
    fix = {"lat": 43.95, "lon": 116.05}
    assert _send(osmand, id=ident, key=key, timestamp=now, **fix)[0] == 200
    assert _send(osmand, _basic(ident, key), id=ident, timestamp=now + 10, **fix)[0] == 200
    assert _send(osmand, _basic(ident, key), timestamp=now + 20, **fix)[0] == 200  # id from Basic
    assert _send(osmand, id=key, timestamp=now + 30, **fix)[:3:2] == (200, "stored")  # issued id
    stored = _stored(db, ident)
    assert len(stored) == 4
    assert all(key not in str(extras) for _, extras in stored)  # the secret is never stored
    rejected = db.execute("SELECT count(*) FROM position_rejected WHERE raw LIKE %s", (f"%{key}%",))
    assert rejected.fetchone() == (0,)


def test_an_unauthenticated_legacy_fix_never_moves_an_incident(
    client: TestClient,
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    tokens: dict[str, str],
    make_token: Callable[..., str],
    centre: tuple[float, float],
) -> None:
    boss = auth(make_token("dispatcher"))
    device = _create(client, tokens["admin"])
    ident = device["identifier"]
    # a device registered before keys existed: no key (what migration 0010 leaves)
    db.execute("UPDATE device SET osmand_key_hash = NULL WHERE id = %s", (device["id"],))
    far = offset(centre, 3000, 0)
    db.execute(
        "INSERT INTO device_state (device_id, fix_time, lat, lon, geom, received_at, protocol) "
        "VALUES (%(d)s, now() - interval '200 seconds', %(y)s, %(x)s, "
        "ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), 4326), now(), 'test')",
        {"d": device["id"], "x": far[0], "y": far[1]},
    )
    incident = new_incident(client, boss, lon=centre[0], lat=centre[1])
    assigned = act(client, boss, incident["id"], "assign", device_id=device["id"])
    assert assigned.status_code == 200, assigned.text
    at = offset(centre, 20, 0)
    now = int(time.time()) + 1
    status, _, outcome = _send(osmand, id=ident, lat=at[1], lon=at[0], timestamp=now)
    assert (status, outcome) == (200, "stored")  # a legacy device may still report …
    assert len(_stored(db, ident)) == 1
    detail = client.get(f"/api/v1/incidents/{incident['id']}", headers=boss).json()
    assert detail["status"] == "dispatched"  # … but its anonymous fix proves no arrival
    # the documented way out: issue the legacy device a key
    issued = client.post(
        f"/api/v1/devices/{device['id']}/osmand-key", headers=auth(tokens["admin"])
    )
    assert issued.status_code == 200, issued.text
    key = issued.json()["osmand_key"]
    status, body, _ = _send(osmand, id=ident, lat=at[1], lon=at[0], timestamp=now + 5)
    assert status == 401, body  # once it has a key, the key is required
    status, _, _ = _send(osmand, id=ident, key=key, lat=at[1], lon=at[0], timestamp=now + 10)
    assert status == 200
    detail = client.get(f"/api/v1/incidents/{incident['id']}", headers=boss).json()
    assert detail["status"] == "arrived"
    assert detail["arrival_source"] == "fix"


def test_legacy_devices_are_refused_when_a_key_is_required(
    client: TestClient,
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = _create(client, tokens["admin"])
    db.execute("UPDATE device SET osmand_key_hash = NULL WHERE id = %s", (device["id"],))
    ingestor = client.app.state.ingestor  # type: ignore[attr-defined]
    monkeypatch.setattr(ingestor, "osmand_require_key", True)
    status, _, outcome = _send(
        osmand, id=device["identifier"], lat=43.95, lon=116.05, timestamp=int(time.time()) - 5
    )
    assert (status, outcome) == (401, "unauthenticated")
    assert _stored(db, device["identifier"]) == []


def test_unknown_ids_are_limited_per_address_and_counted_in_aggregate(
    client: TestClient,
    osmand: http.client.HTTPConnection,
    db: psycopg.Connection[Any],
    tokens: dict[str, str],
    fresh_limits: None,
) -> None:
    prefix = f"ghost-{time.time_ns()}-"
    statuses = []
    for i in range(3000):
        status, _, _ = _send(osmand, id=f"{prefix}{i}", lat=43.95, lon=116.05)
        statuses.append(status)
    assert statuses[0] == 400
    assert statuses[-1] == 429
    first_429 = statuses.index(429)
    assert first_429 < 100
    assert statuses.count(429) > 2800
    rows = db.execute(
        "SELECT count(*) FROM position_rejected WHERE identifier LIKE %s", (prefix + "%",)
    ).fetchone()
    assert rows == (0,)  # not one quarantine row each
    server = client.app.state.osmand  # type: ignore[attr-defined]
    client.portal.call(server.flush_refusals)  # type: ignore[union-attr]
    stats = client.get("/api/v1/ingest/stats", headers=auth(tokens["admin"])).json()
    refused = {
        (r["source"], r["reason"]): r["n"] for r in stats["refused"] if r["protocol"] == "osmand"
    }
    assert refused[("127.0.0.1", "unknown_device")] >= first_429
    assert refused[("127.0.0.1", "rate_limited")] >= statuses.count(429)
