"""The leader's story on the reports page: choose a county and a week, build the XLSX in the
background with its progress shown, download it from the page — and the file holds the county
only, with no award for a vehicle that did no patrol work."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest

from gis.units import china_today
from tests.browser.conftest import Chromium

WAIT_MS = 60_000


@pytest.fixture
def county_leader(patrol: dict[str, Any], demo: str, make_token: Any) -> dict[str, Any]:
    """A viewer of the patrol's county, and an idle vehicle of that county (enabled, assigned
    to a village, never a fix): it must not be ranked, let alone awarded."""
    county = patrol["township"][:6]
    idle = "REPORT-IDLE-1"
    with psycopg.connect(demo, autocommit=True) as db:
        db.execute(
            "INSERT INTO device (identifier, kind, plate, home_village, enabled) "
            "VALUES (%s, 'vehicle', '蒙H·IDLE1', %s, true) ON CONFLICT (identifier) DO NOTHING",
            (idle, patrol["village"]),
        )
    return {"county": county, "idle": idle, "token": make_token("viewer", [county])}


def test_a_leader_downloads_a_weeks_xlsx_for_their_county_from_the_form(
    patrol: dict[str, Any], county_leader: dict[str, Any], chromium: Chromium
) -> None:
    county = county_leader["county"]
    run = chromium.open("/reports", county_leader["token"])
    page = run.page
    # the form offers the areas of the leader's county only
    offered = page.locator("#report-areas option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert county in offered
    assert all(code.startswith(county) for code in offered), offered
    today = china_today()
    page.fill("#report-form input[name=area]", county)
    page.select_option("#report-form select[name=level]", "village")
    page.fill("#report-form input[name=from]", (today - timedelta(days=6)).isoformat())
    page.fill("#report-form input[name=to]", today.isoformat())
    page.check("#report-form input[name=format][value=xlsx]")
    page.click("#report-form button[type=submit]")
    page.locator("#report-status").wait_for(state="visible", timeout=WAIT_MS)
    link = page.locator("#report-download")
    link.wait_for(timeout=WAIT_MS)
    assert "XLSX" in link.inner_text()
    run.screenshot("reports-ready")
    with page.expect_download(timeout=WAIT_MS) as download:
        link.click()
    book = openpyxl.load_workbook(io.BytesIO(Path(download.value.path()).read_bytes()))
    villages = [r[0].value for r in book["嘎查村 Villages"].iter_rows(min_row=3)]
    assert villages
    assert all(str(code).startswith(county) for code in villages)
    assert patrol["village"] in villages
    ranking = book["车辆排名 Ranking"]
    header = [c.value for c in ranking[2]]
    verdict, km = header.index("Verdict"), header.index("km")
    ranked = [r for r in ranking.iter_rows(min_row=3) if isinstance(r[0].value, int)]
    assert ranked  # the patrol's vehicles did work this week
    for row in ranked:
        if "award" in str(row[verdict].value):
            assert float(row[km].value or 0) > 0, [c.value for c in row]
    idents = {str(r[2].value) for r in ranked}
    assert county_leader["idle"] not in idents
    not_ranked = {str(r[0].value) for r in book["未排名 Not ranked"].iter_rows(min_row=3)}
    assert county_leader["idle"] in not_ranked
    # the report is listed under "my reports" with its link
    page.locator("#report-list a", has_text="下载").first.wait_for(timeout=WAIT_MS)
    assert run.errors == []
