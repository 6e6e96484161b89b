"""The ``layout_grids`` tile layer the planner page draws: any layout (drafts too) named by
``?layout=``, code, village and worker per grid, cut to the caller's scope, never public, and
revalidated on every use (a draft changes with each edit)."""

from __future__ import annotations

from typing import Any

import mapbox_vector_tile
import psycopg
import shapely
from fastapi.testclient import TestClient

from tests.conftest import auth
from tiles.tilemath import Tile, tile_at


def _features(client: TestClient, token: str, tile: Tile, **params: Any) -> list[dict[str, Any]]:
    response = client.get(
        f"/tiles/layout_grids/{tile.z}/{tile.x}/{tile.y}.pbf", params=params, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, max-age=0"
    decoded = mapbox_vector_tile.decode(response.content) if response.content else {}
    features: list[dict[str, Any]] = decoded.get("layout_grids", {}).get("features", [])
    return features


def test_a_draft_is_drawn_from_tiles_with_its_workers_and_within_the_scope(
    demo: str,
    client: TestClient,
    tokens: dict[str, str],
    make_token: Any,
    db: psycopg.Connection[Any],
) -> None:
    row = db.execute(
        "SELECT g.layout_id, g.village_code, ST_AsBinary(ST_PointOnSurface(g.geom)) FROM grid g "
        "JOIN grid_layout l ON l.id = g.layout_id WHERE l.status = 'active' "
        "AND l.purpose = 'patrol' ORDER BY g.code DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    active, village = int(row[0]), str(row[1])
    point = shapely.from_wkb(bytes(row[2]))
    planner = auth(tokens["planner"])
    draft = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "tiles"}, headers=planner
    ).json()["id"]
    try:
        tile = tile_at(point.x, point.y, 12)
        league = _features(client, tokens["viewer"], tile, layout=draft)
        expected = dict(
            db.execute(
                "SELECT g.code, s.name FROM grid g LEFT JOIN staff s ON s.id = g.worker_id "
                "WHERE g.layout_id = %s AND g.geom && ST_Transform(ST_TileEnvelope(%s, %s, %s), "
                "4326) AND ST_Intersects(g.geom, ST_Transform(ST_TileEnvelope(%s, %s, %s), 4326))",
                (draft, tile.z, tile.x, tile.y, tile.z, tile.x, tile.y),
            ).fetchall()
        )
        drawn = {f["properties"]["code"]: f["properties"] for f in league}
        assert set(expected) <= set(drawn)
        for code, worker in expected.items():
            assert drawn[code].get("worker") == worker, code
            assert drawn[code]["village_code"] == code[:12]
        # a village's viewer: only that village's grids
        mine = _features(client, make_token("viewer", [village]), tile, layout=draft)
        assert mine
        assert {f["properties"]["village_code"] for f in mine} == {village}
        # the layout must be named and exist
        url = f"/tiles/layout_grids/{tile.z}/{tile.x}/{tile.y}.pbf"
        missing = client.get(url, headers=auth(tokens["viewer"]))
        assert missing.status_code == 422
        unknown = client.get(url, params={"layout": 999_999}, headers=auth(tokens["viewer"]))
        assert unknown.status_code == 404
        assert client.get(url, params={"layout": draft}).status_code == 401  # never public
        described = client.get(
            "/tiles/layout_grids.json", params={"layout": draft}, headers=auth(tokens["viewer"])
        ).json()
        assert described["vector_layers"][0]["id"] == "layout_grids"
        assert described["public"] is False
    finally:
        client.delete(f"/api/v1/layouts/{draft}", headers=planner)
