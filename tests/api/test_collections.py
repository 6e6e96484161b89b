"""OGC API – Features: landing page, collections, paged items with bbox/datetime/property
filters, single features — everything cut to the caller's scope. Scenes in 太仆寺旗 (152527)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import shape

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152527"


@pytest.fixture(scope="module")
def area(demo: str, make_token: Any, make_device: Any) -> dict[str, Any]:
    with psycopg.connect(demo, autocommit=True) as db:
        villages = [
            r[0]
            for r in db.execute(
                "SELECT code FROM admin_area WHERE level = 'village' AND code LIKE %s "
                "ORDER BY code LIMIT 2",
                (COUNTY + "%",),
            ).fetchall()
        ]
        layout = db.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()[0]  # type: ignore[index]
        codes = [
            r[0]
            for r in db.execute(
                "SELECT code FROM grid WHERE layout_id = %s AND village_code = %s ORDER BY code",
                (layout, villages[0]),
            ).fetchall()
        ]
        identifier, _ = make_device(villages[1])
        device = db.execute(
            "UPDATE device SET plate = '蒙H·T0527' WHERE identifier = %s RETURNING id",
            (identifier,),
        ).fetchone()[0]  # type: ignore[index]
        db.execute(
            """
            INSERT INTO device_state (device_id, fix_time, lat, lon, geom, received_at, protocol)
            SELECT %s, now(), ST_Y(p), ST_X(p), p, now(), 'test'
              FROM (SELECT ST_PointOnSurface(geom) AS p FROM admin_area WHERE code = %s) x
            """,
            (device, villages[1]),
        )
    return {
        "villages": villages,
        "layout": layout,
        "codes": codes,
        "device": device,
        "village_token": make_token("viewer", [villages[0]]),
    }


def _get(client: TestClient, token: str, url: str, **params: Any) -> Any:
    return client.get(url, params=params, headers=auth(token))


def test_landing_page_leads_to_collections_and_conformance(
    client: TestClient, tokens: dict[str, str]
) -> None:
    body = _get(client, tokens["viewer"], "/ogc").json()
    rels = {link["rel"]: link["href"] for link in body["links"]}
    assert rels["data"].endswith("/collections")
    conformance = _get(client, tokens["viewer"], rels["conformance"]).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson" in conformance


def test_collections_are_listed_with_item_and_tile_links(
    client: TestClient, tokens: dict[str, str]
) -> None:
    body = _get(client, tokens["viewer"], "/collections").json()
    ids = [c["id"] for c in body["collections"]]
    assert ids == ["admin_areas", "grids", "alert_points", "vehicles", "incidents"]
    grids = body["collections"][1]
    rels = {link["rel"] for link in grids["links"]}
    assert {"self", "items", "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"} <= rels


def test_paging_through_a_village_returns_each_grid_once(
    client: TestClient, tokens: dict[str, str], area: dict[str, Any]
) -> None:
    url = "/collections/grids/items"
    params: dict[str, Any] = {"village_code": area["villages"][0], "limit": 3, "token": "x"}
    seen: list[str] = []
    pages = 0
    while True:
        body = client.get(url, params=params, headers=auth(tokens["viewer"])).json()
        assert body["numberMatched"] == len(area["codes"])
        assert body["numberReturned"] == len(body["features"]) <= 3
        seen += [f["id"] for f in body["features"]]
        assert all(f["properties"]["code"] == f["id"] for f in body["features"])
        links = {link["rel"]: link["href"] for link in body["links"]}
        assert all("token" not in href for href in links.values())
        pages += 1
        if "next" not in links:
            break
        query = parse_qs(urlparse(links["next"]).query)
        url = urlparse(links["next"]).path
        params = {k: v[0] for k, v in query.items()}
    assert seen == area["codes"]
    assert pages == 3


def test_bbox_selects_what_intersects_it(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    bbox = (115.10, 41.80, 115.14, 41.83)
    body = _get(
        client,
        tokens["viewer"],
        "/collections/grids/items",
        bbox=",".join(map(str, bbox)),
        limit=1000,
    ).json()
    expected = db.execute(
        "SELECT count(*) FROM grid g JOIN grid_layout l ON l.id = g.layout_id "
        "WHERE l.status = 'active' AND l.purpose = 'patrol' "
        "AND ST_Intersects(g.geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
        bbox,
    ).fetchone()[0]  # type: ignore[index]
    assert body["numberMatched"] == expected > 0
    box = shapely.box(*bbox)
    assert all(shape(f["geometry"]).intersects(box) for f in body["features"])


def test_datetime_filters_on_the_time_property(
    client: TestClient, tokens: dict[str, str], area: dict[str, Any]
) -> None:
    village = area["villages"][0]
    every = _get(
        client, tokens["viewer"], "/collections/alert_points/items", village_code=village
    ).json()["numberMatched"]
    assert every > 0
    future = _get(
        client,
        tokens["viewer"],
        "/collections/alert_points/items",
        village_code=village,
        datetime="2100-01-01T00:00:00Z/..",
    ).json()
    assert future["numberMatched"] == 0
    past = _get(
        client,
        tokens["viewer"],
        "/collections/alert_points/items",
        village_code=village,
        datetime="../2100-01-01",
    ).json()
    assert past["numberMatched"] == every
    # grids have no time property: datetime does not filter them
    grids = _get(
        client,
        tokens["viewer"],
        "/collections/grids/items",
        village_code=village,
        datetime="2000-01-01",
    ).json()
    assert grids["numberMatched"] == 8


def test_scope_cuts_collections(client: TestClient, area: dict[str, Any]) -> None:
    token = area["village_token"]
    grids = _get(client, token, "/collections/grids/items", limit=100).json()
    assert [f["id"] for f in grids["features"]] == area["codes"]
    areas = _get(client, token, "/collections/admin_areas/items").json()
    assert [f["id"] for f in areas["features"]] == [area["villages"][0]]
    assert _get(client, token, "/collections/vehicles/items").json()["numberMatched"] == 0
    other = _get(client, token, "/collections/grids/items/152502001001001")
    assert other.status_code == 404
    described = _get(client, token, "/collections/grids").json()
    west, south, east, north = described["extent"]["spatial"]["bbox"][0]
    for feature in grids["features"]:
        x0, y0, x1, y1 = shape(feature["geometry"]).bounds
        assert west <= x0 + 1e-6
        assert x1 <= east + 1e-6
        assert south <= y0 + 1e-6
        assert y1 <= north + 1e-6


def test_one_feature(client: TestClient, tokens: dict[str, str], area: dict[str, Any]) -> None:
    code = area["codes"][0]
    body = _get(client, tokens["viewer"], f"/collections/grids/items/{code}").json()
    assert body["type"] == "Feature"
    assert body["id"] == code
    assert body["geometry"]["type"] == "MultiPolygon"
    assert {link["rel"] for link in body["links"]} == {"self", "collection"}


def test_vehicles_by_plate_are_live(
    client: TestClient, tokens: dict[str, str], area: dict[str, Any]
) -> None:
    body = _get(client, tokens["viewer"], "/collections/vehicles/items", plate="蒙H·T0527").json()
    assert body["numberMatched"] == 1
    props = body["features"][0]["properties"]
    assert props["id"] == area["device"]
    assert props["freshness"] == "live"
    assert props["status"] == "available"


def test_open_incidents(
    client: TestClient, tokens: dict[str, str], area: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    lon, lat = db.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM admin_area "
        "WHERE code = %s) x",
        (area["villages"][0],),
    ).fetchone()  # type: ignore[misc]
    created = client.post(
        "/api/v1/incidents",
        json={"kind": "theft", "priority": 2, "lon": lon, "lat": lat},
        headers=auth(tokens["dispatcher"]),
    )
    assert created.status_code == 201, created.text
    incident = created.json()["id"]
    open_now = _get(
        client, tokens["viewer"], "/collections/incidents/items", status="open", limit=10_000
    ).json()
    assert incident in [f["id"] for f in open_now["features"]]
    cleared = _get(
        client, tokens["viewer"], "/collections/incidents/items", status="cleared", limit=10_000
    ).json()
    assert incident not in [f["id"] for f in cleared["features"]]
    mine = _get(client, area["village_token"], "/collections/incidents/items").json()
    assert incident in [f["id"] for f in mine["features"]]


@pytest.mark.parametrize(
    ("url", "params", "status"),
    [
        ("/collections/grids/items", {"bbox": "1,2,3"}, 400),
        ("/collections/grids/items", {"datetime": "soon"}, 400),
        ("/collections/grids/items", {"colour": "red"}, 400),
        ("/collections/grids/items", {"limit": 0}, 400),
        ("/collections/grids/items", {"offset": -1}, 400),
        ("/collections/grids/items", {"layout": 999999}, 404),
        ("/collections/rivers/items", {}, 404),
        ("/collections/rivers", {}, 404),
        ("/collections/alert_points/items/999999999", {}, 404),
    ],
)
def test_bad_requests(
    client: TestClient, tokens: dict[str, str], url: str, params: dict[str, Any], status: int
) -> None:
    response = _get(client, tokens["viewer"], url, **params)
    assert response.status_code == status, response.text


def test_limit_is_capped(client: TestClient, tokens: dict[str, str]) -> None:
    body = _get(
        client, tokens["viewer"], "/collections/admin_areas/items", limit=50_000, level="county"
    ).json()
    self_link = next(link for link in body["links"] if link["rel"] == "self")
    assert parse_qs(urlparse(self_link["href"]).query)["limit"] == ["10000"]
    assert body["numberReturned"] == body["numberMatched"]
