"""Coverage reports (HTML, XLSX, PDF, CSV) from the API and the CLI, on known patrols."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from gis.crs import haversine_m
from tests.api.test_coverage_update import _update
from tests.conftest import auth, run

REPORT_DAY_OFFSET = 33  # days ago: no other test patrols then
CHINA = timedelta(hours=8)
COUNTIES = ("152502", "152526")  # 锡林浩特市, 西乌珠穆沁旗
A4_POINTS = (595.28, 841.89)
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Patrols:
    """What ``store_patrols`` drove: one vehicle per county, grid 1 → grid 2 of a village."""

    day: date
    layout: int
    villages: dict[str, str]  # county → village patrolled
    grids: dict[str, list[str]]  # village → the two grids driven through
    devices: list[str]
    km: float

    @property
    def window(self) -> dict[str, str]:
        return {"from": self.day.isoformat(), "to": self.day.isoformat()}


_STORED: dict[str, Patrols] = {}


def _drive(a: tuple[float, float], b: tuple[float, float], start_us: int) -> tuple[list[Any], ...]:
    """Fixes every 10 s at 10 m/s from a to b (lon, lat), and the metres driven."""
    metres = float(haversine_m(a[0], a[1], b[0], b[1]))
    steps = int(metres / 100) + 1
    k = np.arange(steps + 1)
    t = (start_us + k * 10_000_000).tolist()
    lon = (a[0] + (b[0] - a[0]) * k / steps).tolist()
    lat = (a[1] + (b[1] - a[1]) * k / steps).tolist()
    return t, lat, lon, [metres]


def store_patrols(url: str, make_device: Any) -> Patrols:
    """Drive one vehicle across the first two grids of a village in each of two counties on a
    past day, store the fixes and bring coverage up to date (once per database)."""
    if url in _STORED:
        return _STORED[url]
    day = (datetime.now(UTC) + CHINA).date() - timedelta(days=REPORT_DAY_OFFSET)
    nine = int((datetime(day.year, day.month, day.day, tzinfo=UTC) - CHINA).timestamp() + 9 * 3600)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()
        assert row is not None
        layout = int(row[0])
        villages, grids, points = {}, {}, {}
        for county in COUNTIES:
            found = conn.execute(
                "SELECT village_code, code, ST_X(ST_PointOnSurface(geom)), "
                "ST_Y(ST_PointOnSurface(geom)) FROM grid WHERE layout_id = %s AND village_code = "
                "(SELECT min(village_code) FROM grid WHERE layout_id = %s AND code LIKE %s) "
                "ORDER BY code LIMIT 2",
                (layout, layout, f"{county}%"),
            ).fetchall()
            village = found[0][0]
            villages[county] = village
            grids[village] = [f[1] for f in found]
            points[village] = [(f[2], f[3]) for f in found]
    devices, columns, km = [], ([], [], [], []), 0.0
    for village, (a, b) in points.items():
        identifier, _ = make_device(village)
        t, lat, lon, metres = _drive(a, b, nine * 1_000_000)
        devices.append(identifier)
        for store, values in zip(columns, ([identifier] * len(t), t, lat, lon), strict=True):
            store.extend(values)
        km += metres[0] / 1000
    batch = FixBatch.from_columns(
        device=columns[0], time_us=columns[1], lat=columns[2], lon=columns[3]
    )

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings(max_age_days=90))  # the day is 33 days ago
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(batch)

    run(store())
    run(_update(url))
    _STORED[url] = Patrols(day, layout, villages, grids, devices, km)
    return _STORED[url]


@pytest.fixture(scope="module")
def patrols(demo: str, make_device: Any) -> Patrols:
    return store_patrols(demo, make_device)


def _report(client: TestClient, token: str, **params: Any) -> Any:
    return client.get("/reports/coverage", params=params, headers=auth(token))


def test_html_report_has_the_map_legend_tables_and_charts_offline(
    client: TestClient, tokens: dict[str, str], patrols: Patrols
) -> None:
    response = _report(client, tokens["viewer"], **patrols.window, level="village")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-disposition"].startswith("inline; filename=")
    page = response.text
    assert 'class="folium-map"' in page  # the colour grid map
    assert "L.map(" in page
    assert "覆盖率 Coverage" in page  # legend title, both languages
    assert "未巡逻 not patrolled" in page
    assert "≥ 90 %" in page  # the classes of gis.palette, as on the colour grid map
    # blind spots: the last 7 days of the window, here its one day
    assert "盲区（近1天未巡）" in page
    assert "Blind spots (unseen in the last 1 d)" in page
    assert "synthetic demo data" in page
    assert "合成演示数据" in page
    assert "Blind spots (1 d)" in page  # the blind-spot layer is on the map
    # offline: no script or stylesheet from anywhere, Leaflet itself inlined
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"(https?:)?//", page)
    assert "/static/vendor" not in page
    assert "Leaflet" in page
    assert len(page) > 200_000
    assert page.count('src="data:image/png;base64,') == 2  # distribution, daily km
    for heading in ("Coverage per village", "Coverage per township", "Coverage per county"):
        assert heading in page
    assert "Coverage per grid" not in page  # only the chosen level and coarser ones
    for village in patrols.villages.values():
        assert f"<td>{village}</td>" in page
    assert "嘉奖 award" in page
    assert "Vehicle ranking" in page
    assert "Response times" in page


def test_xlsx_report_has_a_sheet_per_level_with_frozen_bilingual_headers(
    client: TestClient, tokens: dict[str, str], patrols: Patrols
) -> None:
    response = _report(client, tokens["viewer"], **patrols.window, level="grid", format="xlsx")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    day = patrols.day.isoformat()
    assert response.headers["content-disposition"] == (
        f'attachment; filename="gridpatrol-coverage-grid-{day}-{day}.xlsx"'
    )
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames[:5] == [
        "说明 About",
        "网格 Grids",
        "嘎查村 Villages",
        "苏木乡镇 Townships",
        "旗县 Counties",
    ]
    assert {"车辆排名 Ranking", "日里程 Daily km", "覆盖分布 Distribution"} <= set(book.sheetnames)
    grids = book["网格 Grids"]
    assert grids.freeze_panes == "C3"
    assert [c.value for c in grids[1]][:3] == ["代码", "名称", "英文名"]
    assert [c.value for c in grids[2]][:3] == ["Code", "Name", "Name (EN)"]
    header = [c.value for c in grids[2]]
    at = header.index("Coverage %")
    rows = {r[0].value: r for r in grids.iter_rows(min_row=3)}
    for village, driven in patrols.grids.items():
        assert all(float(rows[g][at].value) > 0 for g in driven), village
        assert rows[driven[0]][at].number_format == "0.0"
    assert grids.column_dimensions["A"].width >= 15
    assert book["车辆排名 Ranking"].freeze_panes == "D3"
    ranked = [c.value for c in book["车辆排名 Ranking"][2]]
    assert {"Rank", "Verdict", "Score", "Part: km", "Part: own coverage"} <= set(ranked)
    daily = book["日里程 Daily km"]
    devices = {r[0].value for r in daily.iter_rows(min_row=3)}
    assert set(patrols.devices) <= devices
    assert [c.value for c in daily[2]][-1] == "km"  # one column per day


def test_pdf_report_prints_on_a4(client: TestClient, make_token: Any, patrols: Patrols) -> None:
    county = make_token("viewer", ["152526"])
    response = _report(client, county, **patrols.window, format="pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].endswith('.pdf"')
    assert response.content.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(response.content))
    assert len(reader.pages) >= 5  # map, charts, village/township/county tables, ranking
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(A4_POINTS[0], abs=1)
        assert float(page.mediabox.height) == pytest.approx(A4_POINTS[1], abs=1)
    assert reader.metadata is not None
    assert "Coverage report" in str(reader.metadata.title)
    first = reader.pages[0].extract_text()
    assert "Colour grid map" in first
    assert "Blind spots" in first


def test_csv_report_is_the_chosen_level_with_a_bom(
    client: TestClient, tokens: dict[str, str], patrols: Patrols
) -> None:
    response = _report(client, tokens["viewer"], **patrols.window, level="grid", format="csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(BOM)
    rows = list(csv.reader(io.StringIO(response.content[len(BOM) :].decode("utf-8"))))
    assert rows[0][:3] == ["代码 Code", "名称 Name", "英文名 Name (EN)"]
    assert "覆盖率% Coverage %" in rows[0]
    assert all(len(r[0]) == 15 for r in rows[1:])  # grid codes
    at = rows[0].index("覆盖率% Coverage %")
    by_code = {r[0]: r for r in rows[1:]}
    for driven in patrols.grids.values():
        assert all(float(by_code[g][at]) > 0 for g in driven)


def test_a_county_user_reports_on_their_county_only(
    client: TestClient, make_token: Any, patrols: Patrols
) -> None:
    county = make_token("viewer", ["152526"])
    body = _report(client, county, **patrols.window, format="csv").content
    rows = list(csv.reader(io.StringIO(body[len(BOM) :].decode("utf-8"))))[1:]
    assert rows
    assert all(r[0].startswith("152526") for r in rows)
    assert patrols.villages["152526"] in {r[0] for r in rows}
    book = openpyxl.load_workbook(
        io.BytesIO(_report(client, county, **patrols.window, format="xlsx").content)
    )
    counties = [r[0].value for r in book["旗县 Counties"].iter_rows(min_row=3)]
    assert counties == ["152526"]
    # the blind spots drawn on the map are exactly the blind cells the tables count
    about = {r[1].value: r[2].value for r in book["说明 About"].iter_rows(min_row=2)}
    header = [c.value for c in book["旗县 Counties"][2]]
    county_row = next(book["旗县 Counties"].iter_rows(min_row=3))
    assert about["Blind cells"] == county_row[header.index("Blind cells")].value > 0
    ranked = [
        r for r in book["车辆排名 Ranking"].iter_rows(min_row=3) if isinstance(r[0].value, int)
    ]
    villages = [r[4].value for r in ranked]  # the rule is printed under the table
    assert villages
    assert all(str(v).startswith("152526") for v in villages)
    outside = _report(client, county, **patrols.window, format="csv", area="152502")
    assert outside.status_code == 404


def test_an_area_narrows_the_report(
    client: TestClient, tokens: dict[str, str], patrols: Patrols
) -> None:
    village = patrols.villages["152502"]
    body = _report(client, tokens["viewer"], **patrols.window, format="csv", area=village)
    rows = list(csv.reader(io.StringIO(body.content[len(BOM) :].decode("utf-8"))))[1:]
    assert [r[0] for r in rows] == [village]


@pytest.mark.parametrize(
    ("window", "field", "limit"),
    [
        ({"from": "2026-11-10", "to": "2026-11-01"}, "to", None),
        ({"from": "2026-01-01", "to": "2026-12-31"}, "to", 92),
    ],
)
def test_bad_windows_are_422_naming_the_limit(
    client: TestClient,
    tokens: dict[str, str],
    window: dict[str, str],
    field: str,
    limit: int | None,
) -> None:
    response = _report(client, tokens["viewer"], **window, format="pdf")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field
    if limit:
        assert body["limit_days"] == limit
        assert str(limit) in body["detail"]


def test_unknown_layouts_formats_and_levels(client: TestClient, tokens: dict[str, str]) -> None:
    assert _report(client, tokens["viewer"], layout=999_999).status_code == 404
    assert _report(client, tokens["viewer"], format="docx").status_code == 422
    assert _report(client, tokens["viewer"], level="province").status_code == 422


def test_an_empty_window_gives_a_report_that_says_so(
    client: TestClient, tokens: dict[str, str], make_token: Any, patrols: Patrols
) -> None:
    long_ago = (patrols.day - timedelta(days=400)).isoformat()
    window = {"from": long_ago, "to": long_ago, "level": "county"}
    page = _report(client, tokens["viewer"], **window)
    assert page.status_code == 200, page.text
    assert 'id="empty-note"' in page.text
    assert "No patrol data in this window" in page.text
    assert page.headers["x-report-note"].startswith("no patrol data")
    book = openpyxl.load_workbook(
        io.BytesIO(_report(client, tokens["viewer"], **window, format="xlsx").content)
    )
    notes = [r[2].value for r in book["说明 About"].iter_rows(min_row=2) if r[1].value == "Note"]
    assert notes == ["窗口内无巡逻数据 No patrol data in this window"]
    counties = book["旗县 Counties"]
    coverage = [r[7].value for r in counties.iter_rows(min_row=3)]
    assert coverage
    assert all(v == 0 for v in coverage)
    county = make_token("viewer", ["152526"])  # a short PDF
    pdf = _report(client, county, **window, format="pdf")
    assert "No patrol data" in PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()


def test_a_token_in_the_address_moves_to_a_cookie(
    client: TestClient, tokens: dict[str, str], patrols: Patrols
) -> None:
    try:
        response = client.get(
            "/reports/coverage",
            params={"token": tokens["viewer"], **patrols.window, "format": "csv"},
            follow_redirects=False,
        )
    finally:
        client.cookies.clear()  # the session's client must stay anonymous for other tests
    assert response.status_code == 303
    assert "token=" not in response.headers["location"]
    assert response.headers["location"].startswith("/reports/coverage?")
    assert "gp_token=" in response.headers["set-cookie"]


@pytest.mark.parametrize("fmt", ["html", "xlsx", "pdf", "csv"])
def test_cli_writes_each_format(
    patrols: Patrols, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    monkeypatch.setenv("DATABASE_URL", db_url)
    out = tmp_path / f"report.{fmt}"
    day = patrols.day.isoformat()
    args = ["report", "--from", day, "--to", day, "--format", fmt, "--area", "152526"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out} (" in result.output
    content = out.read_bytes()
    if fmt == "html":
        assert b'class="folium-map"' in content
        assert b"<script src=" not in content
    elif fmt == "xlsx":
        book = openpyxl.load_workbook(io.BytesIO(content))
        assert book["嘎查村 Villages"].freeze_panes == "C3"
        codes = [r[0].value for r in book["嘎查村 Villages"].iter_rows(min_row=3)]
        assert codes
        assert all(c.startswith("152526") for c in codes)
    elif fmt == "pdf":
        reader = PdfReader(io.BytesIO(content))
        assert float(reader.pages[0].mediabox.height) == pytest.approx(A4_POINTS[1], abs=1)
    else:
        assert content.startswith(BOM)
        assert patrols.villages["152526"].encode() in content


def test_cli_refuses_an_unknown_format(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    monkeypatch.setenv("DATABASE_URL", db_url)
    result = CliRunner().invoke(cli, ["report", "--format", "docx"])
    assert result.exit_code == 1
    assert "--format must be one of html, xlsx, pdf, csv" in result.output


# ---- report jobs: the page's API, the cache, the worker ----------------------------------------
def _ask(client: TestClient, token: str, **body: Any) -> Any:
    return client.post("/api/v1/reports", json=body, headers=auth(token))


def _until_finished(client: TestClient, token: str, job: dict[str, Any]) -> dict[str, Any]:
    for _ in range(600):
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
        job = client.get(f"/api/v1/reports/{job['id']}", headers=auth(token)).json()
    raise AssertionError(f"report job {job['id']} still {job['status']}")


def test_a_report_job_is_built_once_and_rebuilt_when_its_data_changes(
    client: TestClient, demo: str, make_token: Any, patrols: Patrols
) -> None:
    county = make_token("viewer", ["152526"])
    body = {**patrols.window, "level": "village", "format": "csv"}
    first = _ask(client, county, **body)
    assert first.status_code in (200, 202), first.text
    job = _until_finished(client, county, first.json())
    assert job["status"] == "done", job
    assert job["url"] == f"/api/v1/reports/{job['id']}/file"
    file = client.get(job["url"], headers=auth(county))
    assert file.status_code == 200
    assert file.headers["content-type"] == "text/csv; charset=utf-8"
    assert patrols.villages["152526"].encode() in file.content
    again = _ask(client, county, **body)
    assert again.status_code == 200
    assert again.json()["id"] == job["id"]
    assert again.json()["cached"] is True
    # another user with the same scope shares the file; a wider one has its own
    colleague = make_token("viewer", ["152526"])
    assert _ask(client, colleague, **body).json()["id"] == job["id"]
    assert _ask(client, make_token("viewer", ["1525"]), **body).json()["id"] != job["id"]
    # new data for the window: the same request builds anew
    with psycopg.connect(demo, autocommit=True) as db:
        db.execute(
            "UPDATE device_day SET updated_at = clock_timestamp() "
            "WHERE day = %s AND device_id = (SELECT id FROM device WHERE identifier = %s)",
            (patrols.day, patrols.devices[1]),
        )
    fresh = _ask(client, county, **body)
    assert fresh.json()["id"] != job["id"]
    assert _until_finished(client, county, fresh.json())["status"] == "done"
    mine = client.get("/api/v1/reports", headers=auth(county)).json()
    assert [j["id"] for j in mine][:2] == [fresh.json()["id"], job["id"]]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"format": "docx"}, 422, "format"),
        ({"level": "province"}, 422, "level"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, 422, "to"),
        ({"from": "2026-01-01", "to": "2026-12-31"}, 422, "92"),
        ({"format": "csv", "colour": "red"}, 422, "colour"),
        ({"format": "csv", "area": "152502"}, 404, "152502"),
        ({"format": "csv", "layout": 987654}, 404, "987654"),
        ({"format": "csv", "area": "not-a-code"}, 404, "not-a-code"),
    ],
)
def test_bad_report_requests_name_the_problem_and_queue_nothing(
    client: TestClient, demo: str, make_token: Any, body: dict[str, Any], status: int, names: str
) -> None:
    county = make_token("viewer", ["152526"])
    with psycopg.connect(demo, autocommit=True) as db:
        before = db.execute("SELECT count(*) FROM report_job").fetchone()
    response = _ask(client, county, **body)
    assert response.status_code == status, response.text
    assert names in response.text
    with psycopg.connect(demo, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM report_job").fetchone() == before


def test_a_job_left_by_a_dead_worker_is_built_again_and_an_unready_file_is_409(
    client: TestClient, demo: str, tokens: dict[str, str], patrols: Patrols
) -> None:
    params = {
        "scope": ["*"],
        "layout": patrols.layout,
        "first": patrols.day.isoformat(),
        "last": patrols.day.isoformat(),
        "level": "county",
        "format": "csv",
        "area": None,
    }
    with psycopg.connect(demo, autocommit=True) as db:
        waiting = db.execute(
            "INSERT INTO report_job (cache_key, params, scope, format, status) "
            "VALUES (md5(random()::text), %s, '{*}', 'csv', 'running') RETURNING id",
            (json.dumps(params),),
        ).fetchone()[0]  # type: ignore[index]
        early = client.get(f"/api/v1/reports/{waiting}/file", headers=auth(tokens["viewer"]))
        assert early.status_code == 409, early.text  # running, with a fresh heartbeat
        db.execute(
            "UPDATE report_job SET heartbeat_at = now() - interval '10 minutes', attempts = 1 "
            "WHERE id = %s",
            (waiting,),
        )
    job = client.get(f"/api/v1/reports/{waiting}", headers=auth(tokens["viewer"])).json()
    job = _until_finished(client, tokens["viewer"], job)
    assert job["status"] == "done", job
    csv_text = client.get(job["url"], headers=auth(tokens["viewer"])).content.decode("utf-8-sig")
    assert "152526" in csv_text
