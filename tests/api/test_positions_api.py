"""Batch and file uploads, tracks and live state through the HTTP API."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.settings import Settings
from tests.api.test_ingest_store import LAT, LON
from tests.conftest import auth

VILLAGE = "152502100200"
OTHER_COUNTY_VILLAGE = "152522100200"


def _iso(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def _count(db: psycopg.Connection[Any], identifier: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s",
        (identifier,),
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def device(make_device: Any, demo: str) -> tuple[str, str]:
    return make_device(VILLAGE)


def test_json_batch_stores_good_rows_and_names_bad_ones(
    client: TestClient, tokens: dict[str, str], device: tuple[str, str], db: psycopg.Connection[Any]
) -> None:
    ident, _ = device
    t = _iso(10)
    rows = [
        {"device": ident, "time": t, "lat": LAT, "lon": LON, "speed": 5},
        {"device": ident, "time": _iso(9), "lat": "north", "lon": LON},
        {"device": ident, "time": "not a time", "lat": LAT, "lon": LON},
        {"device": ident, "time": _iso(8), "lat": 0, "lon": 0},
        {"device": ident, "time": t, "lat": LAT, "lon": LON, "speed": 5},  # a retry
    ]
    response = client.post("/api/v1/positions", json=rows, headers=auth(tokens["admin"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["received"], body["stored"], body["duplicate"]) == (5, 1, 1)
    assert body["rejected"] == {"unparsable": 2, "bad_coordinates": 1}
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, "lat"), (3, "time")]
    assert _count(db, ident) == 1


def test_geojson_and_csv_bodies(
    client: TestClient, tokens: dict[str, str], device: tuple[str, str], db: psycopg.Connection[Any]
) -> None:
    ident, _ = device
    features = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"device": ident, "time": _iso(20 - i)},
                "geometry": {"type": "Point", "coordinates": [LON + i * 1e-3, LAT]},
            }
            for i in range(3)
        ],
    }
    gj = client.post(
        "/api/v1/positions",
        content=json.dumps(features),
        headers={**auth(tokens["admin"]), "Content-Type": "application/geo+json"},
    )
    assert gj.status_code == 200, gj.text
    assert gj.json()["stored"] == 3
    csv = "device,time,lat,lon\n" + "".join(
        f"{ident},{_iso(30 - i)},{LAT},{LON + i * 1e-3}\n" for i in range(4)
    )
    response = client.post(
        "/api/v1/positions",
        content=csv,
        headers={**auth(tokens["admin"]), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 4
    assert _count(db, ident) == 7


def test_a_device_token_posts_only_its_own_fixes(
    client: TestClient, device: tuple[str, str], make_device: Any, db: psycopg.Connection[Any]
) -> None:
    _, token = device
    other, _ = make_device(VILLAGE)
    mine = [{"time": _iso(5), "lat": LAT, "lon": LON}]  # the device is implied by the token
    assert client.post("/api/v1/positions", json=mine, headers=auth(token)).json()["stored"] == 1
    theirs = [{"device": other, "time": _iso(4), "lat": LAT, "lon": LON}]
    refused = client.post("/api/v1/positions", json=mine + theirs, headers=auth(token))
    assert refused.status_code == 403
    assert other in refused.json()["detail"]
    assert _count(db, other) == 0


def test_wrong_media_type_and_malformed_json(client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["admin"])
    xml = client.post(
        "/api/v1/positions", content="<x/>", headers={**h, "Content-Type": "application/xml"}
    )
    assert xml.status_code == 415
    assert xml.json()["field"] == "content-type"
    broken = client.post(
        "/api/v1/positions", content="[{", headers={**h, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["detail"]


def test_oversized_upload_gets_413(settings: Settings, tokens: dict[str, str]) -> None:
    # the session's settings (free ports, no background coverage run) with a tiny body cap
    small = replace(settings, ingest=settings.ingest.model_copy(update={"max_body_mb": 0.001}))
    with TestClient(create_app(small)) as client:
        big = [{"device": "x", "time": _iso(1), "lat": LAT, "lon": LON}] * 100
        response = client.post("/api/v1/positions", json=big, headers=auth(tokens["admin"]))
    assert response.status_code == 413
    assert "larger than 0.001 MB" in response.json()["detail"]


def test_gpx_file_upload_and_cli(
    client: TestClient,
    tokens: dict[str, str],
    device: tuple[str, str],
    db: psycopg.Connection[Any],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    ident, _ = device
    points = "".join(
        f'<trkpt lat="{LAT + i * 1e-4}" lon="{LON}"><time>{_iso(60 - i)}</time></trkpt>'
        for i in range(5)
    )
    gpx = f'<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>{points}</trkseg></trk></gpx>'
    response = client.post(
        f"/api/v1/positions/files?device={ident}&filename=t.gpx",
        content=gpx,
        headers=auth(tokens["admin"]),
    )
    assert response.status_code == 200, response.text
    assert (response.json()["format"], response.json()["stored"]) == ("gpx", 5)
    path = tmp_path / "later.gpx"
    path.write_text(
        gpx.replace(f"{LON}", f"{LON + 0.01}")
        .replace("<time>", "<time>")
        .replace(_iso(60)[:10], _iso(60)[:10])
    )
    monkeypatch.setenv("DATABASE_URL", db_url)
    result = CliRunner().invoke(cli, ["ingest", str(path), "--device", ident])
    assert result.exit_code == 0, result.output
    assert "duplicate 5" in result.output  # same times: the retry stores nothing twice
    assert _count(db, ident) == 5


def test_track_state_and_scope(
    client: TestClient,
    tokens: dict[str, str],
    device: tuple[str, str],
    make_token: Any,
    make_device: Any,
) -> None:
    ident, token = device
    fixes = [{"time": _iso(30 - i), "lat": LAT + i * 1e-3, "lon": LON} for i in range(10)]
    assert client.post("/api/v1/positions", json=fixes, headers=auth(token)).json()["stored"] == 10
    device_id = next(
        d["id"]
        for d in client.get("/api/v1/devices", headers=auth(tokens["viewer"])).json()
        if d["identifier"] == ident
    )
    window = {"from": _iso(60), "to": _iso(0)}
    points = client.get(
        f"/api/v1/devices/{device_id}/track", params=window, headers=auth(tokens["viewer"])
    )
    assert points.status_code == 200
    assert len(points.json()["features"]) == 10
    line = client.get(
        f"/api/v1/devices/{device_id}/track",
        params={**window, "format": "line"},
        headers=auth(tokens["viewer"]),
    ).json()
    assert line["geometry"]["type"] == "LineString"
    assert line["properties"]["fixes"] == 10
    # the device reads its own track, not another's
    assert (
        client.get(
            f"/api/v1/devices/{device_id}/track", params=window, headers=auth(token)
        ).status_code
        == 200
    )
    other_ident, other_token = make_device(VILLAGE)
    assert (
        client.get(
            f"/api/v1/devices/{device_id}/track", params=window, headers=auth(other_token)
        ).status_code
        == 404
    )
    # a user of another county does not see it at all
    outsider = auth(make_token("viewer", ["152522"]))
    assert (
        client.get(
            f"/api/v1/devices/{device_id}/track", params=window, headers=outsider
        ).status_code
        == 404
    )
    assert client.get(f"/api/v1/devices/{device_id}", headers=outsider).status_code == 404
    state = client.get("/api/v1/devices/state", headers=auth(tokens["viewer"])).json()
    mine = [f for f in state["features"] if f["properties"]["identifier"] == ident]
    assert len(mine) == 1
    assert mine[0]["properties"]["online"] is False  # last fix 21 min ago > 5 min
    assert all(
        f["properties"]["identifier"] != ident
        for f in client.get("/api/v1/devices/state", headers=outsider).json()["features"]
    )
    assert other_ident


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
    ],
)
def test_bad_track_windows(
    client: TestClient,
    tokens: dict[str, str],
    device: tuple[str, str],
    query: dict[str, str],
    field: str,
) -> None:
    response = client.get("/api/v1/devices/1/track", params=query, headers=auth(tokens["admin"]))
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_ingest_stats_count_every_outcome(
    client: TestClient, tokens: dict[str, str], device: tuple[str, str]
) -> None:
    ident, _ = device
    h = auth(tokens["admin"])
    before = client.get("/api/v1/ingest/stats", headers=h).json()["by_protocol"].get("batch", {})
    t = _iso(3)
    rows = [
        {"device": ident, "time": t, "lat": LAT, "lon": LON},
        {"device": ident, "time": t, "lat": LAT, "lon": LON},
        {"device": ident, "time": _iso(2), "lat": 91, "lon": LON},
        {"device": "nobody-knows-me", "time": _iso(2), "lat": LAT, "lon": LON},
    ]
    assert client.post("/api/v1/positions", json=rows, headers=h).status_code == 200
    after = client.get("/api/v1/ingest/stats", headers=h).json()["by_protocol"]["batch"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: v for k, v in delta.items() if v} == {
        "stored": 1,
        "duplicate": 1,
        "bad_coordinates": 1,
        "unknown_device": 1,
    }
