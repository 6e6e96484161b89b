"""Coverage reports from hand-built tracks with known answers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import h3
import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.coverage.metrics import Window, window_note
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from gis.coverage import cell_visits
from gis.crs import haversine_m
from gis.units import china_today
from gis.visits import LayoutIndex, grid_days
from tests.api.test_coverage_update import _update
from tests.conftest import auth, run

DAY_OFFSET = 20  # days ago: nothing else in the tests patrols then
CHINA = timedelta(hours=8)


def _day() -> date:
    return (datetime.now(UTC) + CHINA).date() - timedelta(days=DAY_OFFSET)


def _t(hour: float) -> int:
    """UTC µs of a China-local hour of the test day."""
    local_midnight = datetime(*_day().timetuple()[:3], tzinfo=UTC) - CHINA
    return int((local_midnight.timestamp() + hour * 3600) * 1e6)


@pytest.fixture(scope="module")
def scene(demo: str, make_device: Any) -> dict[str, Any]:
    """Two vehicles in the first village of 西乌珠穆沁旗: one parks, drives and returns."""
    with psycopg.connect(demo, autocommit=True) as conn:
        layout = conn.execute(
            "SELECT id FROM grid_layout WHERE status = 'active' AND purpose = 'patrol'"
        ).fetchone()[0]  # type: ignore[index]
        village = conn.execute(
            "SELECT code FROM admin_area WHERE level = 'village' AND code LIKE '152526%' "
            "ORDER BY code LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        grids = conn.execute(
            "SELECT id, code, ST_AsBinary(geom) FROM grid "
            "WHERE layout_id = %s AND village_code = %s ORDER BY code",
            (layout, village),
        ).fetchall()
        cells = conn.execute(
            "SELECT h3, grid_id FROM grid_cell WHERE layout_id = %s AND grid_id = ANY(%s)",
            (layout, [g[0] for g in grids]),
        ).fetchall()
    shapes = {code: shapely.from_wkb(bytes(wkb)) for _, code, wkb in grids}
    codes = [g[1] for g in grids]
    index = LayoutIndex.build(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]))
    g1, g2 = codes[0], codes[1]
    # park on the centre of a cell of grid 1, drive to the middle of grid 2, come back later
    g1_id = grids[0][0]
    park_cell = int(np.sort(index.h3[index.grid == g1_id])[len(index.h3[index.grid == g1_id]) // 2])
    plat, plon = h3.cell_to_latlng(h3.int_to_str(park_cell))
    dest = shapes[g2].representative_point()
    one, _ = make_device(village)
    two, _ = make_device(village)
    t, lat, lon = [], [], []
    for k in range(361):  # 08:00–09:00 parked
        t.append(_t(8) + k * 10_000_000)
        lat.append(plat)
        lon.append(plon)
    dist = float(haversine_m(plon, plat, dest.x, dest.y))
    steps = int(dist / 100) + 1  # 10 m/s, a fix every 10 s
    for k in range(1, steps + 1):
        t.append(_t(9) + k * 10_000_000)
        lat.append(plat + (dest.y - plat) * k / steps)
        lon.append(plon + (dest.x - plon) * k / steps)
    for k in range(61):  # 11:30–11:40 parked again on the same spot
        t.append(_t(11.5) + k * 10_000_000)
        lat.append(plat)
        lon.append(plon)
    batch = FixBatch.from_columns(device=[one] * len(t), time_us=t, lat=lat, lon=lon)

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings())
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(t)

    run(store())
    run(_update(demo))
    return {
        "layout": layout,
        "village": village,
        "codes": codes,
        "g1": g1,
        "g2": g2,
        "one": one,
        "two": two,
        "index": index,
        "grid_ids": {g[1]: g[0] for g in grids},
        "batch": batch,
        "drive_m": dist,
    }


def _coverage(client: TestClient, token: str, **params: Any) -> Any:
    query = {"from": _day().isoformat(), "to": _day().isoformat(), **params}
    return client.get("/api/v1/coverage", params=query, headers=auth(token))


def test_grid_metrics_match_the_hand_built_track(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    body = _coverage(client, tokens["viewer"], layout=scene["layout"], level="grid").json()
    units = {u["code"]: u for u in body["units"] if u["code"].startswith(scene["village"])}
    assert sorted(units) == scene["codes"]  # all 8 grids, touched or not
    g1, g2 = units[scene["g1"]], units[scene["g2"]]
    assert float(g1["dwell_h"]) >= 70 / 60  # the hour and the ten minutes parked in grid 1
    assert g1["visits"] == 2  # morning (park + drive out) and the return at 11:30
    assert float(g1["revisit_mean_s"]) == pytest.approx(3.5 * 3600, abs=60)  # start to start
    assert g2["visits"] == 1
    untouched = [u for u in units.values() if u["fixes"] == 0]
    assert untouched, [(u["code"], u["fixes"]) for u in units.values()]
    assert all(float(u["coverage_pct"]) == 0 and u["visits"] == 0 for u in untouched)
    km = sum(float(u["patrol_km"]) for u in units.values())
    assert km == pytest.approx(scene["drive_m"] / 1000, rel=0.02)
    # the SQL agrees with the pure reference on exactly which cells were seen
    b = scene["batch"]
    visits = cell_visits(np.zeros(len(b), np.int64), b.time_us, b.lat, b.lon)
    ref = grid_days(visits, scene["index"])
    for code, gid in scene["grid_ids"].items():
        seen = sum(
            bin(x).count("1")
            for i in np.flatnonzero(ref.grid == gid)
            for x in ref.bitmaps[ref.bitmap_offsets[i] : ref.bitmap_offsets[i + 1]]
        )
        assert units[code]["seen_cells"] == seen, code


def test_village_level_adds_up_the_grids(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    grids = _coverage(client, tokens["viewer"], layout=scene["layout"], level="grid").json()[
        "units"
    ]
    mine = [u for u in grids if u["code"].startswith(scene["village"])]
    village = _coverage(client, tokens["viewer"], layout=scene["layout"], level="village").json()
    row = next(u for u in village["units"] if u["code"] == scene["village"])
    assert row["cells"] == sum(u["cells"] for u in mine)
    assert row["seen_cells"] == sum(u["seen_cells"] for u in mine)
    assert row["visits"] == 2  # one village visit in the morning, one at 11:30
    assert row["name_zh"]


def test_geojson_output(client: TestClient, tokens: dict[str, str], scene: dict[str, Any]) -> None:
    body = _coverage(
        client, tokens["viewer"], layout=scene["layout"], level="grid", format="geojson"
    )
    assert body.status_code == 200
    assert body.headers["content-type"] == "application/geo+json"
    features = body.json()["features"]
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in features[:10])


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"from": "2026-11-10", "to": "2026-11-01"}, 422, "to"),
        ({"from": "2026-01-01", "to": "2026-12-31"}, 422, "to"),
        ({"level": "province"}, 422, None),
        ({"layout": 999999}, 404, None),
    ],
)
def test_bad_windows_and_unknown_layouts(
    client: TestClient,
    tokens: dict[str, str],
    query: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    response = client.get("/api/v1/coverage", params=query, headers=auth(tokens["viewer"]))
    assert response.status_code == status, response.text
    if field:
        assert response.json()["field"] == field
    if query.get("to") == "2026-12-31":
        assert response.json()["limit_days"] == 92


def test_an_empty_window_is_zeros_with_a_note(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    long_ago = (_day() - timedelta(days=400)).isoformat()
    body = client.get(
        "/api/v1/coverage",
        params={"from": long_ago, "to": long_ago, "level": "county", "layout": scene["layout"]},
        headers=auth(tokens["viewer"]),
    ).json()
    assert body["note"].startswith("no patrol data")
    assert body["units"]
    assert all(float(u["coverage_pct"]) == 0 for u in body["units"])


def test_a_future_window_says_so_instead_of_a_silent_zero(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    today = china_today()
    ahead = (today + timedelta(days=30)).isoformat()
    body = client.get(
        "/api/v1/coverage",
        params={"from": ahead, "to": ahead, "level": "county", "layout": scene["layout"]},
        headers=auth(tokens["viewer"]),
    ).json()
    assert (
        body["note"] == f"the window starts after today ({today.isoformat()}): there is no data yet"
    )
    assert "尚无数据" in body["note_zh"]
    # the colour grid map prints it where the reader looks
    page = client.get(
        "/maps/coverage",
        params={"from": ahead, "to": ahead, "layout": scene["layout"]},
        headers=auth(tokens["viewer"]),
    )
    assert page.status_code == 200
    assert "the window starts after today" in page.text
    assert "尚无数据" in page.text


def test_window_notes_say_what_the_numbers_mean() -> None:
    today = date(2026, 12, 7)
    past = Window(date(2026, 12, 1), date(2026, 12, 7))
    assert window_note(past, 5, 0, today) is None
    running = Window(date(2026, 12, 5), date(2026, 12, 11))
    future = Window(date(2026, 12, 8), date(2026, 12, 9))
    notes = {
        "updating": window_note(past, 5, 3, today),
        "empty": window_note(past, 0, 0, today),
        "computing": window_note(past, 0, 4, today),
        "running": window_note(running, 5, 0, today),
        "future": window_note(future, 0, 0, today),
    }
    assert "still being updated" in str(notes["updating"])
    assert str(notes["empty"]).startswith("('no patrol data")
    # nothing computed yet is not "no patrol data": the days are on their way
    assert "4 device-days in this window are still being computed" in str(notes["computing"])
    assert "runs past today (2026-12-07)" in str(notes["running"])
    assert "starts after today" in str(notes["future"])
    for note in notes.values():  # English in ASCII (it travels in a header), and 中文
        assert note is not None
        assert note[0].isascii()
        assert not note[1].isascii()


def test_ranking_blind_spots_and_checkpoints(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    window = {"from": _day().isoformat(), "to": _day().isoformat()}
    ranking = client.get(
        "/api/v1/vehicles/ranking", params=window, headers=auth(tokens["viewer"])
    ).json()
    rows = {v["identifier"]: v for v in ranking["vehicles"]}
    one = rows[scene["one"]]
    assert one["km"] == pytest.approx(scene["drive_m"] / 1000, rel=0.02)
    # the vehicle without a fix is not in service: listed apart with its reason, not ranked
    assert scene["two"] not in rows
    two = next(v for v in ranking["not_ranked"] if v["identifier"] == scene["two"])
    assert two["km"] == 0
    assert two["reasons"] == ["no_fixes"]
    # the award share is of the vehicles in service, and only those with patrol work
    n = len(ranking["vehicles"])
    slots = ranking["counts"]["award_slots"]
    assert slots == int(0.6 * n + 1e-9)
    assert all(
        v["verdict"] == ("no_patrol" if v["km"] <= 1 else "award")
        for v in ranking["vehicles"]
        if v["rank"] <= slots
    )
    untouched = next(c for c in scene["codes"] if c not in (scene["g1"], scene["g2"]))
    spots = client.get(
        "/api/v1/coverage/blind-spots",
        params={"grid": untouched, "end": _day().isoformat(), "days": 1},
        headers=auth(tokens["viewer"]),
    ).json()
    cells = int((scene["index"].grid == scene["grid_ids"][untouched]).sum())
    assert spots["properties"]["blind_cells"] == cells
    assert spots["features"][0]["geometry"]["type"] == "Polygon"
    visited = client.get(
        "/api/v1/checkpoints",
        params={**window, "area": scene["village"]},
        headers=auth(tokens["viewer"]),
    ).json()
    assert len(visited["points"]) == 6
    assert all(p["days_visited"] in (0, 1) for p in visited["points"])


def test_history_under_a_draft_layout_reads_cell_visit_only(
    client: TestClient, tokens: dict[str, str], scene: dict[str, Any], db_url: str
) -> None:
    spec = {"name": "draft squares", "area": scene["village"], "method": "squares", "size_m": 2500}
    draft = client.post("/api/v1/layouts", json=spec, headers=auth(tokens["planner"])).json()["id"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE position RENAME TO position_hidden_for_test")
        try:
            body = _coverage(client, tokens["viewer"], layout=draft, level="village").json()
        finally:
            conn.execute("ALTER TABLE position_hidden_for_test RENAME TO position")
    assert body["days_built"] >= 1
    redrawn = next(u for u in body["units"] if u["code"] == scene["village"])
    patrol = _coverage(client, tokens["viewer"], layout=scene["layout"], level="village").json()
    original = next(u for u in patrol["units"] if u["code"] == scene["village"])
    # the same cells of the village were seen, whichever way it is cut
    assert redrawn["cells"] == original["cells"]
    assert redrawn["seen_cells"] == original["seen_cells"]
    assert float(redrawn["patrol_km"]) == pytest.approx(float(original["patrol_km"]), rel=1e-4)
