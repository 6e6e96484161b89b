"""Planner redraws through the API: clone, edit with versions, validate, diff, activate with
lineage, roll back exactly, export and re-import, refuse broken edits without changing the draft."""

from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from psycopg import sql
from shapely.geometry import LineString, mapping, shape

from api.layouts import layout_cells, own_borrowed_cells
from tests.api.layout_helpers import staff_every_grid
from tests.conftest import auth, run

PURPOSE = "information"


@pytest.fixture(scope="module")
def township(demo: str) -> str:
    """The township with the fewest villages (at least two)."""
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT parent_code FROM admin_area WHERE level = 'village' GROUP BY parent_code "
            "HAVING count(*) >= 2 ORDER BY count(*), parent_code LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def active(client: TestClient, tokens: dict[str, str], township: str) -> int:
    planner = tokens["planner"]
    spec = {
        "name": "信息方格 info squares",
        "area": township,
        "method": "balanced",
        "per_village": 4,
        "purpose": PURPOSE,
    }
    made = client.post("/api/v1/layouts", json=spec, headers=auth(planner))
    assert made.status_code == 201, made.text
    layout = made.json()["id"]
    refused = client.post(f"/api/v1/layouts/{layout}/activate", json={}, headers=auth(planner))
    assert refused.status_code == 409  # no workers yet: 一格一员
    assert any(
        f["properties"]["kind"] == "no_worker" for f in refused.json()["violations"]["features"]
    )
    staff_every_grid(client, planner, layout, phone_prefix="1370")
    ok = client.post(f"/api/v1/layouts/{layout}/activate", json={}, headers=auth(planner))
    assert ok.status_code == 200, ok.text
    return int(layout)


def _grid(client: TestClient, token: str, layout: int, code: str) -> Any:
    body = client.get(f"/api/v1/layouts/{layout}/grids", headers=auth(token)).json()
    return next(shape(f["geometry"]) for f in body["features"] if f["properties"]["code"] == code)


def _version(client: TestClient, token: str, layout: int) -> int:
    return int(client.get(f"/api/v1/layouts/{layout}", headers=auth(token)).json()["version"])


def _across(geom: Any) -> dict[str, Any]:
    c = geom.centroid
    _, miny, _, maxy = geom.bounds
    return mapping(LineString([(c.x, miny - 0.01), (c.x + 1e-4, maxy + 0.01)]))


