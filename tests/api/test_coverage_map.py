"""The colour grid map's view (网格彩图): its export (CSV, XLSX, GeoJSON) holds exactly the
rows of the view — level, layout, window, the reader's scope and area — and nothing outside
the scope; its search finds grids and areas by code or name in the scope only; bad input
gets a clear 4xx."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import openpyxl
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.test_reports import COUNTIES, Patrols, store_patrols
from tests.conftest import auth

COUNTY, OTHER = COUNTIES  # 锡林浩特市 (the leader's), 西乌珠穆沁旗
HOSTILE = '=HYPERLINK("http://evil.invalid/","x")'


@pytest.fixture(scope="module")
def patrols(demo: str, make_device: Any) -> Patrols:
    return store_patrols(demo, make_device)


@pytest.fixture(scope="module")
def leader(make_token: Any) -> str:
    """A county leader (viewer) of 锡林浩特市."""
    token: str = make_token("viewer", [COUNTY])
    return token


def _get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    return client.get(path, params=params, headers=auth(token))


def _csv_rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads the Chinese names right
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def _view(patrols: Patrols, **more: Any) -> dict[str, Any]:
    return {**patrols.window, "layout": patrols.layout, **more}


@pytest.mark.parametrize("level", ["county", "township", "village", "grid"])
def test_export_holds_the_views_rows_and_only_the_scope(
    client: TestClient, leader: str, tokens: dict[str, str], patrols: Patrols, level: str
) -> None:
    api = _get(client, leader, "/api/v1/coverage", **_view(patrols, level=level)).json()
    want = {u["code"]: u for u in api["units"]}
    assert want
    assert all(code.startswith(COUNTY) for code in want)
    response = _get(
        client, leader, "/maps/coverage/export", **_view(patrols, level=level, format="csv")
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    rows = _csv_rows(response.content)
    assert [r["代码 Code"] for r in rows] == list(want)  # the same rows, in the same order
    for row in rows:
        unit = want[row["代码 Code"]]
        assert row["层级 Level"] == level
        assert row["网格方案 Layout"] == str(patrols.layout)
        assert row["起 From"] == row["止 To"] == patrols.day.isoformat()
        assert float(row["覆盖率 % Coverage %"]) == unit["coverage_pct"]
        assert int(row["盲区方格 Blind cells"]) == unit["blind_cells"]
    patrolled = patrols.villages[COUNTY]
    assert any(
        int(r["已巡方格 Seen cells"]) > 0
        for r in rows
        if patrolled.startswith(r["代码 Code"]) or r["代码 Code"].startswith(patrolled)
    )
    # the league sees the other county too: the leader's export is cut, not merely small
    league = _get(client, tokens["viewer"], "/maps/coverage/export", **_view(patrols, level=level))
    assert any(r["代码 Code"].startswith(OTHER) for r in _csv_rows(league.content))


def test_xlsx_and_geojson_exports_hold_the_same_rows(
    client: TestClient, leader: str, patrols: Patrols
) -> None:
    view = _view(patrols, level="village")
    codes = [
        r["代码 Code"]
        for r in _csv_rows(_get(client, leader, "/maps/coverage/export", **view).content)
    ]
    xlsx = _get(client, leader, "/maps/coverage/export", **view, format="xlsx")
    assert xlsx.status_code == 200
    assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    header = [c.value for c in sheet[2]]
    assert header[:5] == ["Level", "Layout", "From", "To", "Code"]
    got = [row[4] for row in sheet.iter_rows(min_row=3, values_only=True) if row[0] == "village"]
    assert got == codes
    geo = _get(client, leader, "/maps/coverage/export", **view, format="geojson")
    assert geo.status_code == 200
    assert geo.headers["content-type"] == "application/geo+json"
    collection = orjson.loads(geo.content)
    assert [f["properties"]["code"] for f in collection["features"]] == codes
    assert all(f["geometry"]["type"] in {"Polygon", "MultiPolygon"} for f in collection["features"])


def test_export_of_an_area_holds_only_that_area(
    client: TestClient, leader: str, patrols: Patrols
) -> None:
    village = patrols.villages[COUNTY]
    township = village[:9]
    rows = _csv_rows(
        _get(
            client, leader, "/maps/coverage/export", **_view(patrols, level="grid", area=township)
        ).content
    )
    assert rows
    assert all(r["代码 Code"].startswith(township) for r in rows)
    assert set(patrols.grids[village]) <= {r["代码 Code"] for r in rows}


@pytest.fixture
def hostile_village(demo: str, patrols: Patrols) -> Iterator[str]:
    """The patrolled village of the leader's county named like a formula (put back after)."""
    village = patrols.villages[COUNTY]
    with psycopg.connect(demo, autocommit=True) as conn:
        row = conn.execute("SELECT name_zh FROM admin_area WHERE code = %s", (village,)).fetchone()
        assert row is not None
        conn.execute("UPDATE admin_area SET name_zh = %s WHERE code = %s", (HOSTILE, village))
        try:
            yield village
        finally:
            conn.execute("UPDATE admin_area SET name_zh = %s WHERE code = %s", (row[0], village))


