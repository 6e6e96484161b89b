"""Issue 18, item 20 (first clause): ``/api/v1/ingest/stats`` is scoped for scoped admins.

The review's county admin (152522) read the league-wide ingest counters. A scoped admin now gets
the figures of the devices homed in their scope only — fixes stored and fixes quarantined per
reason, counted from the rows themselves — and no figure that cannot be cut to the scope
(duplicates and refusals of unknown devices are counted per day, not per device); a ``*`` admin
still reads the league-wide counters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152522"  # 阿巴嘎旗
OUT_COUNTY = "152525"  # 东乌珠穆沁旗


def _village(db: psycopg.Connection[Any], county: str) -> tuple[str, float, float]:
    row = db.execute(
        "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) p "
        "FROM admin_area WHERE level = 'village' AND code LIKE %s ORDER BY code LIMIT 1) x",
        (county + "%",),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _fixes(ident: str, lon: float, lat: float, n: int, bad: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(minutes=20)
    good = [
        {
            "device": ident,
            "time": (start + timedelta(seconds=10 * i)).isoformat(),
            "lon": lon + i * 1e-4,
            "lat": lat,
        }
        for i in range(n)
    ]
    wrong = [
        {
            "device": ident,
            "time": (start - timedelta(seconds=i + 1)).isoformat(),
            "lon": lon,
            "lat": 91,
        }
        for i in range(bad)
    ]
    return good + wrong


def _sql(db: psycopg.Connection[Any], county: str) -> dict[str, int]:
    stored = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE p.protocol = 'batch' AND d.home_village LIKE %s",
        (county + "%",),
    ).fetchone()
    rejected = db.execute(
        "SELECT r.reason, count(*) FROM position_rejected r JOIN device d ON d.id = r.device_id "
        "WHERE r.protocol = 'batch' AND d.home_village LIKE %s GROUP BY r.reason",
        (county + "%",),
    ).fetchall()
    assert stored is not None
    return {"stored": int(stored[0]), **{r[0]: int(r[1]) for r in rejected}}


def test_a_county_admin_sees_only_the_figures_of_their_devices(
    client: TestClient,
    db: psycopg.Connection[Any],
    make_token: Callable[..., str],
    make_device: Callable[..., tuple[str, str]],
) -> None:
    league = auth(make_token("admin", ["*"]))
    county = auth(make_token("admin", [COUNTY]))
    inside, in_lon, in_lat = _village(db, COUNTY)
    outside, out_lon, out_lat = _village(db, OUT_COUNTY)
    mine, _ = make_device(inside)
    theirs, _ = make_device(outside)
    rows = (
        _fixes(mine, in_lon, in_lat, 3, 1)
        + _fixes(theirs, out_lon, out_lat, 5, 2)
        + [{"device": "nobody-knows-me", "time": datetime.now(UTC).isoformat(), "lon": 1, "lat": 1}]
    )
    posted = client.post("/api/v1/positions", json=rows, headers=league)
    assert posted.status_code == 200, posted.text
    posted = client.post("/api/v1/positions", json=rows[:1], headers=league)  # a duplicate
    assert posted.status_code == 200, posted.text

    got = client.get("/api/v1/ingest/stats", headers=county)
    assert got.status_code == 200, got.text
    body = got.json()
    want = _sql(db, COUNTY)
    assert want["stored"] >= 3
    assert want["bad_coordinates"] >= 1
    assert body["by_protocol"]["batch"] == want
    assert body["totals"] == want
    assert "duplicate" not in body["totals"]
    assert "unknown_device" not in body["totals"]
    assert body["scope"] == [COUNTY]
    # a window that ends before today holds nothing
    before = datetime.now(UTC) - timedelta(days=2)
    early = client.get(
        f"/api/v1/ingest/stats?to={before.strftime('%Y-%m-%dT%H:%M:%SZ')}", headers=county
    ).json()
    earlier = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.home_village LIKE %s AND (p.received_at AT TIME ZONE 'UTC')::date <= %s",
        (COUNTY + "%", before.date()),
    ).fetchone()
    assert earlier is not None
    assert early["totals"].get("stored", 0) == earlier[0]

    # the league admin reads the counters of every device, duplicates and unknown ones included
    whole = client.get("/api/v1/ingest/stats", headers=league).json()
    counters = dict(
        db.execute(
            "SELECT outcome, sum(n)::bigint FROM ingest_counter WHERE protocol = 'batch' "
            "GROUP BY outcome"
        ).fetchall()
    )
    assert whole["by_protocol"]["batch"] == {k: int(v) for k, v in counters.items()}
    assert whole["by_protocol"]["batch"]["stored"] > want["stored"]
    assert whole["by_protocol"]["batch"]["duplicate"] >= 1
