"""Issue 18, item 1: layout export, diff, validate and lineage carry the scope.

The review exported the league-wide layout as a county viewer and got all 8,704 grids with the
names and phones of their workers; ``diff`` returned 22 MB of geometry outside the scope. Each
per-grid query of the layout operations now carries the scope predicate: a county viewer
(锡林浩特市 152502) gets the grids of 152502 and nothing else, in every export format, in the
diff, among the violations and in the lineage; the layout's grid count is the in-scope count.
The alert-point route refuses a staff member outside the scope like an absent one.

The module works on its own draft copy of the active patrol layout, made in SQL (no fine cells:
none of these routes reads them) with two grids left without a worker — one inside the county,
one outside — and lineage rows from the active layout, so nothing another test reads changes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyogrio
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("demo")
COUNTY = "152502"  # 锡林浩特市
OUT_COUNTY = "152525"  # 东乌珠穆沁旗


@dataclass
class Copy:
    active: int
    draft: int
    unstaffed: tuple[str, str]  # (in the county, outside it)
    viewer: dict[str, str]  # a county viewer


def _rows(db: psycopg.Connection[Any], query: str, *args: Any) -> list[tuple[Any, ...]]:
    return db.execute(query, args).fetchall()


def _one(db: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = db.execute(query, args).fetchone()
    assert row is not None, query
    assert row[0] is not None, query
    return row[0]


@pytest.fixture(scope="module")
def copy(db_url: str, make_token: Callable[..., str]) -> Iterator[Copy]:
    with psycopg.connect(db_url, autocommit=True) as db:
        active = _one(
            db, "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        )
        draft = _one(
            db,
            "INSERT INTO grid_layout (name, purpose, area_code, method, resolution, cloned_from, "
            "created_by) SELECT 'scope copy', 'information', area_code, 'redraw', resolution, "
            "id, 'test' FROM grid_layout WHERE id = %s RETURNING id",
            active,
        )
        db.execute(
            "INSERT INTO grid (layout_id, code, village_code, name, area_m2, households, "
            "n_cells, worker_id, leader_id, geom) SELECT %s, code, village_code, name, area_m2, "
            "households, n_cells, worker_id, leader_id, geom FROM grid WHERE layout_id = %s",
            (draft, active),
        )
        inside = _one(
            db,
            "SELECT min(code) FROM grid WHERE layout_id = %s AND code LIKE %s",
            draft,
            COUNTY + "%",
        )
        outside = _one(
            db,
            "SELECT min(code) FROM grid WHERE layout_id = %s AND code LIKE %s",
            draft,
            OUT_COUNTY + "%",
        )
        db.execute(
            "UPDATE grid SET worker_id = NULL WHERE layout_id = %s AND code = ANY(%s)",
            (draft, [inside, outside]),
        )
        db.execute(
            "INSERT INTO grid_lineage (layout_id, from_layout, old_code, new_code, area_share) "
            "SELECT %s, %s, code, code, 1.0 FROM grid WHERE layout_id = %s",
            (draft, active, active),
        )
        yield Copy(active, draft, (inside, outside), auth(make_token("viewer", [COUNTY])))
        db.execute("DELETE FROM grid_lineage WHERE layout_id = %s", (draft,))
        db.execute("DELETE FROM grid_layout WHERE id = %s", (draft,))


def _text(value: Any) -> str | None:
    """A text field read back from a file: missing values come back as NaN."""
    return value if isinstance(value, str) and value else None


def _in_scope(db: psycopg.Connection[Any], layout: int) -> dict[str, tuple[Any, Any]]:
    """code → (worker name, phone) of the layout's grids in the county, from SQL."""
    return {
        r[0]: (r[1], r[2])
        for r in _rows(
            db,
            "SELECT g.code, s.name, s.phone FROM grid g LEFT JOIN staff s ON s.id = g.worker_id "
            "WHERE g.layout_id = %s AND g.code LIKE %s",
            layout,
            COUNTY + "%",
        )
    }


def _an_outside_phone(db: psycopg.Connection[Any], layout: int) -> str:
    return _one(
        db,
        "SELECT min(s.phone) FROM grid g JOIN staff s ON s.id = g.worker_id "
        "WHERE g.layout_id = %s AND g.code LIKE %s",
        layout,
        OUT_COUNTY + "%",
    )


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "geojson"])
def test_export_holds_only_the_grids_and_workers_of_the_scope(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any], tmp_path: Path, fmt: str
) -> None:
    got = client.get(f"/api/v1/layouts/{copy.draft}/export?format={fmt}", headers=copy.viewer)
    assert got.status_code == 200, got.text[:300]
    path = tmp_path / f"export.{'zip' if fmt == 'shp' else fmt}"
    path.write_bytes(got.content)
    frame = pyogrio.read_dataframe(f"/vsizip/{path}" if fmt == "shp" else path)
    want = _in_scope(db, copy.draft)
    assert want, "the county has grids"
    codes = [str(c) for c in frame["code"]]
    assert all(c.startswith(COUNTY) for c in codes), sorted(set(codes))[:5]
    assert sorted(codes) == sorted(want)
    people = {
        (str(c), _text(w), _text(p))
        for c, w, p in zip(frame["code"], frame["worker"], frame["phone"], strict=True)
    }
    assert people == {(c, w, p) for c, (w, p) in want.items()}
    raw = got.content
    if fmt == "shp":
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            raw = b"".join(zf.read(n) for n in zf.namelist())
    assert _an_outside_phone(db, copy.draft).encode() not in raw


