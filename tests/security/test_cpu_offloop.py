"""Issue 18 item 7: CPU-heavy requests run off the event loop, with limits.

- Alert-point siting is a planner's tool (a viewer gets 403) and its problem size is bounded:
  beyond ``GRIDPATROL_API_SITING_MAX_CANDIDATES`` / ``…_MAX_PAIRS`` the answer is 422 naming the
  limit, before anything big is built.
- While a large GPX file is parsed (in a worker process), ``/healthz`` keeps answering: no
  health check waits anywhere near as long as the upload takes.
- Staff tables (XLSX through openpyxl) and geometry edits still work through the workers.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import openpyxl
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth

VILLAGE = "152502100200"


@pytest.fixture(scope="module")
def biggest_village(demo: str) -> str:
    with psycopg.connect(demo) as conn:
        row = conn.execute(
            "SELECT code FROM admin_area WHERE level = 'village' "
            "ORDER BY ST_Area(geom::geography) DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_siting_needs_the_planner_role(
    client: TestClient, tokens: dict[str, str], demo: str
) -> None:
    body = {"village": VILLAGE, "k": 2, "radius_km": 3}
    viewer = client.post("/api/v1/alert-points/siting", json=body, headers=auth(tokens["viewer"]))
    assert viewer.status_code == 403, viewer.text
    dispatcher = client.post(
        "/api/v1/alert-points/siting", json=body, headers=auth(tokens["dispatcher"])
    )
    assert dispatcher.status_code == 403, dispatcher.text
    planner = client.post("/api/v1/alert-points/siting", json=body, headers=auth(tokens["planner"]))
    assert planner.status_code == 200, planner.text
    result = planner.json()
    assert result["village"] == VILLAGE
    assert len(result["chosen"]) == 2
    assert all(115 < p["lon"] < 118 and 42 < p["lat"] < 46 for p in result["chosen"])


def test_an_over_large_siting_problem_is_422_naming_the_limit(
    client: TestClient, tokens: dict[str, str], biggest_village: str
) -> None:
    response = client.post(
        "/api/v1/alert-points/siting",
        json={"village": biggest_village, "k": 6, "radius_km": 3, "spacing_m": 100},
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "spacing_m"
    assert "GRIDPATROL_API_SITING_MAX_CANDIDATES" in body["detail"]
    assert "2,000" in body["detail"]  # the limit's value


def _gpx(waypoints: int) -> bytes:
    """A GPX file that costs expat + Python callbacks a lot and stores nothing: waypoints
    without a time are read and dropped (no fixes, no errors)."""
    head = b'<?xml version="1.0"?><gpx version="1.1" creator="t"><metadata/>\n'
    one = b'<wpt lat="43.93" lon="116.07"><name>a</name><ele>1000</ele></wpt>\n'
    return head + one * waypoints + b"</gpx>\n"


def test_healthz_answers_while_a_large_gpx_is_parsed(
    client: TestClient, tokens: dict[str, str], make_device: Any, demo: str
) -> None:
    ident, token = make_device(VILLAGE)
    body = _gpx(150_000)  # ≈ 11 MB: seconds of CPU
    outcome: dict[str, Any] = {}

    def upload() -> None:
        started = time.monotonic()
        response = client.post(
            f"/api/v1/positions/files?device={ident}&format=gpx", content=body, headers=auth(token)
        )
        outcome["response"] = response
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=upload)
    worker.start()
    waits: list[float] = []
    while worker.is_alive():
        asked = time.monotonic()
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        if worker.is_alive():  # answered while the upload is still in flight
            waits.append(time.monotonic() - asked)
        time.sleep(0.02)
    worker.join()
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "gpx"
    assert response.json()["received"] == 0  # waypoints without time: nothing to store
    # on the loop, one health check waited for the whole parse; off it, many were answered
    # meanwhile and none waited more than a fraction of the upload
    assert len(waits) >= 3, (waits, outcome["seconds"])
    assert max(waits) < outcome["seconds"] / 3, (max(waits), outcome["seconds"])


def test_staff_xlsx_is_read_by_a_worker(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any], demo: str
) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["name", "phone", "village_code"])
    sheet.append(["离线工作者", "13900000718", VILLAGE])
    out = io.BytesIO()
    book.save(out)
    response = client.post(
        "/api/v1/staff/import",
        params={"filename": "staff.xlsx"},
        content=out.getvalue(),
        headers=auth(tokens["planner"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] + response.json()["updated"] == 1
    row = db.execute("SELECT name, village_code FROM staff WHERE phone = '13900000718'").fetchone()
    assert row == ("离线工作者", VILLAGE)
    broken = client.post(
        "/api/v1/staff/import",
        params={"filename": "staff.xlsx"},
        content=b"PK\x03\x04 not a workbook",
        headers=auth(tokens["planner"]),
    )
    assert broken.status_code == 422, broken.text
    assert "staff.xlsx" in broken.json()["detail"]
