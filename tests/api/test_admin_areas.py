"""``/api/v1/admin-areas``: RFC 7946 GeoJSON, filters, bad input named, and the data scope."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli import app as cli
from tests.conftest import auth

XILINHOT = "152502000000"
TOWNSHIP = "152502100000"  # a 镇 of 锡林浩特市
OTHER_COUNTY = "152522000000"  # 阿巴嘎旗


def _codes(body: dict[str, Any]) -> list[str]:
    return [f["properties"]["code"] for f in body["features"]]


@pytest.mark.usefixtures("demo")
def test_counties_as_feature_collection(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/v1/admin-areas?level=county", headers=auth(tokens["viewer"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    body = response.json()
    assert body["type"] == "FeatureCollection"
    assert len(body["features"]) == 13
    first = body["features"][0]
    assert first["geometry"]["type"] == "MultiPolygon"
    assert "crs" not in body  # RFC 7946: WGS-84 implied
    assert set(first["properties"]) >= {"code", "name_zh", "name_en", "synthetic", "households"}


@pytest.mark.usefixtures("demo")
def test_parent_and_bbox_filters(client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["viewer"])
    towns = client.get(f"/api/v1/admin-areas?parent={XILINHOT[:6]}", headers=h).json()
    assert towns["features"]
    assert all(c.startswith("152502") for c in _codes(towns))
    assert {f["properties"]["level"] for f in towns["features"]} == {"township"}
    # a box around Xilinhot city centre (116.08 E, 43.94 N)
    near = client.get("/api/v1/admin-areas?level=county&bbox=116.0,43.9,116.1,44.0", headers=h)
    assert _codes(near.json()) == [XILINHOT]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("bbox=1,2,3", "bbox"),
        ("bbox=10,50,0,40", "bbox"),
        ("bbox=a,b,c,d", "bbox"),
        ("level=city", "level"),
    ],
)
def test_bad_filters_name_the_field(
    client: TestClient, tokens: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/admin-areas?{query}", headers=auth(tokens["viewer"]))
    assert response.status_code == 422
    assert response.json()["field"] == field


@pytest.mark.usefixtures("demo")
def test_one_area_by_short_or_full_code(client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["viewer"])
    short = client.get("/api/v1/admin-areas/152502", headers=h).json()
    full = client.get(f"/api/v1/admin-areas/{XILINHOT}", headers=h).json()
    assert short == full
    assert full["properties"]["name_zh"] == "锡林浩特市"
    assert client.get("/api/v1/admin-areas/999999", headers=h).status_code == 404
    assert client.get("/api/v1/admin-areas/not-a-code", headers=h).status_code == 404


# ---- data scope (数据权限) -------------------------------------------------------------------


@pytest.mark.usefixtures("demo")
def test_a_county_user_sees_only_their_county(client: TestClient, make_token: Any) -> None:
    h = auth(make_token("viewer", ["152502"]))
    counties = client.get("/api/v1/admin-areas?level=county", headers=h).json()
    assert _codes(counties) == [XILINHOT]
    villages = client.get("/api/v1/admin-areas?level=village", headers=h).json()
    assert villages["features"]
    assert all(c.startswith("152502") for c in _codes(villages))
    # another county exists, but to this user it does not: 404, not 403
    assert client.get(f"/api/v1/admin-areas/{OTHER_COUNTY}", headers=h).status_code == 404


@pytest.mark.usefixtures("demo")
def test_a_township_user_does_not_see_the_county_above(client: TestClient, make_token: Any) -> None:
    h = auth(make_token("dispatcher", [TOWNSHIP]))
    everything = client.get("/api/v1/admin-areas", headers=h).json()
    assert everything["features"]
    assert all(c.startswith(TOWNSHIP[:9]) for c in _codes(everything))
    assert client.get(f"/api/v1/admin-areas/{XILINHOT}", headers=h).status_code == 404


@pytest.mark.usefixtures("demo")
def test_a_grid_worker_sees_the_village_of_their_grid(client: TestClient, make_token: Any) -> None:
    village = "152502100200"
    h = auth(make_token("viewer", [village + "003"]))
    assert _codes(client.get("/api/v1/admin-areas", headers=h).json()) == [village]


def test_users_cli_takes_a_scope(
    db_url: str, monkeypatch: pytest.MonkeyPatch, client: TestClient
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    result = CliRunner().invoke(
        cli, ["users", "add", "xl-dispatcher", "--role", "dispatcher", "--scope", "152502"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.split("token: ")[1].strip()
    me = client.get("/api/v1/me", headers=auth(token)).json()
    assert me == {
        "name": "xl-dispatcher",
        "role": "dispatcher",
        "scope": ["152502"],
        "device_id": None,
    }
    bad = CliRunner().invoke(
        cli, ["users", "add", "bad-scope", "--role", "viewer", "--scope", "15250X"]
    )
    assert bad.exit_code == 1
    assert "invalid scope code '15250X'" in bad.output


def test_an_admin_cannot_grant_more_than_their_scope(client: TestClient, make_token: Any) -> None:
    county_admin = auth(make_token("admin", ["152502"]))
    ok = client.post(
        "/api/v1/users",
        json={"name": "xl-town", "role": "viewer", "scope": [TOWNSHIP]},
        headers=county_admin,
    )
    assert ok.status_code == 201, ok.text
    wider = client.post(
        "/api/v1/users",
        json={"name": "xl-league", "role": "viewer", "scope": ["1525"]},
        headers=county_admin,
    )
    assert wider.status_code == 422
    assert wider.json()["field"] == "scope"


def test_user_creation_is_audited_with_the_actors_scope(
    client: TestClient, make_token: Any, db: Any
) -> None:
    county_admin = auth(make_token("admin", ["152502"], name="audited-admin"))
    response = client.post(
        "/api/v1/users",
        json={"name": "audited-new", "role": "viewer", "scope": [TOWNSHIP]},
        headers=county_admin,
    )
    assert response.status_code == 201
    row = db.execute(
        "SELECT user_name, user_scope, detail->>'name' FROM audit_log "
        "WHERE action = 'user.create' AND detail->>'name' = 'audited-new'"
    ).fetchone()
    assert row == ("audited-admin", ["152502"], "audited-new")