def test_diff_holds_only_grids_of_the_scope(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any]
) -> None:
    # against its source: the two grids whose worker went; the county sees its own one
    got = client.get(f"/api/v1/layouts/{copy.draft}/diff", headers=copy.viewer)
    assert got.status_code == 200, got.text[:300]
    body = got.json()
    assert [f["properties"]["code"] for f in body["features"]] == [copy.unstaffed[0]]
    assert (body["added"], body["removed"], body["changed"]) == (0, 0, 1)
    # against a layout of another shape (the vehicle areas): every grid of both differs, and
    # still only the county's are listed
    vehicle = _one(db, "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'vehicle'")
    got = client.get(f"/api/v1/layouts/{copy.draft}/diff?against={vehicle}", headers=copy.viewer)
    assert got.status_code == 200, got.text[:300]
    codes = [f["properties"]["code"] for f in got.json()["features"]]
    assert codes, "the layouts differ in the county"
    assert all(c.startswith(COUNTY) for c in codes), sorted(c for c in codes if c[:6] != COUNTY)[:5]
    union = {
        r[0]
        for r in _rows(
            db,
            "SELECT code FROM grid WHERE layout_id = ANY(%s) AND code LIKE %s",
            [copy.draft, vehicle],
            COUNTY + "%",
        )
    }
    assert set(codes) <= union
    assert _an_outside_phone(db, copy.draft).encode() not in got.content


def test_validate_lists_only_violations_of_the_scope(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any]
) -> None:
    got = client.get(f"/api/v1/layouts/{copy.draft}/validate", headers=copy.viewer)
    assert got.status_code == 200, got.text[:300]
    body = got.json()
    features = body["violations"]["features"]
    # the copy's unstaffed grids in the county, from SQL: the active layout it was copied from
    # may carry unstaffed grids of its own, left by an earlier test's redraw
    unstaffed = {
        r[0]
        for r in _rows(
            db,
            "SELECT code FROM grid WHERE layout_id = %s AND code LIKE %s AND worker_id IS NULL",
            copy.draft,
            COUNTY + "%",
        )
    }
    assert copy.unstaffed[0] in unstaffed
    kinds = [(f["properties"]["kind"], f["properties"]["codes"]) for f in features]
    assert {c for kind, codes in kinds if kind == "no_worker" for c in codes} == unstaffed
    assert all(c.startswith(COUNTY) for _, codes in kinds for c in codes), kinds
    assert body["problems"] == len(features)
    assert body["valid"] is False
    assert copy.unstaffed[1] not in got.text


def test_lineage_holds_only_rows_of_the_scope(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any]
) -> None:
    got = client.get(f"/api/v1/layouts/{copy.draft}/lineage", headers=copy.viewer)
    assert got.status_code == 200, got.text[:300]
    rows = got.json()
    assert all(r["old_code"].startswith(COUNTY) and r["new_code"].startswith(COUNTY) for r in rows)
    assert sorted(r["new_code"] for r in rows) == sorted(_in_scope(db, copy.active))


def test_the_layouts_grid_count_is_the_scopes(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any]
) -> None:
    count = len(_in_scope(db, copy.draft))
    one = client.get(f"/api/v1/layouts/{copy.draft}", headers=copy.viewer)
    assert one.status_code == 200
    assert one.json()["grids"] == count
    listed = client.get("/api/v1/layouts", headers=copy.viewer).json()
    assert {r["id"]: r["grids"] for r in listed}[copy.draft] == count


def test_a_league_viewer_still_gets_everything(
    client: TestClient, copy: Copy, db: psycopg.Connection[Any], make_token: Callable[..., str]
) -> None:
    league = auth(make_token("viewer", ["*"]))
    total = _one(db, "SELECT count(*) FROM grid WHERE layout_id = %s", copy.draft)
    body = orjson.loads(
        client.get(f"/api/v1/layouts/{copy.draft}/export?format=geojson", headers=league).content
    )
    assert len(body["features"]) == total
    diff = client.get(f"/api/v1/layouts/{copy.draft}/diff", headers=league).json()
    assert sorted(f["properties"]["code"] for f in diff["features"]) == sorted(copy.unstaffed)


def test_an_alert_point_is_not_given_to_staff_outside_the_scope(
    client: TestClient, db: psycopg.Connection[Any], make_token: Callable[..., str]
) -> None:
    planner = auth(make_token("planner", [COUNTY]))
    point, before = _rows(
        db,
        "SELECT id, staff_id FROM alert_point WHERE village_code LIKE %s ORDER BY id LIMIT 1",
        COUNTY + "%",
    )[0]
    stranger, name = _rows(
        db,
        "SELECT id, name FROM staff WHERE village_code LIKE %s ORDER BY id LIMIT 1",
        OUT_COUNTY + "%",
    )[0]
    refused = client.put(
        f"/api/v1/alert-points/{point}", json={"staff_id": stranger}, headers=planner
    )
    assert refused.status_code == 404, refused.text
    assert name not in refused.text
    assert _one(db, "SELECT coalesce(staff_id, -1) FROM alert_point WHERE id = %s", point) == (
        -1 if before is None else before
    )
    assert (
        _one(
            db,
            "SELECT count(*) FROM audit_log WHERE action = 'alert_point.update' "
            "AND object_id = %s AND detail->>'staff_id' = %s",
            str(point),
            str(stranger),
        )
        == 0
    )
    own = _one(db, "SELECT min(id) FROM staff WHERE village_code LIKE %s AND active", COUNTY + "%")
    ok = client.put(f"/api/v1/alert-points/{point}", json={"staff_id": own}, headers=planner)
    assert ok.status_code == 200, ok.text
    assert ok.json()["staff_id"] == own
