"""History survives redraws: coverage of a past window under a draft, the active and a retired
layout is built from ``cell_visit`` alone (run as a database role that may not read
``position``), and the same patrols add up to the same seen cells of a village under each.

Scene: three simulated vehicles patrolled a village of 苏尼特右旗 (152524, where no other test
drives) six days ago, ingested through the real path and turned into ``cell_visit`` by the
updater. Then the township is cut (layout 1), redrawn by a split (layout 2 — layout 1 retires)
and a merge is drafted (layout 3).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import make_conninfo
from shapely.geometry import LineString, mapping, shape

from api.auth import SYSTEM
from api.coverage import metrics
from api.coverage.update import CoverageUpdater
from api.devices import DeviceIn, create_device
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.scope import Scope
from api.settings import CoverageSettings, IngestSettings
from gis.coverage import local_day
from gis.redraw import shared_edge
from gis.simulation import simulate_fleet
from tests.api.layout_helpers import grids_of, make_active_layout, small_township, staff_every_grid
from tests.conftest import auth, run

COUNTY = "152524"  # 苏尼特右旗
VEHICLES = 3
DAY0 = date(1970, 1, 1)


@dataclass(frozen=True)
class History:
    village: str
    devices: list[int]
    window: metrics.Window
    layouts: dict[str, int]  # retired, active, draft
    restricted_url: str


async def _drive(url: str, village: str) -> tuple[list[int], list[int]]:
    """Fixes of a 4-hour shift six days ago through the ingest path, then the updater."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT ST_AsBinary(geom) FROM admin_area WHERE code = %s", (village,)
            )
        ).fetchone()
        assert row is not None
        area = shapely.from_wkb(bytes(row[0]))
        idents = [f"hist-{k}-{time.time_ns()}" for k in range(VEHICLES)]
        for ident in idents:
            await create_device(conn, SYSTEM, DeviceIn(identifier=ident, home_village=village))
        day = int(time.time() // 86400) - 6
        tracks = simulate_fleet(
            [area] * VEHICLES,
            hours=4,
            interval_s=10,
            start_us=day * 86_400_000_000 + 2 * 3_600_000_000,  # 10:00 China time
            seed=524,
            gcj02_share=0.0,
            spike_rate=0.0,
        )
        batch = FixBatch.from_columns(
            device=np.asarray(idents, dtype=object)[tracks.vehicle],
            time_us=tracks.time_us,
            lat=tracks.lat,
            lon=tracks.lon,
        )
        ingestor = Ingestor(IngestSettings())
        await ingestor.prepare(conn, batch)
        await ingestor.store(conn, batch, protocol="test")
        await CoverageUpdater(CoverageSettings()).run(conn)
        ids = await (
            await conn.execute(
                "SELECT id FROM device WHERE identifier = ANY(%s) ORDER BY id", (idents,)
            )
        ).fetchall()
    days = sorted({int(d) for d in local_day(tracks.time_us.astype(np.int64))})
    return [int(r[0]) for r in ids], days


def _line_across(geom: Any) -> dict[str, Any]:
    c = geom.centroid
    _, miny, _, maxy = geom.bounds
    return mapping(LineString([(c.x, miny - 0.01), (c.x + 1e-4, maxy + 0.01)]))


def _redraw(client: TestClient, token: str, township: str, village: str) -> dict[str, int]:
    """Layout 1 (retired), its split successor 2 (active), a merge drafted on 2 (3)."""
    planner = auth(token)
    first = make_active_layout(client, token, township, name="历史 history 1")
    second = client.post(
        f"/api/v1/layouts/{first}/clone", json={"name": "历史 history 2"}, headers=planner
    ).json()["id"]
    target = next(
        g for g in grids_of(client, token, second) if g["properties"]["village_code"] == village
    )
    cut = client.post(
        f"/api/v1/layouts/{second}/edits/split",
        json={
            "version": 1,
            "code": target["properties"]["code"],
            "line": _line_across(shape(target["geometry"])),
        },
        headers=planner,
    )
    assert cut.status_code == 200, cut.text
    staff_every_grid(client, token, second)
    on = client.post(f"/api/v1/layouts/{second}/activate", json={}, headers=planner)
    assert on.status_code == 200, on.text
    draft = client.post(
        f"/api/v1/layouts/{second}/clone", json={"name": "历史 history 3"}, headers=planner
    ).json()["id"]
    mine = [g for g in grids_of(client, token, draft) if g["properties"]["village_code"] == village]
    a, b = next(
        (x, y)
        for i, x in enumerate(mine)
        for y in mine[i + 1 :]
        if shared_edge(shape(x["geometry"]), shape(y["geometry"])) > 1e-4
    )
    merged = client.post(
        f"/api/v1/layouts/{draft}/edits/merge",
        json={"version": 1, "codes": [a["properties"]["code"], b["properties"]["code"]]},
        headers=planner,
    )
    assert merged.status_code == 200, merged.text
    return {"retired": first, "active": second, "draft": draft}


def _restricted_role(db: psycopg.Connection[Any], url: str) -> tuple[str, str]:
    """A login role that reads everything but ``position`` (and none of its partitions), and
    may write only the materialised coverage."""
    role = f"gp_history_{os.getpid()}"
    password = f"pw-{time.time_ns()}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
    db.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
    positions = [
        r[0]
        for r in db.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('position')"
        ).fetchall()
    ]
    for table in positions:
        db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.SQL(table), ident))
    db.execute(
        sql.SQL("GRANT INSERT, UPDATE, DELETE ON grid_visit, grid_visit_day TO {}").format(ident)
    )
    return role, make_conninfo(url, user=role, password=password)