def test_the_whole_redraw_cycle(
    client: TestClient, tokens: dict[str, str], active: int, db: psycopg.Connection[Any]
) -> None:
    planner = auth(tokens["planner"])
    draft = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "2027 redraw"}, headers=planner
    ).json()
    d = draft["id"]
    assert (draft["status"], draft["cloned_from"], draft["version"]) == ("draft", active, 1)
    grids = client.get(f"/api/v1/layouts/{d}/grids", headers=planner).json()["features"]
    village = grids[0]["properties"]["village_code"]
    first = f"{village}001"
    geom = _grid(client, tokens["planner"], d, first)
    # a new grid takes the next sequence no layout of the village ever used (codes are not reused)
    (highest,) = db.execute(
        "SELECT max(right(code, 3)::int) FROM grid WHERE village_code = %s", (village,)
    ).fetchone() or (0,)
    new = f"{village}{highest + 1:03d}"
    cut = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={"version": 1, "code": first, "line": _across(geom)},
        headers=planner,
    )
    assert cut.status_code == 200, cut.text
    assert cut.json()["added"] == [new]
    assert cut.json()["version"] == 2
    stale = client.post(
        f"/api/v1/layouts/{d}/edits/merge",
        json={"version": 1, "codes": [f"{village}002", f"{village}003"]},
        headers=planner,
    )
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    report = client.get(f"/api/v1/layouts/{d}/validate", headers=planner).json()
    assert not report["valid"]
    assert [f["properties"]["codes"] for f in report["violations"]["features"]] == [[new]]
    staff_every_grid(client, tokens["planner"], d, phone_prefix="1370")
    assert client.get(f"/api/v1/layouts/{d}/validate", headers=planner).json()["valid"]
    diff = client.get(f"/api/v1/layouts/{d}/diff", headers=planner).json()
    assert (diff["added"], diff["removed"]) == (1, 0)
    assert {f["properties"]["code"] for f in diff["features"]} == {first, new}
    before = dict(
        db.execute("SELECT code, worker_id FROM grid WHERE layout_id = %s", (active,)).fetchall()
    )
    on = client.post(
        f"/api/v1/layouts/{d}/activate",
        json={"version": _version(client, tokens["planner"], d)},
        headers=planner,
    )
    assert on.status_code == 200, on.text
    assert client.get(f"/api/v1/layouts/{active}", headers=planner).json()["status"] == "retired"
    lineage = client.get(f"/api/v1/layouts/{d}/lineage", headers=planner).json()
    shares = [r["area_share"] for r in lineage if r["old_code"] == first]
    assert sorted(r["new_code"] for r in lineage if r["old_code"] == first) == [first, new]
    assert sum(shares) == pytest.approx(1.0, abs=1e-6)
    back = client.post(f"/api/v1/layouts/{active}/rollback", headers=planner)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "active"
    after = dict(
        db.execute("SELECT code, worker_id FROM grid WHERE layout_id = %s", (active,)).fetchall()
    )
    assert after == before  # the exact previous assignment
    assert db.execute(
        "SELECT action FROM audit_log WHERE object_id = %s AND action LIKE 'layout.%%' ORDER BY id",
        (str(d),),
    ).fetchall()[:2] == [("layout.clone",), ("layout.split",)]


def test_broken_edits_are_refused_and_change_nothing(
    client: TestClient, tokens: dict[str, str], active: int
) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "bad edits"}, headers=planner
    ).json()["id"]
    grids = client.get(f"/api/v1/layouts/{d}/grids", headers=planner).json()["features"]
    code = grids[0]["properties"]["code"]
    geom = shape(grids[0]["geometry"])
    far = mapping(LineString([(100.0, 30.0), (100.1, 30.1)]))
    missed = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={"version": 1, "code": code, "line": far},
        headers=planner,
    )
    assert missed.status_code == 422
    assert "does not cut" in missed.json()["detail"]
    bloated = mapping(geom.buffer(0.05))
    outside = client.post(
        f"/api/v1/layouts/{d}/edits/reshape",
        json={"version": 1, "code": code, "geometry": bloated},
        headers=planner,
    )
    assert outside.status_code == 422
    assert outside.json()["offending"]["type"] in ("Polygon", "MultiPolygon")
    not_geojson = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={"version": 1, "code": code, "line": {"type": "Point", "coordinates": [1, 2]}},
        headers=planner,
    )
    assert not_geojson.status_code == 422
    assert _version(client, tokens["planner"], d) == 1
    assert (
        client.post(
            f"/api/v1/layouts/{active}/edits/merge",
            json={"version": 1, "codes": [code, code]},
            headers=planner,
        ).status_code
        == 409
    )  # the active layout is not a draft


def _cells(db: psycopg.Connection[Any], layout: int) -> set[tuple[str, int]]:
    """(grid code, fine cell) of a layout, own or borrowed, as the coverage engine reads them."""
    query = sql.SQL("SELECT g.code, c.h3 FROM ({}) c JOIN grid g ON g.id = c.grid_id").format(
        layout_cells(layout)
    )
    return {(str(code), int(h3)) for code, h3 in db.execute(query).fetchall()}


