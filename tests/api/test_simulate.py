"""End to end: a simulated fleet through the OsmAnd server; every fix it sent is either stored
or quarantined, and GCJ-02 terminals land where they really were."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import LineString

from api import simulate as sim
from api.ingest.fixes import FixBatch
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from gis.crs import wgs84_to_gcj02
from tests.api.test_ingest_store import _device
from tests.conftest import run


async def _fleet(url: str, vehicles: int, hours: float) -> tuple[sim.Fleet, Any, dict[str, str]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        fleet = await sim.load_fleet(conn, vehicles, area_prefix="152502")
        tracks = sim.fleet_tracks(
            fleet, hours=hours, interval_s=10, end_us=int((time.time() - 60) * 1e6), seed=4242
        )
        keys = await sim.register_fleet(conn, fleet, tracks.gcj02)
    return fleet, tracks, keys


@pytest.mark.usefixtures("demo")
def test_fifty_vehicles_for_an_hour_through_osmand(
    client: TestClient, db_url: str, db: psycopg.Connection[Any]
) -> None:
    fleet, tracks, keys = run(_fleet(db_url, 50, 1.0))
    port = client.app.state.osmand.port  # type: ignore[attr-defined]

    async def send() -> sim.SendReport:
        return await sim.send_osmand(
            tracks, fleet.identifiers, host="127.0.0.1", port=port, keys=keys
        )

    report = run(send())
    assert report.sent == len(tracks) > 10_000
    assert report.answers["gave up"] == 0
    stored = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = ANY(%s)",
        (fleet.identifiers,),
    ).fetchone()
    quarantined = db.execute(
        "SELECT reason, count(*) FROM position_rejected WHERE identifier = ANY(%s) GROUP BY reason",
        (fleet.identifiers,),
    ).fetchall()
    assert stored is not None
    assert stored[0] + sum(n for _, n in quarantined) == report.sent
    assert (
        dict(quarantined).get("implausible_jump", 0) >= tracks.spike.sum() * 0.9
    )  # the GPS spikes
    # GCJ-02 terminals were converted: stored fixes sit on the true track, not 600 m off
    gcj_vehicles = np.flatnonzero(tracks.gcj02)
    assert len(gcj_vehicles) > 0
    ident = fleet.identifiers[int(gcj_vehicles[0])]
    rows = np.array(
        db.execute(
            "SELECT p.lon, p.lat FROM position p JOIN device d ON d.id = p.device_id "
            "WHERE d.identifier = %s ORDER BY p.fix_time LIMIT 50",
            (ident,),
        ).fetchall()
    )
    sel = (tracks.vehicle == gcj_vehicles[0]) & ~tracks.spike
    truth = np.column_stack([tracks.true_lon[sel], tracks.true_lat[sel]])[:50]
    assert np.allclose(rows, truth, atol=1e-6)


@pytest.mark.usefixtures("demo")
def test_a_gcj02_track_lands_on_its_road(db_url: str, db: psycopg.Connection[Any]) -> None:
    """An AMap-based terminal driving along a road: stored on the road, not ≈ 600 m beside it."""
    # WGS-84, densified so its geodesic and lon/lat shapes agree to millimetres
    corners = [(116.02, 43.92), (116.10, 43.95), (116.16, 43.93)]
    road = shapely.segmentize(LineString(corners), 0.0005)
    shapely.prepare(road)
    along = np.linspace(0, road.length, 120)
    points = shapely.line_interpolate_point(road, along)
    lon, lat = shapely.get_x(points), shapely.get_y(points)
    glon, glat = wgs84_to_gcj02(lon, lat)
    identifier = run(_device(db_url, crs="gcj02"))
    now = int((time.time() - 3600) * 1e6)
    batch = FixBatch.from_columns(
        device=[identifier] * len(lon),
        time_us=now + np.arange(len(lon)) * 10_000_000,
        lat=glat,
        lon=glon,
    )

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            ingestor = Ingestor(IngestSettings())
            await ingestor.prepare(conn, batch)
            assert (await ingestor.store(conn, batch, protocol="test")).stored == len(lon)

    run(store())
    off_road_raw = db.execute(
        "SELECT max(ST_Distance(ST_SetSRID(ST_MakePoint(x, y), 4326)::geography, "
        "ST_GeomFromText(%s, 4326)::geography)) FROM unnest(%s::float8[], %s::float8[]) AS u(x, y)",
        (road.wkt, glon.tolist(), glat.tolist()),
    ).fetchone()
    off_road_stored = db.execute(
        "SELECT max(ST_Distance(p.geom::geography, ST_GeomFromText(%s, 4326)::geography)) "
        "FROM position p JOIN device d ON d.id = p.device_id WHERE d.identifier = %s",
        (road.wkt, identifier),
    ).fetchone()
    assert off_road_raw is not None
    assert off_road_raw[0] > 250  # read as WGS-84 the track runs beside the road
    assert off_road_stored is not None
    assert off_road_stored[0] < 0.01  # converted: on it, to the centimetre


@pytest.mark.usefixtures("demo")
def test_cli_simulate_batch_and_replay_the_bus_file(
    db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "simulate",
            "--vehicles",
            "4",
            "--hours",
            "0.5",
            "--protocol",
            "batch",
            "--area",
            "152522",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "stored:" in result.output
    bus = "data/tracks/capmetro_austin_bus_positions_20150308.csv"
    result = runner.invoke(
        cli,
        ["replay", bus, "--protocol", "batch", "--speed-unit", "mph", "--move-to", "43.95,116.05"],
    )
    assert result.exit_code == 0, result.output
    assert "12354 fixes of 140 devices" in result.output
    counts = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier LIKE 'replay-%'"
    ).fetchone()
    rejected = db.execute(
        "SELECT count(*) FROM position_rejected WHERE identifier LIKE 'replay-%'"
    ).fetchone()
    assert counts is not None
    assert rejected is not None
    duplicates = 12354 - counts[0] - rejected[0]
    assert duplicates >= 6  # the file's 6 exact duplicate rows are stored once
    assert counts[0] > 12_000


def test_paced_vehicles_report_at_their_own_phase() -> None:
    """Terminals boot at different moments: paced sending spreads the vehicles over one
    reporting interval instead of sending every vehicle's fix in the same instant."""
    from gis.simulation import simulate_fleet

    areas = [shapely.box(116.0 + i * 0.01, 44.0, 116.005 + i * 0.01, 44.005) for i in range(40)]
    tracks = simulate_fleet(areas, hours=0.5, interval_s=10, start_us=1_700_000_000_000_000, seed=1)
    bounds = np.r_[0, np.flatnonzero(np.diff(tracks.vehicle)) + 1, len(tracks)]
    phases = np.array(sim.send_phases(tracks, bounds, speedup=10.0))
    assert len(phases) == len(areas)
    assert phases.min() >= 0.0
    assert phases.max() < 1.0  # within one 10 s interval at 10×
    assert len(np.unique(phases)) == len(areas)
    assert phases.max() - phases.min() > 0.5  # spread, not bunched
    assert sim.send_phases(tracks, bounds, speedup=0.0) == [0.0] * len(areas)  # flat out