@pytest.fixture(scope="module")
def history(demo: str, client: TestClient, tokens: dict[str, str]) -> Iterator[History]:
    township = small_township(demo, COUNTY)
    with psycopg.connect(demo) as conn:
        village = conn.execute(
            "SELECT min(code) FROM admin_area WHERE level = 'village' AND parent_code = %s",
            (township,),
        ).fetchone()[0]  # type: ignore[index]
    devices, days = run(_drive(demo, village))
    layouts = _redraw(client, tokens["planner"], township, village)
    window = metrics.Window.check(
        DAY0 + timedelta(days=days[0]), DAY0 + timedelta(days=days[-1]), max_days=92
    )
    with psycopg.connect(demo, autocommit=True) as db:
        role, url = _restricted_role(db, demo)
        try:
            yield History(village, devices, window, layouts, url)
        finally:
            ident = sql.Identifier(role)
            db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            db.execute(sql.SQL("DROP ROLE {}").format(ident))


async def _metrics(url: str, layout: int, window: metrics.Window, level: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        updater = CoverageUpdater(CoverageSettings())
        return await metrics.unit_metrics(
            conn, updater, Scope.everything(), layout, window, level=level
        )


def _village_row(body: dict[str, Any], village: str) -> dict[str, Any]:
    return next(u for u in body["units"] if u["code"] == village)


def test_the_restricted_role_cannot_read_positions(history: History) -> None:
    with psycopg.connect(history.restricted_url) as conn:
        for table in ("position", "position_default"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM cell_visit").fetchone()[0] > 0  # type: ignore[index]


def test_past_coverage_under_every_layout_comes_from_cell_visit_alone(
    history: History, db: psycopg.Connection[Any]
) -> None:
    ids = list(history.layouts.values())
    statuses = dict(
        db.execute("SELECT id, status FROM grid_layout WHERE id = ANY(%s)", (ids,)).fetchall()
    )
    assert statuses == {layout: name for name, layout in history.layouts.items()}
    # forget every materialised day of these layouts: the report must rebuild them
    db.execute("DELETE FROM grid_visit WHERE layout_id = ANY(%s)", (ids,))
    db.execute("DELETE FROM grid_visit_day WHERE layout_id = ANY(%s)", (ids,))
    for name, layout in history.layouts.items():
        body = run(_metrics(history.restricted_url, layout, history.window, "village"))
        assert body["days_built"] >= 1, name  # built now, by the role that cannot see fixes
        row = _village_row(body, history.village)
        assert row["seen_cells"] > 0, (name, row)
        assert row["vehicles"] >= VEHICLES, (name, row)
    built = db.execute(
        "SELECT count(DISTINCT layout_id) FROM grid_visit WHERE layout_id = ANY(%s) "
        "AND device_id = ANY(%s)",
        (ids, history.devices),
    ).fetchone()
    assert built == (3,)


def test_old_and_new_layouts_see_the_same_cells_of_the_village(
    history: History, db: psycopg.Connection[Any]
) -> None:
    # the seen cells straight from cell_visit: the village's fine cells any vehicle passed
    (expected,) = db.execute(
        "SELECT count(DISTINCT c.h3) FROM cell_visit c "
        "JOIN grid_cell gc ON gc.h3 = c.h3 AND gc.layout_id = %(l)s "
        "JOIN grid g ON g.id = gc.grid_id AND g.village_code = %(v)s "
        "WHERE c.day BETWEEN %(a)s AND %(b)s",
        {
            "l": history.layouts["active"],
            "v": history.village,
            "a": history.window.first,
            "b": history.window.last,
        },
    ).fetchone() or (0,)
    assert expected > 0
    totals = {}
    for name, layout in history.layouts.items():
        village = _village_row(
            run(_metrics(history.restricted_url, layout, history.window, "village")),
            history.village,
        )
        grids = [
            u
            for u in run(_metrics(history.restricted_url, layout, history.window, "grid"))["units"]
            if u["code"].startswith(history.village)
        ]
        assert sum(g["seen_cells"] for g in grids) == village["seen_cells"], name
        assert sum(g["cells"] for g in grids) == village["cells"], name
        totals[name] = village
    counts = {
        name: len(grids_of_layout(db, layout, history.village))
        for name, layout in history.layouts.items()
    }
    assert counts["active"] == counts["retired"] + 1 == counts["draft"] + 1  # split, then merge
    assert {t["seen_cells"] for t in totals.values()} == {expected}
    assert len({t["cells"] for t in totals.values()}) == 1  # the village's fine cells
    dwell = [t["dwell_h"] for t in totals.values()]
    km = [t["patrol_km"] for t in totals.values()]
    assert max(dwell) - min(dwell) <= 0.002  # sums of the same cells (rounded to 3 decimals)
    assert max(km) - min(km) <= 0.002


def grids_of_layout(db: psycopg.Connection[Any], layout: int, village: str) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT code FROM grid WHERE layout_id = %s AND village_code = %s ORDER BY code",
            (layout, village),
        ).fetchall()
    ]
