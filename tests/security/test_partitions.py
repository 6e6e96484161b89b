"""Refused fixes create no ``position`` partitions (issue 18, item 6).

Each fix with a distinct bogus date (1999, 2003, year 1 …) used to leave an empty day partition
with its indexes behind, although the fix itself was quarantined as ``too_old``: anyone who knew
a device id could create thousands of tables. Partitions are now made only for the days of fixes
that passed the filters, and only inside the accepted time window.
"""

from __future__ import annotations

import http.client
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
VILLAGE = "152502100200"
LAT, LON = 43.95, 116.05  # inside 锡林浩特市
# distinct bogus days, far behind and far ahead of the accepted window
BOGUS = [
    "0001-01-01T00:00:00Z",
    "0001-06-15T12:00:00Z",
    "0999-03-03T00:00:00Z",
    "1970-01-02T00:00:00Z",
    "1985-07-01T00:00:00Z",
    "1999-01-01T00:00:00Z",
    "1999-12-31T23:00:00Z",
    "2003-05-05T00:00:00Z",
    "2010-10-10T10:10:10Z",
    "2019-02-28T00:00:00Z",
    "2090-01-01T00:00:00Z",
    "2999-12-31T00:00:00Z",
    "9999-12-30T00:00:00Z",
]


def _partitions(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'position'::regclass"
    ).fetchall()
    return {r[0] for r in rows}


def _tables(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'position%'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def device(client: TestClient, tokens: dict[str, str]) -> dict[str, Any]:
    identifier = f"part-{time.time_ns()}"
    response = client.post(
        "/api/v1/devices",
        json={"identifier": identifier, "home_village": VILLAGE},
        headers=auth(tokens["admin"]),
    )
    assert response.status_code == 201, response.text
    return {"identifier": identifier, **response.json()}


def _unix(iso: str) -> float:
    return (datetime.fromisoformat(iso) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()


def _quarantined(db: psycopg.Connection[Any], identifier: str) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT reason, field FROM position_rejected WHERE identifier = %s ORDER BY id",
        (identifier,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_osmand_fixes_with_bogus_dates_create_no_partitions(
    client: TestClient, db: psycopg.Connection[Any], device: dict[str, Any]
) -> None:
    before, tables = _partitions(db), _tables(db)
    port = client.app.state.osmand.port  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    key = {"key": device["osmand_key"]} if device.get("osmand_key") else {}
    try:
        for i, when in enumerate(BOGUS):
            fix = {"id": device["identifier"], "lat": LAT, "lon": LON + i * 1e-4, "timestamp": when}
            query = urlencode({**fix, **key})
            conn.request("GET", "/?" + query)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, when  # acknowledged: quarantined, not retried
            assert response.getheader("X-GridPatrol-Outcome") in ("too_old", "future")
        # a good fix still finds its (existing) partition
        good = {"id": device["identifier"], "lat": LAT, "lon": LON, "timestamp": int(time.time())}
        conn.request("GET", "/?" + urlencode({**good, **key}))
        response = conn.getresponse()
        response.read()
        assert response.getheader("X-GridPatrol-Outcome") == "stored"
    finally:
        conn.close()
    assert _partitions(db) - before == set()
    assert _tables(db) == tables
    reasons = _quarantined(db, device["identifier"])
    assert len(reasons) == len(BOGUS)
    assert {r for r, _ in reasons} == {"too_old", "future"}
    assert {f for _, f in reasons} == {"time"}


def test_batch_fixes_with_bogus_dates_create_no_partitions(
    client: TestClient, db: psycopg.Connection[Any], device: dict[str, Any], tokens: dict[str, str]
) -> None:
    before, tables = _partitions(db), _tables(db)
    # ISO text where pandas can hold the time, else the number (Unix s or ms, Traccar's rule)
    fixes = [
        {
            "device": device["identifier"],
            "time": when if "1678" < when < "2262" else _unix(when),
            "lat": LAT,
            "lon": LON + i * 1e-4,
        }
        for i, when in enumerate(BOGUS)
    ]
    fixes += [
        {"device": device["identifier"], "time": 86_400 * k + 3600, "lat": LAT, "lon": LON}
        for k in range(200)  # 200 distinct days of 1970
    ]
    fixes.append({"device": device["identifier"], "time": time.time() - 90, "lat": LAT, "lon": LON})
    response = client.post("/api/v1/positions", json=fixes, headers=auth(tokens["admin"]))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["stored"] == 1
    assert sum(report["rejected"].values()) == len(fixes) - 1
    assert _partitions(db) - before == set()
    assert _tables(db) == tables
    reasons = _quarantined(db, device["identifier"])
    assert len(reasons) == len(fixes) - 1
    assert {r for r, _ in reasons} == {"too_old", "future"}
    assert {f for _, f in reasons} == {"time"}
