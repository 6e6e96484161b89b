"""cell_visit upkeep: equal to the engine on the same fixes, idempotent, independent of how
and in which order fixes arrived, and consistent with the per-layout grid_visit rows."""

from __future__ import annotations

import time
from typing import Any

import h3
import numpy as np
import psycopg
import pytest
import shapely

from api.auth import SYSTEM
from api.coverage.rows import read_cell_visits
from api.coverage.update import CoverageUpdater
from api.devices import DeviceIn, create_device
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import CoverageSettings, IngestSettings
from gis.coverage import cell_visits, local_day
from gis.gridcells import cells_in_boundary
from gis.simulation import simulate_fleet
from tests.conftest import run

VILLAGE = "152502100200"


async def _setup(url: str, n: int) -> tuple[list[str], Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT ST_AsBinary(geom) FROM admin_area WHERE code = %s", (VILLAGE,)
            )
        ).fetchone()
        assert row is not None
        idents = []
        for _ in range(n):
            ident = f"cov-{time.time_ns()}"
            await create_device(conn, SYSTEM, DeviceIn(identifier=ident, home_village=VILLAGE))
            idents.append(ident)
    return idents, shapely.from_wkb(bytes(row[0]))


def _tracks(area: Any, n: int, seed: int) -> Any:
    """A shift across China midnight a few days ago, without GPS spikes: whether a spike is
    refused depends on what arrived before it, and here the stored fixes must be the same."""
    day = int(time.time() // 86400) - 3
    start = day * 86_400_000_000 + 12 * 3_600_000_000  # 20:00 China time
    return simulate_fleet(
        [area] * n,
        hours=6,
        interval_s=10,
        start_us=start,
        seed=seed,
        gcj02_share=0.0,
        spike_rate=0.0,
    )


async def _store(url: str, batch: FixBatch) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        ingestor = Ingestor(IngestSettings())
        await ingestor.prepare(conn, batch)
        await ingestor.store(conn, batch, protocol="test")


UPDATER = CoverageUpdater(CoverageSettings())  # long-lived, as in the server: caches layouts


async def _update(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await UPDATER.run(conn)


def _settle(url: str, db: psycopg.Connection[Any], ids: list[int]) -> None:
    """Update until none of these devices' days is marked dirty. The session's app runs an
    updater of its own (at start and then periodically) which may hold some of these marks
    for a moment: ``run`` leaves marks another worker holds, so wait for that worker."""
    deadline = time.monotonic() + 300.0  # generous: a step takes seconds
    while True:
        run(_update(url))
        left = db.execute(
            "SELECT count(*) FROM coverage_dirty WHERE device_id = ANY(%s)", (ids,)
        ).fetchone()
        if left == (0,):
            return
        assert time.monotonic() < deadline, f"{left} marks of {ids} still dirty"
        time.sleep(0.2)


async def _rows(url: str, devices: list[int], days: list[int]) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await read_cell_visits(conn, days=days, res=9, visit_gap_s=1800.0, devices=devices)


def _ids(db: psycopg.Connection[Any], idents: list[str]) -> list[int]:
    rows = db.execute(
        "SELECT id FROM device WHERE identifier = ANY(%s) ORDER BY id", (idents,)
    ).fetchall()
    return [r[0] for r in rows]


def _fleet(url: str, n: int, seed: int) -> tuple[list[str], Any]:
    """``n`` new devices of the village and their shift's tracks."""
    idents, area = run(_setup(url, n))
    return idents, _tracks(area, n, seed=seed)


def _remark(db: psycopg.Connection[Any], ids: list[int]) -> None:
    """Mark every day these devices have coverage for dirty again (a recompute from scratch)."""
    db.execute(
        "INSERT INTO coverage_dirty (device_id, day) SELECT device_id, day FROM device_day "
        "WHERE device_id = ANY(%s)",
        (ids,),
    )


def _batch(idents: list[str], tracks: Any, rows: np.ndarray | None = None) -> FixBatch:
    sel = np.arange(len(tracks)) if rows is None else rows
    return FixBatch.from_columns(
        device=np.asarray(idents, dtype=object)[tracks.vehicle[sel]],
        time_us=tracks.time_us[sel],
        lat=tracks.lat[sel],
        lon=tracks.lon[sel],
    )


@pytest.mark.usefixtures("demo")
def test_update_equals_the_engine_and_is_idempotent(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    idents, area = run(_setup(db_url, 3))
    tracks = _tracks(area, 3, seed=11)
    run(_store(db_url, _batch(idents, tracks)))
    # and after the shift the first vehicle stands for ten minutes just over the village's
    # boundary, in a cell whose centre lies in the neighbour: that dwell is the neighbour's
    run(_store(db_url, _over_the_boundary(idents[0], area, int(tracks.time_us.max()))))
    ids = _ids(db, idents)
    # (only this test's marks: an app stopped mid-step by an earlier test leaves claims that
    # are retaken when stale)
    marks = "SELECT count(*) FROM coverage_dirty WHERE device_id = ANY(%s)"
    assert db.execute(marks, (ids,)).fetchone()[0] >= 3  # type: ignore[index]
    _settle(db_url, db, ids)
    assert db.execute(marks, (ids,)).fetchone() == (0,)
    stored = db.execute(
        "SELECT p.device_id, (extract(epoch FROM p.fix_time) * 1e6)::bigint, p.lat, p.lon "
        "FROM position p WHERE p.device_id = ANY(%s)",
        (ids,),
    ).fetchall()
    dev, t, lat, lon = (np.array(c) for c in zip(*stored, strict=True))
    expected = cell_visits(dev.astype(np.int64), t.astype(np.int64), lat, lon)
    days = sorted({int(d) for d in local_day(t.astype(np.int64))})
    assert len(days) == 2  # the shift crosses local midnight
    got = run(_rows(db_url, ids, days))
    assert len(got) == len(expected) > 100
    assert np.array_equal(got.cell, expected.cell)
    assert np.array_equal(got.device, expected.device)
    assert np.array_equal(got.fixes, expected.fixes)
    assert np.allclose(got.dwell_s, expected.dwell_s, rtol=1e-6)  # stored as real
    assert np.array_equal(got.pass_start, expected.pass_start)
    # again, from scratch: nothing changes
    _remark(db, ids)
    _settle(db_url, db, ids)
    again = run(_rows(db_url, ids, days))
    assert np.array_equal(again.cell, got.cell)
    assert np.array_equal(again.pass_end, got.pass_end)
    _check_grid_copy(db, ids, area, got)


def _over_the_boundary(ident: str, area: Any, after_us: int) -> FixBatch:
    """Ten minutes of fixes, an hour after ``after_us``, at a point ≈ 300 m outside ``area``
    whose fine cell's centre lies outside it too."""
    inside = set(cells_in_boundary(area, 9).tolist())
    centre = area.centroid
    ring = max(getattr(area, "geoms", [area]), key=lambda g: g.area).exterior
    for x, y in ring.coords:
        dx, dy = x - centre.x, y - centre.y
        norm = (dx * dx + dy * dy) ** 0.5
        lon, lat = x + 0.004 * dx / norm, y + 0.003 * dy / norm  # ≈ 300 m further out
        cell = h3.str_to_int(h3.latlng_to_cell(lat, lon, 9))
        if not area.contains(shapely.Point(lon, lat)) and cell not in inside:
            break
    else:
        raise AssertionError("no point just outside the village")
    start = after_us + 3_600_000_000
    n = 61
    return FixBatch.from_columns(
        device=[ident] * n,
        time_us=[start + k * 10_000_000 for k in range(n)],
        lat=[lat] * n,
        lon=[lon] * n,
    )


def _check_grid_copy(db: psycopg.Connection[Any], ids: list[int], area: Any, got: Any) -> None:
    """The per-layout copy adds up, in every active layout (whichever ones the session's
    earlier tests left active): each (grid, device, day) row holds the fixes and dwell of the
    layout's fine cells in that grid. And in each layout that holds the village, its grids hold
    the dwell of the visited cells whose centre lies in the village — by the layouts' rule, H3
    centre containment (``cells_in_boundary``) — and nothing else. Not the dwell of every grid
    the vehicles touched: a vehicle of the village may stand or drive in a cell whose centre
    lies in the neighbouring village (the test makes one stand there: ``_over_the_boundary``);
    that dwell belongs to the neighbour's grid."""
    layouts = db.execute(
        "SELECT id FROM grid_layout WHERE status = 'active' ORDER BY id"
    ).fetchall()
    for (layout_id,) in layouts:
        rows = db.execute(
            "SELECT grid_id, device_id, day, fixes, dwell_s FROM grid_visit "
            "WHERE layout_id = %s AND device_id = ANY(%s) ORDER BY 1, 2, 3",
            (layout_id, ids),
        ).fetchall()
        cells = db.execute(
            "SELECT c.grid_id, v.device_id, v.day, sum(v.fixes)::int, sum(v.dwell_s::float8) "
            "FROM cell_visit v JOIN grid_cell c ON c.layout_id = %s AND c.h3 = v.h3 "
            "WHERE v.device_id = ANY(%s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (layout_id, ids),
        ).fetchall()
        assert [r[:4] for r in rows] == [r[:4] for r in cells], f"layout {layout_id}"
        assert [r[4] for r in rows] == pytest.approx([r[4] for r in cells], rel=1e-5)
    # the active layouts that hold the village at the engine's resolution: at most one per
    # purpose (active layouts of a purpose never overlap); the demo loads two
    holding = db.execute(
        "SELECT DISTINCT l.id, l.purpose FROM grid_layout l JOIN grid g ON g.layout_id = l.id "
        "WHERE l.status = 'active' AND l.resolution = 9 AND g.village_code = %s ORDER BY 1",
        (VILLAGE,),
    ).fetchall()
    purposes = [purpose for _, purpose in holding]
    assert len(purposes) == len(set(purposes)) >= 1
    village_cells = cells_in_boundary(area, 9)
    inside = np.isin(got.cell, village_cells)
    assert 100 < inside.sum() < len(got)  # the fleet also stood in a neighbour's cell
    for layout_id, _ in holding:
        members = db.execute(
            "SELECT c.h3 FROM grid_cell c JOIN grid g ON g.id = c.grid_id "
            "WHERE c.layout_id = %s AND g.village_code = %s ORDER BY 1",
            (layout_id, VILLAGE),
        ).fetchall()
        assert np.array_equal(np.array([m[0] for m in members], dtype=np.int64), village_cells)
        per_grid = db.execute(
            "SELECT sum(gv.dwell_s::float8) FROM grid_visit gv JOIN grid g ON g.id = gv.grid_id "
            "WHERE gv.layout_id = %s AND g.village_code = %s AND gv.device_id = ANY(%s)",
            (layout_id, VILLAGE, ids),
        ).fetchone()
        assert per_grid is not None
        assert per_grid[0] == pytest.approx(float(got.dwell_s[inside].sum()), rel=1e-5)


@pytest.mark.usefixtures("demo")
def test_chunked_pipelined_update_equals_one_chunk(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A step's devices go through the engine in pipelined chunks: one device per chunk must
    give exactly the rows of one chunk for all (cell visits, device totals, grid rows)."""
    idents, tracks = _fleet(db_url, 5, seed=17)
    run(_store(db_url, _batch(idents, tracks)))
    ids = _ids(db, idents)
    _settle(db_url, db, ids)

    def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
        return (
            db.execute(
                "SELECT device_id, day, h3, fixes, dwell_s, metres, pass_start, pass_end "
                "FROM cell_visit WHERE device_id = ANY(%s) ORDER BY 1, 2, 3",
                (ids,),
            ).fetchall(),
            db.execute(
                "SELECT device_id, day, fixes, dwell_s, metres, cells, first_seen, last_seen "
                "FROM device_day WHERE device_id = ANY(%s) ORDER BY 1, 2",
                (ids,),
            ).fetchall(),
            db.execute(
                "SELECT layout_id, day, grid_id, device_id, fixes, dwell_s, seen, visit_start "
                "FROM grid_visit WHERE device_id = ANY(%s) ORDER BY 1, 2, 3, 4",
                (ids,),
            ).fetchall(),
        )

    whole = snapshot()
    assert all(len(part) > 0 for part in whole)
    _remark(db, ids)

    async def chunked() -> None:
        updater = CoverageUpdater(CoverageSettings(chunk_device_days=1))
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            report = await updater.run(conn)
        assert report.device_days >= len(ids)

    run(chunked())
    assert snapshot() == whole


@pytest.mark.usefixtures("demo")
def test_small_shuffled_batches_give_the_same_visits(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    tracks = None
    results = []
    for arrival in ("one batch", "many shuffled batches"):
        idents, area = run(_setup(db_url, 2))
        tracks = tracks if tracks is not None else _tracks(area, 2, seed=23)
        if arrival == "one batch":
            run(_store(db_url, _batch(idents, tracks)))
        else:
            order = np.random.default_rng(5).permutation(len(tracks))
            for chunk in np.array_split(order, 37):
                run(_store(db_url, _batch(idents, tracks, chunk)))
                if chunk[0] % 3 == 0:
                    run(_update(db_url))  # some updates happen in between
        ids = _ids(db, idents)
        _settle(db_url, db, ids)
        days = sorted({int(d) for d in local_day(tracks.time_us)})
        got = run(_rows(db_url, ids, days))
        remap = {d: k for k, d in enumerate(ids)}
        results.append((got, np.array([remap[int(d)] for d in got.device])))
    (a, da), (b, db_) = results
    order_a = np.lexsort((a.day, da, a.cell))
    order_b = np.lexsort((b.day, db_, b.cell))
    assert np.array_equal(a.cell[order_a], b.cell[order_b])
    assert np.array_equal(a.fixes[order_a], b.fixes[order_b])
    assert np.allclose(a.dwell_s[order_a], b.dwell_s[order_b])
    assert np.allclose(a.metres[order_a], b.metres[order_b])
