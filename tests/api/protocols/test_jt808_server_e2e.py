"""End to end: a simulated 草原110 fleet → simulated JT/T 808 terminals → the server → the
positions table, which holds exactly what the terminals sent (at the wire's resolution; GCJ-02
terminals converted), every other fix quarantined with its reason; and the CLI's
``gridpatrol simulate --protocol jt808``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api import simulate as sim
from api.protocols.jt808.fleet import assign_phones, location_of, send_jt808
from gis.crs import gcj02_to_wgs84
from gis.simulation import FleetTracks
from tests.api.protocols.test_jt808_server import serving
from tests.conftest import run

pytestmark = pytest.mark.usefixtures("demo")
AREA = "152525"  # 东乌珠穆沁旗: no other test simulates there


def _expected(
    tracks: FleetTracks, identifiers: list[str]
) -> dict[tuple[str, int], tuple[float, ...]]:
    """(identifier, unix second) → (lat, lon, speed, course) as the server must store them."""
    out: dict[tuple[str, int], tuple[float, ...]] = {}
    for k in range(len(tracks)):
        vehicle = int(tracks.vehicle[k])
        report = location_of(tracks, k)
        lat, lon = report.latitude, report.longitude
        if tracks.gcj02[vehicle]:
            lon_a, lat_a = gcj02_to_wgs84(np.array([lon]), np.array([lat]))
            lat, lon = float(lat_a[0]), float(lon_a[0])
        assert report.time is not None
        second = int(report.time.timestamp())
        out[identifiers[vehicle], second] = (
            lat,
            lon,
            round(report.speed_ms * 36) / 36,
            report.direction,
        )
    return out


def test_a_simulated_fleet_lands_exactly_as_sent(db_url: str, db: psycopg.Connection[Any]) -> None:
    async def scenario() -> tuple[sim.Fleet, FleetTracks, sim.SendReport, dict[str, Any]]:
        async with serving(db_url) as h:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                fleet = await sim.load_fleet(conn, 12, area_prefix=AREA)
                tracks = sim.fleet_tracks(
                    fleet, hours=1.0, interval_s=10, end_us=int((time.time() - 120) * 1e6), seed=808
                )
                await sim.register_fleet(conn, fleet, tracks.gcj02)
                phones = await assign_phones(conn, fleet.identifiers)
            assert all(p.startswith("14") and len(p) == 12 for p in phones)
            report = await send_jt808(tracks, phones, host="127.0.0.1", port=h.port, broken_every=5)
            return fleet, tracks, report, h.server.snapshot()

    fleet, tracks, report, stats = run(scenario())
    assert report.sent == len(tracks) > 1500
    assert report.answers["acknowledged"] == len(tracks)
    assert report.answers["broken frames sent"] > 10
    assert sum(stats["errors"].values()) >= report.answers["broken frames sent"]
    assert stats["messages"]["0x0704"] > 0
    assert tracks.gcj02.any()
    rows = db.execute(
        "SELECT d.identifier, extract(epoch FROM p.fix_time)::bigint, p.lat, p.lon, p.speed, "
        "p.course FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = ANY(%s)",
        (fleet.identifiers,),
    ).fetchall()
    quarantined = db.execute(
        "SELECT reason, count(*) FROM position_rejected WHERE identifier = ANY(%s) "
        "AND protocol = 'jt808' GROUP BY reason",
        (fleet.identifiers,),
    ).fetchall()
    assert len(rows) + sum(n for _, n in quarantined) == len(tracks)
    assert set(dict(quarantined)) <= {"implausible_jump"}  # only the deliberate GPS spikes
    assert len(rows) >= len(tracks) - 2 * int(tracks.spike.sum())
    expected = _expected(tracks, fleet.identifiers)
    for identifier, second, lat, lon, speed, course in rows:
        want = expected[identifier, second]
        assert (lat, lon) == pytest.approx(want[:2], abs=1e-9)
        assert speed == pytest.approx(want[2], rel=1e-6, abs=1e-6)
        assert course == want[3]


def test_cli_simulate_over_jt808(
    client: TestClient, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    monkeypatch.setenv("DATABASE_URL", db_url)
    port = client.app.state.jt808.port  # type: ignore[attr-defined]
    args = ["simulate", "--vehicles", "4", "--hours", "0.2", "--protocol", "jt808"]
    result = CliRunner().invoke(cli, [*args, "--area", "152528", "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert "acknowledged:" in result.output
    stored = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier LIKE 'sim-152528%%' AND p.protocol = 'jt808'"
    ).fetchone()
    assert stored is not None
    assert stored[0] > 100