def test_export_text_never_becomes_a_formula(
    client: TestClient, leader: str, patrols: Patrols, hostile_village: str
) -> None:
    view = _view(patrols, level="village", area=hostile_village)
    rows = _csv_rows(_get(client, leader, "/maps/coverage/export", **view).content)
    assert [r["名称 Name"] for r in rows] == ["'" + HOSTILE]
    xlsx = _get(client, leader, "/maps/coverage/export", **view, format="xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    cell = sheet.cell(3, 6)
    assert cell.value == HOSTILE
    assert cell.data_type == "s"  # a string, not a formula ("f")
    assert cell.quotePrefix


def test_bad_input_is_a_clear_4xx(
    client: TestClient, leader: str, patrols: Patrols, tokens: dict[str, str]
) -> None:
    for path in ("/maps/coverage/export", "/maps/coverage"):
        bad_level = _get(client, leader, path, **_view(patrols, level="province"))
        assert bad_level.status_code == 422
        assert "level" in bad_level.text
        unknown = _get(client, leader, path, **{**_view(patrols), "layout": 99_999_999})
        assert unknown.status_code == 404
        assert "layout" in unknown.text
        outside = _get(client, leader, path, **_view(patrols, area=OTHER))
        assert outside.status_code == 404
        assert "<tr" not in outside.text
        bad_area = _get(client, leader, path, **_view(patrols, area="15x"))
        assert bad_area.status_code == 422
        backwards = _get(
            client,
            leader,
            path,
            layout=patrols.layout,
            **{"from": "2026-02-02", "to": "2026-02-01"},
        )
        assert backwards.status_code == 422
    bad_format = _get(client, leader, "/maps/coverage/export", **_view(patrols, format="pdf"))
    assert bad_format.status_code == 422


def test_search_finds_grids_and_areas_by_code_or_name_in_scope(
    client: TestClient, leader: str, tokens: dict[str, str], patrols: Patrols, demo: str
) -> None:
    village = patrols.villages[COUNTY]
    grid = patrols.grids[village][0]
    with psycopg.connect(demo, autocommit=True) as conn:
        name = conn.execute("SELECT name_zh FROM admin_area WHERE code = %s", (village,)).fetchone()
        other = conn.execute(
            "SELECT name_zh FROM admin_area WHERE code = %s", (patrols.villages[OTHER],)
        ).fetchone()
    assert name is not None
    assert other is not None

    def search(token: str, q: str) -> list[dict[str, Any]]:
        response = _get(client, token, "/maps/coverage/search", **_view(patrols, q=q))
        assert response.status_code == 200, response.text
        hits: list[dict[str, Any]] = response.json()["hits"]
        return hits

    by_code = search(leader, grid)
    assert [(h["level"], h["code"]) for h in by_code] == [("grid", grid)]
    assert by_code[0]["figures"]["coverage_pct"] > 0  # driven through on the day
    west, south, east, north = by_code[0]["bbox"]
    assert west < east
    assert south < north
    by_name = search(leader, name[0][1:])  # part of the village's name
    assert ("village", village) in {(h["level"], h["code"]) for h in by_name}
    assert all(h["code"].startswith(COUNTY) for h in by_name)
    assert all(h["code"].startswith(COUNTY) for h in search(leader, other[0]))
    assert search(leader, patrols.grids[patrols.villages[OTHER]][0]) == []  # outside: nothing
    assert search(tokens["viewer"], patrols.grids[patrols.villages[OTHER]][0])  # the league's
    assert search(leader, "没有这个地方") == []
    assert _get(client, leader, "/maps/coverage/search", q="").status_code == 422
