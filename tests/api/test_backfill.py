"""Coverage backfill: the Dask engine, reading GeoParquet (an archived day plus a snapshot of a
live one), writes exactly the ``cell_visit`` rows the in-database engine wrote from ``position``.

Scene: three vehicles of a village of 二连浩特市 (152501) on a night shift far in the past
(2020-02-10 22:00 → 02-11 10:00 China time), crossing both local and UTC midnight; only those
days are recomputed or archived (the session database is shared).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dask_geopandas
import numpy as np
import psycopg
import pytest
import shapely
from dask.distributed import Client, LocalCluster

from api import archive
from api.auth import SYSTEM
from api.coverage import backfill
from api.devices import DeviceIn, create_device
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import CoverageSettings, IngestSettings
from gis.simulation import simulate_fleet
from tests.conftest import run

COUNTY = "152501"  # 二连浩特市
FIRST, LAST = date(2020, 2, 10), date(2020, 2, 11)
SETTINGS = CoverageSettings()
ROWS = """
    SELECT device_id, day, h3, first_seen, last_seen, fixes, dwell_s, metres, sight_only,
           pass_start, pass_end
      FROM cell_visit WHERE device_id = ANY(%s) ORDER BY device_id, day, h3
"""


async def _scene(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT code, ST_AsBinary(geom) FROM admin_area WHERE level = 'village' "
                "AND code LIKE %s ORDER BY code DESC LIMIT 1",
                (COUNTY + "%",),
            )
        ).fetchone()
        assert row is not None
        village, area = row[0], shapely.from_wkb(bytes(row[1]))
        idents = [f"backfill-{k}-{datetime.now(UTC).timestamp()}" for k in range(3)]
        for ident in idents:
            await create_device(conn, SYSTEM, DeviceIn(identifier=ident, home_village=village))
        start = int(datetime(2020, 2, 10, 14, tzinfo=UTC).timestamp() * 1e6)  # 22:00 China
        tracks = simulate_fleet(
            [area] * 3, hours=12, interval_s=15, start_us=start, seed=23, gcj02_share=0.0
        )
        batch = FixBatch.from_columns(
            device=np.asarray(idents, dtype=object)[tracks.vehicle],
            time_us=tracks.time_us,
            lat=tracks.lat,
            lon=tracks.lon,
        )
        ingestor = Ingestor(IngestSettings(max_age_days=0))
        await ingestor.prepare(conn, batch)
        await ingestor.store(conn, batch, protocol="test")
        rows = await (
            await conn.execute(
                "SELECT id FROM device WHERE identifier = ANY(%s) ORDER BY id", (idents,)
            )
        ).fetchall()
        return [r[0] for r in rows]


@pytest.fixture
def client() -> Iterator[Client]:
    """Two in-process Dask workers, closed at the end."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


async def _db_engine(url: str, root: Path | None = None) -> backfill.BackfillReport:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await backfill.backfill_db(conn, SETTINGS, FIRST, LAST, archive_root=root)


async def _archive_and_snapshot(url: str, root: Path, snapshot: Path) -> list[date]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await archive.archive_day(conn, root, FIRST)
        return await backfill.export_live(conn, FIRST, LAST, snapshot)


async def _dask_engine(url: str, dask_client: Client, roots: list[Path]) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await backfill.backfill_dask(conn, dask_client, SETTINGS, FIRST, LAST, roots=roots)


def test_dask_backfill_equals_the_database_engine(
    demo: str, db: psycopg.Connection[Any], client: Client, tmp_path: Path
) -> None:
    devices = run(_scene(demo))
    report = run(_db_engine(demo))
    assert report.tasks >= 6  # three devices on two local days
    expected = db.execute(ROWS, (devices,)).fetchall()
    assert {r[1] for r in expected} == {FIRST, LAST}
    assert len(expected) > 300

    root, snapshot = tmp_path / "archive", tmp_path / "snapshot"
    assert run(_archive_and_snapshot(demo, root, snapshot)) == [LAST]  # 02-10 is archived now
    with pytest.raises(ValueError, match="archived"):
        run(_db_engine(demo, root))  # the database no longer holds 02-10

    frame = dask_geopandas.read_parquet(str(archive.day_dir(snapshot, LAST))).compute()
    assert frame.crs.to_epsg() == 4326
    assert len(frame) > 0

    db.execute("DELETE FROM cell_visit WHERE device_id = ANY(%s)", (devices,))
    got = run(_dask_engine(demo, client, [root, snapshot]))
    assert got.cell_rows == len(expected)
    assert got.tasks >= 2
    assert db.execute(ROWS, (devices,)).fetchall() == expected
    totals = db.execute(
        "SELECT count(*), sum(cells) FROM device_day WHERE device_id = ANY(%s)", (devices,)
    ).fetchone()
    assert totals == (6, len(expected))