def test_a_clone_shares_the_fine_cells_until_a_village_is_edited(
    client: TestClient, tokens: dict[str, str], active: int, db: psycopg.Connection[Any]
) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "shared cells"}, headers=planner
    ).json()["id"]
    copied = "SELECT code, village_code, area_m2, households, n_cells, worker_id, leader_id, "
    copied += "ST_AsBinary(geom) FROM grid WHERE layout_id = %s ORDER BY code"
    assert db.execute(copied, (d,)).fetchall() == db.execute(copied, (active,)).fetchall()
    assert _cells(db, d) == _cells(db, active)
    own = db.execute("SELECT count(*) FROM grid_cell WHERE layout_id = %s", (d,)).fetchone()
    assert own == (0,)  # borrowed from the active layout, whose cells never change
    first = min(code for code, _ in _cells(db, d))
    cut = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={
            "version": 1,
            "code": first,
            "line": _across(_grid(client, tokens["planner"], d, first)),
        },
        headers=planner,
    )
    assert cut.status_code == 200, cut.text
    village = first[:12]
    after = _cells(db, d)
    assert {c for c in after if not c[0].startswith(village)} == {
        c for c in _cells(db, active) if not c[0].startswith(village)
    }
    edited = {h3 for code, h3 in after if code.startswith(village)}
    assert edited == {h3 for code, h3 in _cells(db, active) if code.startswith(village)}
    assert {code for code, _ in after if code.startswith(village)} >= set(cut.json()["added"])
    borrowing = db.execute(
        "SELECT count(*) FROM grid WHERE layout_id = %s AND village_code = %s "
        "AND cells_from IS NOT NULL",
        (d, village),
    ).fetchone()
    assert borrowing == (0,)  # the edited village owns its cells
    again = client.post(
        f"/api/v1/layouts/{d}/clone", json={"name": "clone of a draft"}, headers=planner
    ).json()["id"]
    assert _cells(db, again) == after  # own cells copied, borrowed ones still borrowed


def test_borrowers_copy_the_cells_before_a_lender_goes(
    client: TestClient, tokens: dict[str, str], active: int, db_url: str
) -> None:
    """What the demo's reload does before it deletes its layouts: their borrowers own the cells."""
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "borrower"}, headers=planner
    ).json()["id"]

    async def own() -> set[tuple[str, int]]:
        async with (
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
            conn.transaction(),
        ):
            await own_borrowed_cells(conn, [active])
        with psycopg.connect(db_url) as db:
            return _cells(db, d)

    with psycopg.connect(db_url) as db:
        shared = _cells(db, d)
    assert run(own()) == shared
    with psycopg.connect(db_url) as db:
        rows = db.execute(
            "SELECT count(*) FILTER (WHERE cells_from IS NOT NULL), "
            "(SELECT count(*) FROM grid_cell WHERE layout_id = %s) FROM grid WHERE layout_id = %s",
            (d, d),
        ).fetchone()
    assert rows == (0, len(shared))


def test_a_draft_is_abandoned_whole_and_only_a_draft(
    client: TestClient, tokens: dict[str, str], active: int, db: psycopg.Connection[Any]
) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "abandoned"}, headers=planner
    ).json()["id"]
    code = f"{_cells(db, d).pop()[0][:12]}001"
    cut = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={
            "version": 1,
            "code": code,
            "line": _across(_grid(client, tokens["planner"], d, code)),
        },
        headers=planner,
    )
    assert cut.status_code == 200, cut.text  # the edited village's grids own cells now
    viewer = client.delete(f"/api/v1/layouts/{d}", headers=auth(tokens["viewer"]))
    assert viewer.status_code == 403  # a planner's operation
    stale = client.delete(f"/api/v1/layouts/{d}?version=1", headers=planner)
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    kept = client.delete(f"/api/v1/layouts/{active}", headers=planner)
    assert kept.status_code == 409
    assert "only a draft can be abandoned" in kept.json()["detail"]
    assert kept.json()["status"] == "active"
    gone = client.delete(f"/api/v1/layouts/{d}?version=2", headers=planner)
    assert gone.status_code == 200, gone.text
    assert (gone.json()["abandoned"], gone.json()["cloned_from"]) == (True, active)
    assert client.get(f"/api/v1/layouts/{d}", headers=planner).status_code == 404
    assert client.delete(f"/api/v1/layouts/{d}", headers=planner).status_code == 404
    for table in ("grid", "grid_cell"):
        left = db.execute(f"SELECT count(*) FROM {table} WHERE layout_id = %s", (d,)).fetchone()
        assert left == (0,), table
    assert db.execute(
        "SELECT action FROM audit_log WHERE object_id = %s AND action LIKE 'layout.%%' ORDER BY id",
        (str(d),),
    ).fetchall() == [("layout.clone",), ("layout.split",), ("layout.abandon",)]
    assert client.get(f"/api/v1/layouts/{active}", headers=planner).json()["status"] == "active"


