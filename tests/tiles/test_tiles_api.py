"""``/tiles``: tiles decode (mapbox-vector-tile) to the features of the tile with the coverage
the reports give, cut to the caller's scope, cached by ETag, refused on bad input and bad tokens.

Scene: a vehicle patrols the first village of 太仆寺旗 (152527), which no other test touches,
on a day 23 days ago.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import mapbox_vector_tile
import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import shape

from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings, Settings
from gis.crs import wgs84_to_gcj02
from tests.api.test_coverage_update import _update
from tests.conftest import auth, run
from tiles.tilemath import EXTENT, Tile, tile_at

COUNTY = "152527"
DAY = (datetime.now(UTC) + timedelta(hours=8)).date() - timedelta(days=23)
CHINA = timedelta(hours=8)


def _t(hour: float) -> int:
    midnight = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) - CHINA
    return int((midnight.timestamp() + hour * 3600) * 1e6)


@pytest.fixture(scope="module")
def scene(demo: str, make_device: Any, make_token: Any) -> dict[str, Any]:
    """One vehicle: parks an hour in grid 1 of the village, drives into grid 2, stays a bit."""
    with psycopg.connect(demo, autocommit=True) as db:
        layout = db.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()[0]  # type: ignore[index]
        village = db.execute(
            "SELECT code FROM admin_area WHERE level = 'village' AND code LIKE %s "
            "ORDER BY code LIMIT 1",
            (COUNTY + "%",),
        ).fetchone()[0]  # type: ignore[index]
        grids = db.execute(
            "SELECT id, code, ST_AsBinary(geom) FROM grid WHERE layout_id = %s "
            "AND village_code = %s ORDER BY code",
            (layout, village),
        ).fetchall()
        cell = db.execute(
            "SELECT h3 FROM grid_cell WHERE layout_id = %s AND grid_id = %s ORDER BY h3 LIMIT 1",
            (layout, grids[0][0]),
        ).fetchone()[0]  # type: ignore[index]
    plat, plon = h3.cell_to_latlng(h3.int_to_str(int(cell)))
    dest = shapely.from_wkb(bytes(grids[1][2])).representative_point()
    identifier, _ = make_device(village)
    t, lat, lon = [], [], []
    for k in range(361):
        t.append(_t(8) + k * 10_000_000)
        lat.append(plat)
        lon.append(plon)
    steps = 60
    for k in range(1, steps + 1):
        t.append(_t(9) + k * 10_000_000)
        lat.append(plat + (dest.y - plat) * k / steps)
        lon.append(plon + (dest.x - plon) * k / steps)
    for k in range(1, 31):
        t.append(_t(9) + (steps + k) * 10_000_000)
        lat.append(dest.y)
        lon.append(dest.x)
    batch = FixBatch.from_columns(device=[identifier] * len(t), time_us=t, lat=lat, lon=lon)

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings())
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(t)

    run(store())
    run(_update(demo))
    with psycopg.connect(demo, autocommit=True) as db:
        device = db.execute(
            "SELECT id FROM device WHERE identifier = %s", (identifier,)
        ).fetchone()[0]  # type: ignore[index]
    return {
        "layout": layout,
        "village": village,
        "codes": [g[1] for g in grids],
        "device": device,
        "fixes": len(t),
        "park": (plon, plat),
        "village_token": make_token("viewer", [village]),
    }


def _decode(body: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = mapbox_vector_tile.decode(
        body, default_options={"y_coord_down": True}
    )
    return decoded


def _to_lonlat(tile: Tile, x: float, y: float) -> tuple[float, float]:
    """Tile units (y down) → WGS-84 (lon, lat) through Web Mercator."""
    n = 1 << tile.z
    fx, fy = tile.x + x / EXTENT, tile.y + y / EXTENT
    lon = fx / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * fy / n))))
    return lon, lat


def _tile(client: TestClient, token: str, layer: str, tile: Tile, **params: Any) -> Any:
    return client.get(
        f"/tiles/{layer}/{tile.z}/{tile.x}/{tile.y}.pbf", params=params, headers=auth(token)
    )


def _expected_codes(
    db: psycopg.Connection[Any], layout: int, tile: Tile, margin: float
) -> set[str]:
    rows = db.execute(
        "SELECT code FROM grid WHERE layout_id = %s AND ST_Intersects(geom, "
        "ST_Transform(ST_TileEnvelope(%s, %s, %s, margin => %s), 4326))",
        (layout, tile.z, tile.x, tile.y, margin),
    ).fetchall()
    return {r[0] for r in rows}


def test_grid_tile_holds_the_grids_of_the_tile_with_their_coverage(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    tile = tile_at(*scene["park"], 11)
    day = DAY.isoformat()
    response = _tile(
        client, tokens["viewer"], "grids", tile, layout=scene["layout"], **{"from": day, "to": day}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    features = _decode(response.content)["grids"]["features"]
    codes = {f["properties"]["code"] for f in features}
    assert _expected_codes(db, scene["layout"], tile, 0.0) <= codes
    assert codes <= _expected_codes(db, scene["layout"], tile, 256 / 4096)
    report = client.get(
        "/api/v1/coverage",
        params={"from": day, "to": day, "layout": scene["layout"], "level": "grid"},
        headers=auth(tokens["viewer"]),
    ).json()
    units = {u["code"]: u for u in report["units"]}
    by_code = {f["properties"]["code"]: f["properties"] for f in features}
    for code in scene["codes"]:
        tiled, reported = by_code[code], units[code]
        for key in ("cells", "seen_cells", "blind_cells", "visits"):
            assert tiled[key] == reported[key], (code, key)
        assert tiled["coverage_pct"] == pytest.approx(reported["coverage_pct"] or 0.0, abs=0.01)
        assert tiled["patrol_km"] == pytest.approx(reported["patrol_km"], abs=0.001)
    g1, g2 = by_code[scene["codes"][0]], by_code[scene["codes"][1]]
    assert g1["seen_cells"] > 0
    assert g1["visits"] == 1
    assert g1["last_patrol"].startswith(day[:7])
    assert g2["seen_cells"] > 0
    assert g2["patrol_km"] > 0


def test_tile_geometry_lies_on_the_grid(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    tile = tile_at(*scene["park"], 13)
    features = _decode(_tile(client, tokens["viewer"], "grids", tile).content)["grids"]["features"]
    checked = 0
    for feature in features:
        drawn = shape(feature["geometry"])
        inner = drawn.intersection(shapely.box(0, 0, EXTENT, EXTENT))
        if inner.area < 10_000:
            continue
        point = inner.representative_point()
        lon, lat = _to_lonlat(tile, point.x, point.y)
        wkb = db.execute(
            "SELECT ST_AsBinary(geom) FROM grid WHERE layout_id = %s AND code = %s",
            (scene["layout"], feature["properties"]["code"]),
        ).fetchone()[0]  # type: ignore[index]
        pixel_deg = 2 * tile.pixel_m() / 111_000
        assert shapely.from_wkb(bytes(wkb)).buffer(pixel_deg).contains(shapely.Point(lon, lat))
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("crs", ["wgs84", "gcj02"])
def test_points_land_within_a_pixel_in_either_datum(
    client: TestClient,
    tokens: dict[str, str],
    scene: dict[str, Any],
    db: psycopg.Connection[Any],
    crs: str,
) -> None:
    rows = db.execute(
        "SELECT id, ST_X(geom), ST_Y(geom) FROM alert_point WHERE village_code = %s",
        (scene["village"],),
    ).fetchall()
    assert rows
    for point_id, lon, lat in rows:
        x, y = (
            (lon, lat)
            if crs == "wgs84"
            else (float(v[0]) for v in wgs84_to_gcj02(np.array([lon]), np.array([lat])))
        )
        tile = tile_at(x, y, 14)
        body = _tile(client, tokens["viewer"], "alert_points", tile, crs=crs).content
        found = [
            f
            for f in _decode(body)["alert_points"]["features"]
            if f["properties"]["id"] == point_id
        ]
        assert len(found) == 1
        px, py = found[0]["geometry"]["coordinates"]
        got = _to_lonlat(tile, px, py)
        err_m = math.hypot(
            (got[0] - x) * 111_320 * math.cos(math.radians(y)), (got[1] - y) * 110_574
        )
        assert err_m < tile.pixel_m(), (point_id, err_m)


def test_scope_cuts_tiles(client: TestClient, scene: dict[str, Any], make_token: Any) -> None:
    token = scene["village_token"]
    tile = tile_at(*scene["park"], 10)
    grids = _decode(_tile(client, token, "grids", tile).content)["grids"]["features"]
    assert {f["properties"]["code"] for f in grids} == set(scene["codes"])
    areas = _decode(_tile(client, token, "admin_areas", tile).content)["admin_areas"]["features"]
    assert {f["properties"]["code"] for f in areas} == {scene["village"]}
    elsewhere = tile_at(116.07, 43.93, 10)  # 锡林浩特: another county
    for layer in ("grids", "admin_areas", "alert_points", "vehicles"):
        response = _tile(client, token, layer, elsewhere)
        assert response.status_code == 200
        assert response.content == b"", layer
    other = client.get(
        f"/tiles/tracks/{tile.z}/{tile.x}/{tile.y}.pbf",
        params={"device": scene["device"], "day": DAY.isoformat()},
        headers=auth(make_token("viewer", ["152502"])),
    )
    assert other.status_code == 200
    assert other.content == b""


def test_a_track_tile_holds_the_day(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    tile = tile_at(*scene["park"], 12)
    body = _tile(
        client, tokens["viewer"], "tracks", tile, device=scene["device"], day=DAY.isoformat()
    ).content
    lines = _decode(body)["tracks"]["features"]
    assert sum(f["properties"]["fixes"] for f in lines) == scene["fixes"]  # no gap: one stretch
    assert lines[0]["properties"]["from"].endswith("Z")
    assert lines[0]["geometry"]["type"] == "LineString"


def test_live_vehicles_carry_status_and_freshness(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    tile = tile_at(*scene["park"], 12)
    body = _tile(client, tokens["viewer"], "vehicles", tile).content
    mine = [
        f for f in _decode(body)["vehicles"]["features"] if f["properties"]["id"] == scene["device"]
    ]
    assert len(mine) == 1
    assert mine[0]["properties"]["freshness"] == "offline"  # its last fix is weeks old
    assert mine[0]["properties"]["status"] == "available"


def test_etag_gives_304(client: TestClient, tokens: dict[str, str], scene: dict[str, Any]) -> None:
    tile = tile_at(*scene["park"], 12)
    first = _tile(client, tokens["viewer"], "admin_areas", tile)
    assert first.headers["cache-control"] == "private, max-age=3600"
    assert "Authorization" in first.headers["vary"]
    again = client.get(
        f"/tiles/admin_areas/{tile.z}/{tile.x}/{tile.y}.pbf",
        headers={**auth(tokens["viewer"]), "If-None-Match": first.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    changed = client.get(
        f"/tiles/admin_areas/{tile.z}/{tile.x}/{tile.y}.pbf",
        headers={**auth(tokens["viewer"]), "If-None-Match": '"something-else"'},
    )
    assert changed.status_code == 200
    assert changed.content == first.content


def test_tilejson_describes_the_layer_in_the_scope(
    client: TestClient, scene: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    body = client.get(
        "/tiles/grids.json",
        params={"layout": scene["layout"], "from": "2026-11-01", "to": "2026-11-07"},
        headers=auth(scene["village_token"]),
    ).json()
    assert body["tilejson"] == "3.0.0"
    assert body["tiles"][0].endswith(
        f"/tiles/grids/{{z}}/{{x}}/{{y}}.pbf?layout={scene['layout']}&from=2026-11-01&to=2026-11-07"
    )
    extent = db.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
        "(SELECT ST_Extent(geom) e FROM admin_area WHERE code = %s) x",
        (scene["village"],),
    ).fetchone()
    assert body["bounds"] == pytest.approx(list(extent), abs=1e-5)  # type: ignore[arg-type]
    layer = body["vector_layers"][0]
    assert layer["id"] == "grids"
    assert "coverage_pct" in layer["fields"]
    assert body["minzoom"] == 7


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/tiles/grids/23/0/0.pbf", 400),
        ("/tiles/grids/3/8/0.pbf", 404),
        ("/tiles/grids/3/0/8.pbf", 404),
        ("/tiles/grids/3/-1/0.pbf", 404),
        ("/tiles/grids/3/a/0.pbf", 404),
        ("/tiles/nothing/3/0/0.pbf", 404),
        ("/tiles/nothing.json", 404),
        ("/tiles/tracks/3/0/0.pbf", 422),
        ("/tiles/admin_areas/3/0/0.pbf?level=province", 422),
        ("/tiles/grids/3/0/0.pbf?layout=999999", 404),
        ("/tiles/grids/8/0/0.pbf?crs=bd09", 422),
    ],
)
def test_bad_input(client: TestClient, tokens: dict[str, str], path: str, status: int) -> None:
    response = client.get(path, headers=auth(tokens["viewer"]))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("layer", ["grids", "vehicles", "nothing"])
def test_a_bad_token_gets_401_and_no_data(client: TestClient, layer: str) -> None:
    response = client.get(f"/tiles/{layer}/10/843/387.pbf", headers=auth("gp_not-a-token"))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "unauthorized"


def test_public_tiles_serve_only_public_layers_without_a_token(
    client: TestClient, settings: Settings, scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tile = tile_at(*scene["park"], 11)
    url = f"/tiles/{{}}/{tile.z}/{tile.x}/{tile.y}.pbf"
    assert client.get(url.format("grids")).status_code == 401
    monkeypatch.setattr(settings.api, "public_tiles", True)
    grids = client.get(url.format("grids"))
    assert grids.status_code == 200
    assert grids.headers["cache-control"].startswith("public")
    assert _decode(grids.content)["grids"]["features"]
    assert client.get(url.format("admin_areas")).status_code == 200
    for private in ("vehicles", "alert_points", "tracks"):
        assert client.get(url.format(private)).status_code == 401, private
    assert client.get(url.format("grids"), headers=auth("gp_bad")).status_code == 401
    listed = {layer["name"] for layer in client.get("/tiles").json()["layers"]}
    assert listed == {"admin_areas", "grids"}


def test_the_default_window_is_the_last_seven_days(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    tile = tile_at(*scene["park"], 12)
    body = _tile(client, tokens["viewer"], "grids", tile).content
    props = {f["properties"]["code"]: f["properties"] for f in _decode(body)["grids"]["features"]}
    g1 = props[scene["codes"][0]]
    assert g1["seen_cells"] == 0  # the patrol was 23 days ago
    assert g1["blind_cells"] == g1["cells"]
