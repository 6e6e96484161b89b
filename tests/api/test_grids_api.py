"""Grid layouts, staff and alert points through the API and the demo data."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

VILLAGE = "152502100200"
OTHER_COUNTY_VILLAGE = "152522100200"


@pytest.fixture(scope="module")
def patrol_layout(demo: str) -> int:
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_demo_layout_is_eight_staffed_squares_per_village(
    db: psycopg.Connection[Any], patrol_layout: int
) -> None:
    per_village = db.execute(
        "SELECT min(n), max(n), count(*) FROM (SELECT village_code, count(*) AS n FROM grid "
        "WHERE layout_id = %s GROUP BY village_code) v",
        (patrol_layout,),
    ).fetchone()
    assert per_village == (8, 8, 1088)
    unstaffed = db.execute(
        "SELECT count(*) FROM grid "
        "WHERE layout_id = %s AND (worker_id IS NULL OR leader_id IS NULL)",
        (patrol_layout,),
    ).fetchone()
    assert unstaffed == (0,)
    one_each = db.execute(
        "SELECT max(n) FROM (SELECT worker_id, count(*) AS n FROM grid WHERE layout_id = %s "
        "GROUP BY worker_id) w",
        (patrol_layout,),
    ).fetchone()
    assert one_each == (1,)  # 一格一员
    cells = db.execute(
        "SELECT (SELECT sum(n_cells) FROM grid WHERE layout_id = %(l)s), "
        "(SELECT count(*) FROM grid_cell WHERE layout_id = %(l)s)",
        {"l": patrol_layout},
    ).fetchone()
    assert cells is not None
    assert cells[0] == cells[1] > 2_000_000
    alarm = db.execute(
        "SELECT min(n), max(n) FROM (SELECT village_code, count(*) AS n FROM alert_point "
        "WHERE synthetic GROUP BY village_code) a"
    ).fetchone()
    assert alarm == (6, 6)


def test_grids_geojson_numbered_and_scoped(
    client: TestClient, tokens: dict[str, str], make_token: Any, patrol_layout: int
) -> None:
    body = client.get(
        f"/api/v1/layouts/{patrol_layout}/grids",
        params={"village": VILLAGE},
        headers=auth(tokens["viewer"]),
    ).json()
    codes = [f["properties"]["code"] for f in body["features"]]
    assert codes == [f"{VILLAGE}{k:03d}" for k in range(1, 9)]
    props = body["features"][0]["properties"]
    assert props["worker"]
    assert props["worker_phone"].startswith("199")
    assert props["synthetic"] is True
    county = auth(make_token("viewer", ["152502"]))
    mine = client.get(
        f"/api/v1/layouts/{patrol_layout}/grids", params={"village": "152502"}, headers=county
    )
    assert len(mine.json()["features"]) == 110 * 8
    theirs = client.get(
        f"/api/v1/layouts/{patrol_layout}/grids",
        params={"village": OTHER_COUNTY_VILLAGE},
        headers=county,
    )
    assert theirs.json()["features"] == []
    assert client.get(f"/api/v1/grids/{OTHER_COUNTY_VILLAGE}001", headers=county).status_code == 404
    assert (
        client.get(f"/api/v1/grids/{VILLAGE}001", headers=county).json()["village_code"] == VILLAGE
    )


def test_make_a_squares_draft_for_one_village(client: TestClient, tokens: dict[str, str]) -> None:
    spec = {"name": "test squares", "area": VILLAGE, "method": "squares", "size_m": 3000}
    made = client.post("/api/v1/layouts", json=spec, headers=auth(tokens["planner"]))
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["layout"]["status"] == "draft"
    assert body["grids"] > 4
    assert body["cells"] > 0
    grids = client.get(f"/api/v1/layouts/{body['id']}/grids", headers=auth(tokens["viewer"])).json()
    assert len(grids["features"]) == body["grids"]
    # a village-only layout may not go active over the league-wide active one
    clash = client.post(f"/api/v1/layouts/{body['id']}/activate", headers=auth(tokens["planner"]))
    assert clash.status_code == 409
    assert "overlaps" in clash.json()["detail"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"method": "hexes"}, "method", "balanced, h3, households, squares"),
        # the smallest village (< 1 km²) cannot hold 999 parts of at least a hectare
        ({"method": "balanced", "per_village": 999, "area": "smallest"}, "method", "999"),
        ({"method": "balanced", "per_village": 4, "area": "150103000000"}, "area", "no area"),
        ({"method": "squares"}, "method", "size_m"),
    ],
)
def test_bad_layout_requests_say_why(
    client: TestClient,
    tokens: dict[str, str],
    db: psycopg.Connection[Any],
    spec: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body = {"name": "bad", "area": VILLAGE, **spec}
    if body["area"] == "smallest":
        row = db.execute(
            "SELECT code FROM admin_area WHERE level = 'village' ORDER BY area_km2 LIMIT 1"
        ).fetchone()
        assert row is not None
        body["area"] = row[0]
    response = client.post("/api/v1/layouts", json=body, headers=auth(tokens["planner"]))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert words in response.json()["detail"]


def test_a_layout_outside_the_scope_is_forbidden(client: TestClient, make_token: Any) -> None:
    county_planner = auth(make_token("planner", ["152502"]))
    spec = {"name": "x", "area": OTHER_COUNTY_VILLAGE, "method": "balanced", "per_village": 2}
    assert client.post("/api/v1/layouts", json=spec, headers=county_planner).status_code == 403


def test_staff_import_refuses_bad_rows_and_writes_nothing(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    bad = (
        "name,phone,village_code,role\n"
        "张三,13800000001,152502100200,worker\n"
        "李四,13800000001,152502100200,worker\n"
        "王五,13800000002,999999999999,leader\n"
    )
    response = client.post(
        "/api/v1/staff/import",
        params={"filename": "s.csv"},
        content=bad,
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "row 3: phone 13800000001 repeats row 2" in detail
    assert "row 4: unknown village code '999999999999'" in detail
    assert db.execute("SELECT count(*) FROM staff WHERE phone LIKE '1380000000%'").fetchone() == (
        0,
    )


def test_staff_from_xlsx_then_assign_and_staffing(
    client: TestClient, tokens: dict[str, str], patrol_layout: int
) -> None:
    frame = pd.DataFrame(
        {
            "name": ["赵六", "钱七"],
            "phone": ["13900000011", "13900000012"],
            "village_code": [VILLAGE, VILLAGE],
            "role": ["worker", "informant"],
        }
    )
    buf = io.BytesIO()
    frame.to_excel(buf, index=False)
    imported = client.post(
        "/api/v1/staff/import",
        params={"filename": "staff.xlsx"},
        content=buf.getvalue(),
        headers=auth(tokens["planner"]),
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["inserted"] == 2
    people = client.get(
        "/api/v1/staff", params={"village": VILLAGE}, headers=auth(tokens["viewer"])
    ).json()
    zhao = next(p for p in people if p["phone"] == "13900000011")
    for code in (f"{VILLAGE}001", f"{VILLAGE}002"):
        put = client.put(
            f"/api/v1/layouts/{patrol_layout}/grids/{code}/worker",
            json={"staff_id": zhao["id"]},
            headers=auth(tokens["planner"]),
        )
        assert put.status_code == 200, put.text
        assert put.json()["worker"] == "赵六"
    cleared = client.put(
        f"/api/v1/layouts/{patrol_layout}/grids/{VILLAGE}003/worker",
        json={"staff_id": None},
        headers=auth(tokens["planner"]),
    )
    assert cleared.status_code == 200
    report = client.get(
        f"/api/v1/layouts/{patrol_layout}/staffing", headers=auth(tokens["viewer"])
    ).json()
    assert f"{VILLAGE}003" in [g["code"] for g in report["grids_without_worker"]]
    doubled = [w for w in report["workers_with_several_grids"] if w["phone"] == "13900000011"]
    assert doubled
    assert doubled[0]["grids"] == [f"{VILLAGE}001", f"{VILLAGE}002"]


def test_alert_points_outside_every_village(client: TestClient, tokens: dict[str, str]) -> None:
    csv = "kind,name,lat,lon\nalarm_phone,新报警点,43.95,116.05\ncamera,远方的摄像头,30.27,-97.74\n"
    h = auth(tokens["admin"])
    refused = client.post(
        "/api/v1/alert-points/import", params={"filename": "a.csv"}, content=csv, headers=h
    )
    assert refused.status_code == 422
    assert "row 3: the point lies outside every village" in refused.json()["detail"]
    kept = client.post(
        "/api/v1/alert-points/import",
        params={"filename": "a.csv", "keep_unassigned": True},
        content=csv,
        headers=h,
    )
    assert kept.status_code == 200, kept.text
    assert kept.json() == {"inserted": 2, "updated": 0, "unassigned": 1}
    points = client.get("/api/v1/alert-points", headers=h).json()["features"]
    mine = [p for p in points if p["properties"]["name"] == "新报警点"]
    assert mine[-1]["properties"]["grid_code"].startswith("152502")


def test_siting_beats_or_matches_the_current_points(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/alert-points/siting",
        json={"village": VILLAGE, "k": 6, "radius_km": 3},
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current_points"] >= 6
    assert body["coverage_after_pct"] >= body["coverage_before_pct"]
    assert len(body["chosen"]) == 6
    assert body["demand"] == "households"
