"""Issue 18 items 17 and 20: uploaded files that are not what they claim.

- A device CSV in another encoding (GBK from a Chinese Excel) or with broken rows is a 422
  naming the encoding or the line, never a 500; an over-large one is a 413.
- Error messages about an upload name the uploaded file, never a server path (the temporary
  file a GeoPackage/Shapefile is read from, GDAL's ``/vsimem/`` names).
- A GeoJSON track's ``crs`` member is honoured (a UTM zone is reprojected, GCJ-02 converted,
  CGCS2000 read as it is) or the file is refused naming the CRS — never read as WGS-84.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pyproj
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from gis.crs import haversine_m, wgs84_to_gcj02
from tests.conftest import auth

VILLAGE = "152502100200"
LON, LAT = 116.0700, 43.9300  # 锡林浩特
PURPOSE = "vehicle"


def _no_server_path(text: str) -> None:
    for marker in ("/tmp", "/vsimem", "/vsizip", "upload.", "/var/", "gridpatrol-"):  # noqa: S108
        assert marker not in text, text


# ---- item 17: device CSV --------------------------------------------------------------------
def _import(client: TestClient, token: str, body: bytes) -> Any:
    return client.post(
        "/api/v1/devices/import",
        content=body,
        headers={**auth(token), "content-type": "text/csv"},
    )


def test_a_device_csv_that_is_not_utf8_is_422_naming_the_encoding(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    gbk = "identifier,name,plate\nsec17-gbk-1,巡逻车一号,蒙H·12345\n".encode("gbk")
    response = _import(client, tokens["admin"], gbk)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "file"
    assert "UTF-8" in body["detail"]
    assert body["encoding"] == "utf-8"
    row = db.execute("SELECT count(*) FROM device WHERE identifier = 'sec17-gbk-1'").fetchone()
    assert row == (0,)  # nothing written
    fine = _import(client, tokens["admin"], gbk.decode("gbk").encode("utf-8"))
    assert fine.status_code == 201, fine.text
    assert [d["device"]["name"] for d in fine.json()] == ["巡逻车一号"]


def test_broken_device_csv_rows_are_422_naming_the_line(
    client: TestClient, tokens: dict[str, str]
) -> None:
    extra = _import(client, tokens["admin"], b"identifier,name\nsec17-x,a,b,c\n")
    assert extra.status_code == 422, extra.text
    assert "line 2" in extra.json()["detail"]
    huge = _import(client, tokens["admin"], b'identifier\n"' + b"a" * 200_000 + b'"\n')
    assert huge.status_code == 422, huge.text
    assert "field larger than field limit" in huge.json()["detail"]


def test_an_over_large_device_csv_is_413(settings: Settings, tokens: dict[str, str]) -> None:
    small = dataclasses.replace(
        settings, ingest=settings.ingest.model_copy(update={"max_body_mb": 0.01})
    )
    body = b"identifier\n" + b"".join(b"sec17-big-%06d\n" % i for i in range(2000))  # 34 KB
    with TestClient(create_app(small)) as client:
        response = _import(client, tokens["admin"], body)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


# ---- item 20: no server paths in error messages -----------------------------------------------
@pytest.fixture(scope="module")
def draft(client: TestClient, tokens: dict[str, str], demo: str) -> int:
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT code FROM admin_area WHERE level = 'village' ORDER BY ST_Area(geom), code "
            "LIMIT 1 OFFSET 20"
        ).fetchone()
    assert row is not None
    spec = {"name": "paths", "area": row[0], "method": "balanced", "per_village": 2}
    made = client.post(
        "/api/v1/layouts", json={**spec, "purpose": PURPOSE}, headers=auth(tokens["planner"])
    )
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


@pytest.mark.parametrize("filename", ["grids.gpkg", "grids.zip", "grids.geojson"])
def test_a_broken_grid_file_is_named_not_its_temp_path(
    client: TestClient, tokens: dict[str, str], draft: int, filename: str
) -> None:
    response = client.post(
        f"/api/v1/layouts/{draft}/replace",
        params={"version": 1, "filename": filename, "crs": "wgs84"},
        content=b"this is no grid file",
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert filename in detail
    _no_server_path(response.text)


def test_a_broken_staff_file_is_named_not_a_gdal_path(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/staff/import",
        params={"filename": "people.geojson"},
        content=b"this is not GeoJSON",
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 422, response.text
    assert "people.geojson" in response.json()["detail"]
    _no_server_path(response.text)


# ---- item 20: the crs member of a GeoJSON track ---------------------------------------------
def _track(crs: Any, coords: list[tuple[float, float]]) -> bytes:
    start = datetime.now(UTC) - timedelta(hours=2)
    features = [
        {
            "type": "Feature",
            "properties": {"time": (start + timedelta(minutes=i)).isoformat()},
            "geometry": {"type": "Point", "coordinates": [float(v) for v in c]},
        }
        for i, c in enumerate(coords)
    ]
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        doc["crs"] = crs
    return orjson.dumps(doc)


def _named(name: str) -> dict[str, Any]:
    return {"type": "name", "properties": {"name": name}}


def _upload(client: TestClient, token: str, ident: str, body: bytes) -> Any:
    return client.post(
        f"/api/v1/positions/files?device={ident}&format=geojson",
        content=body,
        headers=auth(token),
    )


def _stored(db: psycopg.Connection[Any], ident: str) -> list[tuple[float, float]]:
    rows = db.execute(
        "SELECT p.lon, p.lat FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s ORDER BY p.fix_time",
        (ident,),
    ).fetchall()
    return [(float(r[0]), float(r[1])) for r in rows]


WGS84 = [(LON + i * 2e-4, LAT + i * 1e-4) for i in range(4)]


@pytest.mark.parametrize(
    "name",
    [
        "urn:ogc:def:crs:EPSG::32650",  # UTM 50N, metres
        "EPSG:32650",
        "gcj02",
        "urn:ogc:def:crs:EPSG::4490",  # CGCS2000: read as it is
        "urn:ogc:def:crs:OGC:1.3:CRS84",
    ],
)
def test_a_geojson_tracks_crs_is_honoured(
    client: TestClient,
    make_device: Any,
    db: psycopg.Connection[Any],
    demo: str,
    name: str,
) -> None:
    ident, token = make_device(VILLAGE)
    lon = [p[0] for p in WGS84]
    lat = [p[1] for p in WGS84]
    if "32650" in name:
        to_utm = pyproj.Transformer.from_crs(4326, 32650, always_xy=True)
        coords = list(zip(*to_utm.transform(lon, lat), strict=True))
    elif name == "gcj02":
        coords = list(zip(*wgs84_to_gcj02(lon, lat), strict=True))
    else:
        coords = list(WGS84)
    response = _upload(client, token, ident, _track(_named(name), coords))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == len(WGS84), response.text
    stored = _stored(db, ident)
    assert len(stored) == len(WGS84)
    for (x, y), (ex, ey) in zip(stored, WGS84, strict=True):
        assert float(haversine_m(x, y, ex, ey)) < 0.5, (name, x, y, ex, ey)


@pytest.mark.parametrize(
    "crs",
    [
        _named("EPSG:999999"),
        _named("urn:ogc:def:crs:EPSG::99999999"),
        _named("Beijing local grid"),
        {"type": "link", "properties": {"href": "http://example.invalid/crs", "type": "proj4"}},
    ],
)
def test_a_geojson_track_with_an_unknown_crs_is_refused_naming_it(
    client: TestClient, make_device: Any, db: psycopg.Connection[Any], demo: str, crs: Any
) -> None:
    ident, token = make_device(VILLAGE)
    response = _upload(client, token, ident, _track(crs, WGS84))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "crs"
    assert "crs" in body["detail"]
    if crs["type"] == "name":
        assert crs["properties"]["name"] in body["detail"]
    assert _stored(db, ident) == []  # nothing written


def test_a_track_without_crs_is_still_wgs84(
    client: TestClient, make_device: Any, db: psycopg.Connection[Any], demo: str
) -> None:
    ident, token = make_device(VILLAGE)
    response = _upload(client, token, ident, _track(None, WGS84))
    assert response.status_code == 200, response.text
    stored = _stored(db, ident)
    assert len(stored) == len(WGS84)
    assert all(
        math.isclose(x, ex, abs_tol=1e-9) and math.isclose(y, ey, abs_tol=1e-9)
        for (x, y), (ex, ey) in zip(stored, WGS84, strict=True)
    )
