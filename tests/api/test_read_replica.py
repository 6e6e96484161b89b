"""``DATABASE_READ_URL``: coverage figures and tiles are read on a streaming replica (a second
cluster made from the session's with ``pg_basebackup -R``), and they see what the primary has
just built for them; a replica that lags too far hands the read back to the primary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import redraw
from api.app import create_app
from api.auth import SYSTEM
from api.db.cluster import EmbeddedCluster, free_port
from api.db.reads import Reads
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings, Settings
from tests.api.test_coverage_update import _update
from tests.conftest import auth, run
from tiles.tilemath import tile_at

DAY_OFFSET = 27  # days ago: no other test patrols then
CHINA = timedelta(hours=8)


def _day(offset: int = DAY_OFFSET) -> date:
    return (datetime.now(UTC) + CHINA).date() - timedelta(days=offset)


@pytest.fixture(scope="module")
def replica(pg: EmbeddedCluster, demo: str, workdir: Path) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(workdir / "replica", port=free_port(), dbname=pg.dbname, user=pg.user)
    cluster.start_replica_of(pg.url)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def scene(demo: str, make_device: Any) -> Iterator[dict[str, Any]]:
    """A vehicle patrolling the first village of the active patrol layout on two days; a draft
    cloned from that layout (not kept current: its grid_visit days are built when read)."""
    with psycopg.connect(demo, autocommit=True) as conn:
        active, village = conn.execute(
            "SELECT g.layout_id, g.village_code FROM grid g JOIN grid_layout l "
            "ON l.id = g.layout_id WHERE l.status = 'active' AND l.purpose = 'patrol' "
            "ORDER BY length(nbs_prefix(l.area_code)) DESC, g.code LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        lon, lat = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p "
            "FROM admin_area WHERE code = %s) x",
            (village,),
        ).fetchone()  # type: ignore[misc]
    device, _ = make_device(village)
    t, lats, lons = [], [], []
    for offset in (DAY_OFFSET, DAY_OFFSET + 1):
        start = datetime(*_day(offset).timetuple()[:3], 9, tzinfo=UTC) - CHINA  # 09:00 China
        for k in range(180):  # half an hour eastward at 10 m/s, a fix every 10 s
            t.append(int((start.timestamp() + 10 * k) * 1e6))
            lats.append(lat)
            lons.append(lon + k * 0.0013)
    batch = FixBatch.from_columns(device=[device] * len(t), time_us=t, lat=lats, lon=lons)

    async def prepare() -> int:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings())
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(t)
            return await redraw.clone(conn, SYSTEM, active, name="replica test draft")

    async def abandon(draft: int) -> None:
        async with await psycopg.AsyncConnection.connect(demo, autocommit=True) as conn:
            await redraw.abandon(conn, SYSTEM, draft)

    draft = run(prepare())
    run(_update(demo))
    yield {"draft": draft, "village": village, "lon": lon, "lat": lat}
    run(abandon(draft))


@pytest.fixture(scope="module")
def replica_app(settings: Settings, replica: EmbeddedCluster) -> Iterator[TestClient]:
    """The API (no listeners, no jobs) with ``DATABASE_READ_URL`` at the replica."""
    reading = replace(
        settings,
        db=settings.db.model_copy(update={"read_url": replica.url, "read_wait_s": 10}),
    )
    with TestClient(create_app(reading, roles=("api",))) as client:
        yield client


def _reads(client: TestClient) -> Reads:
    reads: Reads = client.app.state.reads  # type: ignore[attr-defined]
    return reads


def _coverage(client: TestClient, token: str, scene: dict[str, Any], day: date) -> Any:
    response = client.get(
        "/api/v1/coverage",
        params={"layout": scene["draft"], "from": day.isoformat(), "to": day.isoformat()},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    return response.json()


def _figures(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units without what depends on the moment of reading (hours since the last patrol)."""
    return [{k: v for k, v in u.items() if not k.endswith("_age_h")} for u in units]


def test_the_replica_is_a_hot_standby(replica: EmbeddedCluster) -> None:
    with psycopg.connect(replica.url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (x int)")


def test_coverage_is_read_on_the_replica_after_the_primary_built_it(
    replica_app: TestClient, client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    reads = _reads(replica_app)
    assert reads.replica is not None
    before = (reads.replica_reads, reads.fallbacks)
    body = _coverage(replica_app, tokens["viewer"], scene, _day())
    # the day was built on the primary by this request, and read back on the replica
    assert body["days_built"] == 1
    assert (reads.replica_reads, reads.fallbacks) == (before[0] + 1, before[1])
    mine = {u["code"]: u for u in body["units"] if u["code"].startswith(scene["village"])}
    assert sum(u["fixes"] for u in mine.values()) > 0
    # the same figures as the primary gives (now that the day is built, it builds nothing)
    same = _coverage(client, tokens["viewer"], scene, _day())
    assert same["days_built"] == 0
    assert _figures(same["units"]) == _figures(body["units"])


def test_tiles_are_drawn_on_the_replica(
    replica_app: TestClient, client: TestClient, tokens: dict[str, str], scene: dict[str, Any]
) -> None:
    tile = tile_at(scene["lon"], scene["lat"], 12)
    path = (
        f"/tiles/grids/12/{tile.x}/{tile.y}.pbf?layout={scene['draft']}"
        f"&from={_day().isoformat()}&to={_day().isoformat()}"
    )
    reads = _reads(replica_app)
    before = reads.replica_reads
    on_replica = replica_app.get(path, headers=auth(tokens["viewer"]))
    assert on_replica.status_code == 200, on_replica.text
    assert reads.replica_reads == before + 1
    on_primary = client.get(path, headers=auth(tokens["viewer"]))
    assert on_primary.status_code == 200
    assert on_replica.content == on_primary.content
    assert len(on_replica.content) > 0


def test_a_replica_that_lags_too_far_hands_the_read_to_the_primary(
    replica_app: TestClient,
    replica: EmbeddedCluster,
    tokens: dict[str, str],
    scene: dict[str, Any],
) -> None:
    reads = _reads(replica_app)
    wait_s = reads.wait_s
    with psycopg.connect(replica.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            reads.wait_s = 0.5
            before = (reads.replica_reads, reads.fallbacks)
            body = _coverage(replica_app, tokens["viewer"], scene, _day(DAY_OFFSET + 1))
            assert body["days_built"] == 1
            assert (reads.replica_reads, reads.fallbacks) == (before[0], before[1] + 1)
            # read on the primary: the day the paused replica has not got is there all the same
            mine = [u for u in body["units"] if u["code"].startswith(scene["village"])]
            assert sum(u["fixes"] for u in mine) > 0
        finally:
            reads.wait_s = wait_s
            conn.execute("SELECT pg_wal_replay_resume()")
