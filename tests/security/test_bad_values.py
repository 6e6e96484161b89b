"""Issue 18 item 16: NaN or Infinity in a request (an edit geometry, an incident's coordinates,
a layout's cell size, the siting radius) is a 422 that names the problem — never a 500 because
the error handler could not serialise the bad value back."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import mapping, shape

from tests.conftest import auth

PURPOSE = "vehicle"  # no other security test makes layouts of this purpose


@pytest.fixture(scope="module")
def village(demo: str) -> str:
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT code FROM admin_area WHERE level = 'village' ORDER BY ST_Area(geom), code "
            "LIMIT 1 OFFSET 10"
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def draft(client: TestClient, tokens: dict[str, str], village: str) -> tuple[int, list[Any]]:
    spec = {"name": "nan", "area": village, "method": "balanced", "per_village": 2}
    made = client.post(
        "/api/v1/layouts", json={**spec, "purpose": PURPOSE}, headers=auth(tokens["planner"])
    )
    assert made.status_code == 201, made.text
    layout = int(made.json()["id"])
    grids = client.get(f"/api/v1/layouts/{layout}/grids", headers=auth(tokens["planner"]))
    return layout, grids.json()["features"]


def _raw(value: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity unquoted (the server's reader accepts them)."""
    return json.dumps(value, allow_nan=True).encode()


def _post(client: TestClient, token: str, url: str, body: Any) -> Any:
    headers = {**auth(token), "content-type": "application/json"}
    return client.post(url, content=_raw(body), headers=headers)


def _version(client: TestClient, token: str, layout: int) -> int:
    return int(client.get(f"/api/v1/layouts/{layout}", headers=auth(token)).json()["version"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_coordinate_in_an_edit_is_422_naming_it(
    client: TestClient, tokens: dict[str, str], draft: tuple[int, list[Any]], bad: float
) -> None:
    layout, grids = draft
    planner = tokens["planner"]
    code = grids[0]["properties"]["code"]
    geom = shape(grids[0]["geometry"])
    c = geom.centroid
    _, miny, _, maxy = geom.bounds
    line = {"type": "LineString", "coordinates": [[c.x, miny - 0.01], [bad, maxy + 0.01]]}
    split = _post(
        client,
        planner,
        f"/api/v1/layouts/{layout}/edits/split",
        {"version": 1, "code": code, "line": line},
    )
    assert split.status_code == 422, split.text
    assert split.json()["field"] == "line"
    assert "finite" in split.json()["detail"]
    ring = [list(p) for p in mapping(geom.buffer(-1e-4))["coordinates"][0]]
    ring[1] = [bad, ring[1][1]]
    reshape = _post(
        client,
        planner,
        f"/api/v1/layouts/{layout}/edits/reshape",
        {"version": 1, "code": code, "geometry": {"type": "Polygon", "coordinates": [ring]}},
    )
    assert reshape.status_code == 422, reshape.text
    assert reshape.json()["field"] == "geometry"
    assert "finite" in reshape.json()["detail"]
    other = grids[1]["properties"]["code"]
    move = _post(
        client,
        planner,
        f"/api/v1/layouts/{layout}/edits/move-boundary",
        {"version": 1, "a": code, "b": other, "line": line},
    )
    assert move.status_code == 422, move.text
    assert move.json()["field"] == "line"
    assert _version(client, planner, layout) == 1  # nothing was written


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_numbers_in_other_bodies_are_422_naming_the_field(
    client: TestClient, tokens: dict[str, str], village: str, bad: float
) -> None:
    incident = _post(
        client,
        tokens["dispatcher"],
        "/api/v1/incidents",
        {"kind": "theft", "priority": 3, "description": "nan", "lon": bad, "lat": 44.0},
    )
    assert incident.status_code == 422, incident.text
    detail = incident.json()["detail"]
    assert any(e["loc"][-1] == "lon" for e in detail)
    assert any(e.get("input") in ("NaN", "Infinity") for e in detail)
    layout = _post(
        client,
        tokens["planner"],
        "/api/v1/layouts",
        {"name": "inf", "area": village, "method": "squares", "size_m": bad, "purpose": PURPOSE},
    )
    assert layout.status_code == 422, layout.text
    assert "size_m" in layout.text
    siting = _post(
        client,
        tokens["planner"],
        "/api/v1/alert-points/siting",
        {"village": village, "k": 1, "radius_km": bad},
    )
    assert siting.status_code == 422, siting.text
    assert "radius_km" in siting.text
