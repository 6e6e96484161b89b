"""The storing transaction: every fix stored once or quarantined with its reason."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from api.auth import SYSTEM
from api.devices import DeviceIn, create_device
from api.ingest import partitions, store
from api.ingest.fixes import FixBatch, FixError, to_time_us
from api.ingest.store import Ingestor
from api.settings import IngestSettings
from gis.crs import wgs84_to_gcj02
from tests.conftest import run

VILLAGE = "152502100200"
LAT, LON = 43.95, 116.05  # inside 锡林浩特市
_ids = itertools.count()


async def _device(url: str, **fields: Any) -> str:
    identifier = f"test-{time.time_ns()}-{next(_ids)}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_device(
            conn, SYSTEM, DeviceIn(identifier=identifier, home_village=VILLAGE, **fields)
        )
    return identifier


async def _store(
    url: str, ingestor: Ingestor, batch: FixBatch, errors: list[FixError] | None = None
) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await ingestor.prepare(conn, batch)
        return await ingestor.store(conn, batch, protocol="test", errors=errors or [])


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def _track(
    device: str, n: int, *, start: datetime, step_s: int = 10, east_mps: float = 10.0
) -> list[dict[str, Any]]:
    dlon = east_mps * step_s / (111_320 * np.cos(np.radians(LAT)))
    return [
        {
            "device": device,
            "time": start + timedelta(seconds=step_s * i),
            "lat": LAT,
            "lon": LON + i * dlon,
            "speed": east_mps,
            "accuracy": 5.0,
        }
        for i in range(n)
    ]


@pytest.fixture(params=["pipelined", "copy"])
def ingestor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Ingestor:
    """Both write paths: small groups pipelined (INSERT from arrays), larger ones COPYed."""
    if request.param == "copy":
        monkeypatch.setattr(store, "PIPELINE_MAX", 0)
    return Ingestor(IngestSettings())


@pytest.mark.usefixtures("demo")
def test_every_fix_is_stored_or_quarantined(
    db_url: str, db: psycopg.Connection[Any], ingestor: Ingestor
) -> None:
    good = run(_device(db_url))
    disabled = run(_device(db_url, enabled=False))
    start = _now()
    recs = _track(good, 10, start=start)
    recs[4] = {**recs[4], "lat": LAT + 0.5}  # a 55 km spike in 10 s
    recs += [
        {**recs[0]},  # exact duplicate inside the batch
        {"device": good, "time": start - timedelta(hours=1), "lat": 0.0, "lon": 0.0},
        {"device": good, "time": datetime.now(UTC) + timedelta(hours=2), "lat": LAT, "lon": LON},
        {"device": good, "time": datetime.now(UTC) - timedelta(days=90), "lat": LAT, "lon": LON},
        {"device": good, "time": start - timedelta(hours=2), "lat": 30.27, "lon": -97.74},
        {
            "device": good,
            "time": start - timedelta(hours=3),
            "lat": LAT,
            "lon": LON,
            "accuracy": 5000.0,
        },
        {"device": f"never-registered-{good}", "time": start, "lat": LAT, "lon": LON},
        {"device": disabled, "time": start, "lat": LAT, "lon": LON},
    ]
    raw = f"id={good}&lat=abc"
    errors = [FixError(row=99, reason="not a number", field="lat", raw=raw)]
    result = run(_store(db_url, ingestor, FixBatch.from_records(recs), errors))
    assert result.stored == 9
    assert result.duplicate == 1
    assert result.rejected == {
        "implausible_jump": 1,
        "bad_coordinates": 1,
        "future": 1,
        "too_old": 1,
        "outside_service_area": 1,
        "poor_accuracy": 1,
        "unknown_device": 1,
        "disabled_device": 1,
        "unparsable": 1,
    }
    device_id = db.execute("SELECT id FROM device WHERE identifier = %s", (good,)).fetchone()[0]  # type: ignore[index]
    assert db.execute(
        "SELECT count(*) FROM position WHERE device_id = %s", (device_id,)
    ).fetchone() == (9,)
    reasons = dict(
        db.execute(
            "SELECT reason, count(*) FROM position_rejected "
            "WHERE device_id = %s OR identifier = %s OR raw = %s GROUP BY reason",
            (device_id, f"never-registered-{good}", raw),
        ).fetchall()
    )
    assert reasons["implausible_jump"] == 1
    assert reasons["unparsable"] == 1
    assert reasons["unknown_device"] == 1
    state = db.execute(
        "SELECT fix_time FROM device_state WHERE device_id = %s", (device_id,)
    ).fetchone()
    assert state == (start + timedelta(seconds=90),)


@pytest.mark.usefixtures("demo")
def test_retrying_the_same_fixes_creates_no_duplicates(
    db_url: str, db: psycopg.Connection[Any], ingestor: Ingestor
) -> None:
    device = run(_device(db_url))
    batch = FixBatch.from_records(_track(device, 20, start=_now()))
    first = run(_store(db_url, ingestor, batch))
    again = run(_store(db_url, ingestor, batch))
    assert (first.stored, first.duplicate) == (20, 0)
    assert (again.stored, again.duplicate) == (0, 20)
    assert db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s",
        (device,),
    ).fetchone() == (20,)


@pytest.mark.usefixtures("demo")
def test_a_gcj02_terminal_is_converted_at_the_edge(
    db_url: str, db: psycopg.Connection[Any], ingestor: Ingestor
) -> None:
    device = run(_device(db_url, crs="gcj02"))
    truth = _track(device, 5, start=_now())
    glon, glat = wgs84_to_gcj02([r["lon"] for r in truth], [r["lat"] for r in truth])
    sent = [
        {**r, "lon": float(x), "lat": float(y)} for r, x, y in zip(truth, glon, glat, strict=True)
    ]
    assert run(_store(db_url, ingestor, FixBatch.from_records(sent))).stored == 5
    rows = db.execute(
        "SELECT p.lon, p.lat FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s ORDER BY fix_time",
        (device,),
    ).fetchall()
    for (lon, lat), r in zip(rows, truth, strict=True):
        assert lon == pytest.approx(r["lon"], abs=1e-8)  # < 1 mm
        assert lat == pytest.approx(r["lat"], abs=1e-8)


@pytest.mark.usefixtures("demo")
def test_partitions_across_a_day_boundary(db_url: str, db: psycopg.Connection[Any]) -> None:
    device = run(_device(db_url))
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3
    )
    recs = _track(device, 12, start=midnight - timedelta(seconds=60), step_s=10)
    ingestor = Ingestor(IngestSettings())
    assert run(_store(db_url, ingestor, FixBatch.from_records(recs))).stored == 12
    rows = db.execute(
        "SELECT p.tableoid::regclass::text, count(*) FROM position p "
        "JOIN device d ON d.id = p.device_id WHERE d.identifier = %s GROUP BY 1 ORDER BY 1",
        (device,),
    ).fetchall()
    before, after = midnight.date() - timedelta(days=1), midnight.date()
    assert rows == [(partitions.partition_name(before), 6), (partitions.partition_name(after), 6)]


@pytest.mark.usefixtures("demo")
def test_rows_in_the_default_partition_move_into_a_new_partition(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    device = run(_device(db_url))
    day = (datetime.now(UTC) - timedelta(days=20)).date()
    when = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    device_id = db.execute("SELECT id FROM device WHERE identifier = %s", (device,)).fetchone()[0]  # type: ignore[index]
    db.execute(f"DROP TABLE IF EXISTS {partitions.partition_name(day)}")
    db.execute(
        "INSERT INTO position (device_id, fix_time, lat, lon, geom, protocol) "
        "VALUES (%s, %s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), 'test')",
        (device_id, when, LAT, LON, LON, LAT),
    )

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await partitions.ensure(conn, [day], set())

    run(make())
    where = db.execute(
        "SELECT tableoid::regclass::text FROM position WHERE device_id = %s AND fix_time = %s",
        (device_id, when),
    ).fetchone()
    assert where == (partitions.partition_name(day),)
    assert to_time_us(when) > 0


POSITION_COLUMNS = (
    "(extract(epoch FROM fix_time) * 1e6)::bigint, lat, lon, ST_AsEWKT(geom), speed, course, "
    "altitude, accuracy, battery, protocol, extras"
)
REJECTED_COLUMNS = "protocol, reason, field, row_no, fix_time, lat, lon, raw IS NOT NULL"


@pytest.mark.usefixtures("demo")
def test_both_write_paths_store_the_same_rows(
    db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same fixes through the pipelined INSERT and through COPY: equal rows in position
    (every column, NULLs and extras included), the quarantine, device_state and the marks."""
    start = _now()

    def batch(device: str) -> FixBatch:
        recs = _track(device, 6, start=start)
        recs[1] = {**recs[1], "speed": float("nan"), "accuracy": float("nan")}  # NULLs
        recs[2] = {**recs[2], "course": 271.5, "altitude": 1160.0, "battery": 87.0}
        recs[3] = {**recs[3], "extras": {"ignition": True, "odometer_m": 12345}}
        recs.append({"device": device, "time": start, "lat": 91.0, "lon": LON})  # refused
        return FixBatch.from_records(recs)

    rows = {}
    for path, pipeline_max in (("pipelined", 10_000), ("copy", 0)):
        monkeypatch.setattr(store, "PIPELINE_MAX", pipeline_max)
        device = run(_device(db_url))
        errors = [FixError(row=8, reason="not a number", field="lat", raw=f"id={device}&lat=x")]
        result = run(_store(db_url, Ingestor(IngestSettings()), batch(device), errors))
        device_id = db.execute("SELECT id FROM device WHERE identifier = %s", (device,)).fetchone()[
            0
        ]  # type: ignore[index]
        rows[path] = (
            result.counts(),
            db.execute(
                f"SELECT {POSITION_COLUMNS} FROM position WHERE device_id = %s ORDER BY fix_time",
                (device_id,),
            ).fetchall(),
            db.execute(
                f"SELECT {REJECTED_COLUMNS} FROM position_rejected "
                "WHERE device_id = %s OR raw = %s ORDER BY reason",
                (device_id, errors[0].raw),
            ).fetchall(),
            db.execute(
                "SELECT fix_time, lat, lon, speed, protocol FROM device_state WHERE device_id = %s",
                (device_id,),
            ).fetchall(),
            db.execute(
                "SELECT day FROM coverage_dirty WHERE device_id = %s ORDER BY day", (device_id,)
            ).fetchall(),
        )
    assert rows["pipelined"] == rows["copy"]
    counts, positions, rejected, state, marks = rows["copy"]
    assert counts == {"stored": 6, "duplicate": 0, "bad_coordinates": 1, "unparsable": 1}
    assert len(positions) == 6
    assert positions[1][4] is None  # NaN stored as NULL
    assert positions[1][7] is None
    assert positions[2][5:9] == (271.5, 1160.0, 5.0, 87.0)
    assert positions[3][10] == {"ignition": True, "odometer_m": 12345}
    assert [r[1] for r in rejected] == ["bad_coordinates", "unparsable"]
    assert rejected[1][3] == 8  # the row number of the unparsable record
    assert len(state) == 1
    assert marks