def test_an_edit_revalidates_only_its_village(
    client: TestClient,
    tokens: dict[str, str],
    active: int,
    make_token: Any,
    db: psycopg.Connection[Any],
) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "incremental"}, headers=planner
    ).json()["id"]
    villages = sorted({code[:12] for code, _ in _cells(db, d)})
    here, there = villages[0], villages[1]
    code = f"{here}001"
    cut = client.post(
        f"/api/v1/layouts/{d}/edits/split",
        json={
            "version": 1,
            "code": code,
            "line": _across(_grid(client, tokens["planner"], d, code)),
        },
        headers=planner,
    )
    assert cut.status_code == 200, cut.text
    assert cut.json()["village"] == here
    mine = client.get(f"/api/v1/layouts/{d}/validate?village={here}", headers=planner).json()
    assert (mine["valid"], mine["villages"]) == (False, [here])
    found = mine["violations"]["features"]
    assert [(f["properties"]["kind"], f["properties"]["village"]) for f in found] == [
        ("no_worker", here)
    ]
    assert found[0]["properties"]["codes"] == cut.json()["added"]
    assert client.get(f"/api/v1/layouts/{d}/validate?village={there}", headers=planner).json()[
        "valid"
    ]
    both = client.get(
        f"/api/v1/layouts/{d}/validate?village={here}&village={there}", headers=planner
    ).json()
    whole = client.get(f"/api/v1/layouts/{d}/validate", headers=planner).json()
    assert both["violations"] == whole["violations"] == mine["violations"]
    bad = client.get(f"/api/v1/layouts/{d}/validate?village=15", headers=planner)
    assert bad.status_code == 422
    # a planner of the other village sees the layout, but not this village: as if unknown
    other = auth(make_token("planner", [there]))
    theirs = client.get(f"/api/v1/layouts/{d}/validate?village={there}", headers=other)
    assert theirs.status_code == 200
    assert theirs.json()["valid"]
    outside = client.get(f"/api/v1/layouts/{d}/validate?village={here}", headers=other)
    assert outside.status_code == 404


def test_two_planners_one_wins(client: TestClient, tokens: dict[str, str], active: int) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "race"}, headers=planner
    ).json()["id"]
    grids = client.get(f"/api/v1/layouts/{d}/grids", headers=planner).json()["features"]
    codes = [(grids[i]["properties"]["code"], shape(grids[i]["geometry"])) for i in (0, 1)]

    def split(i: int) -> int:
        code, geom = codes[i]
        return client.post(
            f"/api/v1/layouts/{d}/edits/split",
            json={"version": 1, "code": code, "line": _across(geom)},
            headers=planner,
        ).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(split, [0, 1]))
    assert statuses == [200, 409]


