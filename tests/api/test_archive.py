"""Retention and archive: an old position day goes to GeoParquet and its partition is dropped,
all or nothing; the track reads the same afterwards; a re-run does nothing.

Scene: one UTC day far in the past (2020-01-03) with two patrol vehicles of a village of
二连浩特市 (152501, other tests only use it as a scope) and one device without a home village;
only that day is ever archived (the session database is shared).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api import archive
from api.auth import SYSTEM
from api.cli import app as cli
from api.coverage.update import CoverageUpdater
from api.devices import DeviceIn, create_device
from api.ingest import partitions
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import CoverageSettings, IngestSettings, Settings, archive_root
from gis.simulation import simulate_fleet
from tests.conftest import auth, run

COUNTY = "152501"  # 二连浩特市
DAY = date(2020, 1, 3)
PARTITION = "position_p20200103"
WINDOW = {"from": "2020-01-03T00:00:00+00:00", "to": "2020-01-04T00:00:00+00:00"}


async def _scene(url: str) -> list[int]:
    """Three devices with a 6-hour shift each on DAY, stored and with coverage up to date."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT code, ST_AsBinary(geom) FROM admin_area WHERE level = 'village' "
                "AND code LIKE %s ORDER BY code LIMIT 1",
                (COUNTY + "%",),
            )
        ).fetchone()
        assert row is not None
        village, area = row[0], shapely.from_wkb(bytes(row[1]))
        idents = [f"archive-{k}-{datetime.now(UTC).timestamp()}" for k in range(3)]
        for k, ident in enumerate(idents):
            home = village if k < 2 else None  # the third has no county: county=unknown
            await create_device(conn, SYSTEM, DeviceIn(identifier=ident, home_village=home))
        start = int(datetime(2020, 1, 3, 2, tzinfo=UTC).timestamp() * 1e6)  # 10:00 China
        tracks = simulate_fleet(
            [area] * 3, hours=6, interval_s=20, start_us=start, seed=7, gcj02_share=0.0
        )
        batch = FixBatch.from_columns(
            device=np.asarray(idents, dtype=object)[tracks.vehicle],
            time_us=tracks.time_us,
            lat=tracks.lat,
            lon=tracks.lon,
        )
        ingestor = Ingestor(IngestSettings(max_age_days=0))  # 2020 is not "too old" here
        await ingestor.prepare(conn, batch)
        await ingestor.store(conn, batch, protocol="test")
        await CoverageUpdater(CoverageSettings()).run(conn)
        rows = await (
            await conn.execute(
                "SELECT id FROM device WHERE identifier = ANY(%s) ORDER BY id", (idents,)
            )
        ).fetchall()
        return [r[0] for r in rows]


@pytest.fixture(scope="module")
def scene(demo: str) -> list[int]:
    return run(_scene(demo))


def _tracks(client: TestClient, token: str, devices: list[int]) -> list[tuple[str, str]]:
    out = []
    for device in devices:
        points = client.get(f"/api/v1/devices/{device}/track", params=WINDOW, headers=auth(token))
        line = client.get(
            f"/api/v1/devices/{device}/track",
            params={**WINDOW, "format": "line"},
            headers=auth(token),
        )
        assert points.status_code == line.status_code == 200, points.text
        out.append((points.text, line.text))
    return out


def _has_partition(db: psycopg.Connection[Any]) -> bool:
    return db.execute("SELECT to_regclass(%s) IS NOT NULL", (PARTITION,)).fetchone() == (True,)


def _fixes(db: psycopg.Connection[Any]) -> int:
    return db.execute(f"SELECT count(*) FROM {PARTITION}").fetchone()[0]  # type: ignore[index]


async def _archive_day(url: str, root: Path) -> archive.DayResult:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await archive.archive_day(conn, root, DAY)


def test_archive_keeps_tracks_and_coverage(
    scene: list[int],
    db: psycopg.Connection[Any],
    db_url: str,
    client: TestClient,
    settings: Settings,
    tokens: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _tracks(client, tokens["admin"], scene)
    assert all('"Point"' in points for points, _ in before)
    fixes = _fixes(db)
    assert fixes > 1000
    visits = db.execute(
        "SELECT count(*), sum(fixes) FROM cell_visit WHERE device_id = ANY(%s)", (scene,)
    ).fetchone()

    # pending coverage on the day: refused, nothing dropped
    db.execute("INSERT INTO coverage_dirty (device_id, day) VALUES (%s, %s)", (scene[0], DAY))
    with pytest.raises(archive.ArchiveError, match="coverage pending"):
        run(_archive_day(db_url, tmp_path / "archive"))
    assert _has_partition(db)
    db.execute("DELETE FROM coverage_dirty WHERE device_id = %s AND day = %s", (scene[0], DAY))

    # a failure while writing (the archive root is a file): nothing dropped, nothing left over
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the platform
        run(_archive_day(db_url, blocked))
    assert _has_partition(db)
    assert _fixes(db) == fixes

    # the command: a dry run lists the day, the run archives it, a re-run does nothing
    root = archive_root(settings)
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()
    args = ["archive", "--before", "2020-01-04", "--dir", str(root), "--no-purge"]
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2020-01-03  planned" in dry.output
    assert _has_partition(db)
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert f"2020-01-03  archived  {fixes:>12,} rows" in done.output
    assert not _has_partition(db)
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "nothing to archive" in again.output

    # GeoParquet partitioned by day and county, every fix once, points in EPSG:4326
    folder = archive.day_dir(root, DAY)
    assert sorted(p.name for p in folder.iterdir()) == [f"county={COUNTY}", "county=unknown"]
    frame = gpd.read_parquet(folder)
    assert len(frame) == fixes
    assert frame.crs is not None
    assert frame.crs.to_epsg() == 4326
    assert np.array_equal(frame.geometry.x, frame["lon"])
    assert np.array_equal(frame.geometry.y, frame["lat"])
    assert archive.archived_days(root) == [DAY]

    # tracks read the same from the archive; coverage aggregates untouched
    assert _tracks(client, tokens["admin"], scene) == before
    after = db.execute(
        "SELECT count(*), sum(fixes) FROM cell_visit WHERE device_id = ANY(%s)", (scene,)
    ).fetchone()
    assert after == visits


def test_an_empty_day_partition_is_dropped_as_empty(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A partition created ahead that never got a fix (or whose fixes were deleted) archives
    as ``empty``: no files, the partition dropped."""
    empty = date(2019, 12, 30)

    async def go() -> archive.DayResult:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await partitions.ensure(conn, [empty], await partitions.existing(conn))
            return await archive.archive_day(conn, tmp_path, empty)

    result = run(go())
    assert (result.status, result.rows, result.written) == ("empty", 0, 0)
    name = partitions.partition_name(empty)
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)
    assert not archive.day_dir(tmp_path, empty).exists()