@pytest.mark.usefixtures("demo")
@pytest.mark.parametrize("path", ["pipelined", "copy"])
def test_sinks_run_in_the_storing_transaction(
    db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The store calls the sinks registered with its Ingestor, in order, inside its own
    transaction: a failing sink leaves nothing of the batch behind; no sinks, no side
    effects (no live state, no coverage marks)."""
    if path == "copy":
        monkeypatch.setattr(store, "PIPELINE_MAX", 0)
    calls: list[tuple[str, int, str]] = []

    async def counting(conn: Any, fixes: Any, protocol: str) -> None:
        row = await (await conn.execute("SELECT txid_current_if_assigned()")).fetchone()
        calls.append(("counting", len(fixes.device_id), protocol))
        assert row[0] is not None  # inside the transaction that wrote the fixes

    async def failing(conn: Any, fixes: Any, protocol: str) -> None:
        raise RuntimeError("sink failed")

    device = run(_device(db_url))
    batch = FixBatch.from_records(_track(device, 5, start=_now()))
    with pytest.raises(RuntimeError, match="sink failed"):
        run(_store(db_url, Ingestor(IngestSettings(), sinks=(counting, failing)), batch))
    assert calls == [("counting", 5, "test")]
    stored = db.execute(
        "SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "WHERE d.identifier = %s",
        (device,),
    ).fetchone()
    assert stored == (0,)  # rolled back with the sink
    result = run(_store(db_url, Ingestor(IngestSettings(), sinks=()), batch))
    assert result.stored == 5
    side_effects = db.execute(
        "SELECT (SELECT count(*) FROM device_state s WHERE s.device_id = d.id), "
        "(SELECT count(*) FROM coverage_dirty c WHERE c.device_id = d.id) "
        "FROM device d WHERE d.identifier = %s",
        (device,),
    ).fetchone()
    assert side_effects == (0, 0)