def test_export_and_reimport_round_trip(
    client: TestClient, tokens: dict[str, str], active: int
) -> None:
    planner = auth(tokens["planner"])
    original = client.get(f"/api/v1/layouts/{active}/grids", headers=planner).json()["features"]
    for fmt in ("gpkg", "shp", "geojson"):
        file = client.get(
            f"/api/v1/layouts/{active}/export", params={"format": fmt}, headers=planner
        )
        assert file.status_code == 200
        if fmt == "shp":
            assert {
                n.rsplit(".", 1)[1] for n in zipfile.ZipFile(io.BytesIO(file.content)).namelist()
            } >= {"shp", "shx", "dbf", "prj"}
        d = client.post(
            f"/api/v1/layouts/{active}/clone", json={"name": f"reimport {fmt}"}, headers=planner
        ).json()["id"]
        name = {"gpkg": "g.gpkg", "shp": "g.zip", "geojson": "g.geojson"}[fmt]
        params = {"version": 1, "filename": name, **({"crs": "wgs84"} if fmt == "geojson" else {})}
        back = client.post(
            f"/api/v1/layouts/{d}/replace", params=params, content=file.content, headers=planner
        )
        assert back.status_code == 200, back.text
        again = client.get(f"/api/v1/layouts/{d}/grids", headers=planner).json()["features"]
        assert len(again) == len(original)
        for a, b in zip(
            sorted(original, key=lambda f: f["properties"]["code"]),
            sorted(again, key=lambda f: f["properties"]["code"]),
            strict=True,
        ):
            ga, gb = shape(a["geometry"]), shape(b["geometry"])
            # the same grid up to coordinate rounding (1e-6° ≈ 0.1 m), in every format
            assert ga.symmetric_difference(gb).area < 1e-6 * ga.area, (fmt, a["properties"])
            assert ga.hausdorff_distance(gb) < 2e-6, (fmt, a["properties"])


def test_bad_files_leave_the_draft_alone(
    client: TestClient, tokens: dict[str, str], active: int
) -> None:
    planner = auth(tokens["planner"])
    d = client.post(
        f"/api/v1/layouts/{active}/clone", json={"name": "bad files"}, headers=planner
    ).json()["id"]
    grids = client.get(f"/api/v1/layouts/{d}/grids", headers=planner).json()["features"]
    no_codes = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": grids[0]["geometry"]}],
    }
    r1 = client.post(
        f"/api/v1/layouts/{d}/replace",
        params={"version": 1, "filename": "x.geojson", "crs": "wgs84"},
        content=json.dumps(no_codes),
        headers=planner,
    )
    assert r1.status_code == 422
    assert "no 'code' field" in r1.json()["detail"]
    r2 = client.post(
        f"/api/v1/layouts/{d}/replace",
        params={"version": 1, "filename": "x.geojson"},
        content=json.dumps({"type": "FeatureCollection", "features": grids}),
        headers=planner,
    )
    assert r2.status_code == 422
    assert r2.json()["field"] == "crs"
    village = grids[0]["properties"]["village_code"]
    mine = [f for f in grids if f["properties"]["village_code"] == village]
    holes = [{**f, "geometry": mapping(shape(f["geometry"]).buffer(-0.001))} for f in mine]
    r3 = client.post(
        f"/api/v1/layouts/{d}/replace",
        params={"version": 1, "filename": "x.geojson", "crs": "wgs84"},
        content=json.dumps({"type": "FeatureCollection", "features": holes}),
        headers=planner,
    )
    assert r3.status_code == 422
    kinds = {f["properties"]["kind"] for f in r3.json()["violations"]["features"]}
    assert "gap" in kinds
    assert _version(client, tokens["planner"], d) == 1


def test_moving_an_alert_point_changes_its_grid(
    client: TestClient, tokens: dict[str, str], active: int, db: psycopg.Connection[Any]
) -> None:
    planner = auth(tokens["planner"])
    grids = client.get(f"/api/v1/layouts/{active}/grids", headers=planner).json()["features"]
    village = grids[0]["properties"]["village_code"]
    point = db.execute(
        "SELECT id FROM alert_point WHERE village_code = %s LIMIT 1", (village,)
    ).fetchone()
    assert point is not None
    target = shapely.geometry.shape(grids[1]["geometry"]).representative_point()
    moved = client.put(
        f"/api/v1/alert-points/{point[0]}", json={"lon": target.x, "lat": target.y}, headers=planner
    )
    assert moved.status_code == 200, moved.text
    listed = client.get(
        "/api/v1/alert-points", params={"layout": active, "village": village}, headers=planner
    )
    mine = next(f for f in listed.json()["features"] if f["properties"]["id"] == point[0])
    assert mine["properties"]["grid_code"] == grids[1]["properties"]["code"]
