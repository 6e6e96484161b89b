"""The JT/T 808 server over real sockets against PostGIS: registration, authentication, and
locations stored through the group-commit writer exactly as sent, acknowledged after commit.

Each test runs its own server (port 0) with its own writer and pool inside ``serving``, which
stops everything on exit; terminals are the simulator of ``api.protocols.jt808.terminal``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.auth import SYSTEM
from api.devices import DeviceIn, create_device
from api.ingest.fixes import FixBatch, FixError
from api.ingest.store import Ingestor
from api.ingest.writer import GroupWriter, IngestUnavailable
from api.protocols import jt808
from api.protocols.jt808.registration import auth_hash
from api.protocols.jt808.server import Jt808Server
from api.protocols.jt808.terminal import NOWHERE, Terminal
from api.settings import IngestSettings, Jt808Settings
from gis.crs import wgs84_to_gcj02
from tests.conftest import run

VILLAGE = "152502100200"
LAT, LON = 43.95, 116.05  # inside 锡林浩特市
SUCCESS, FAILURE = jt808.ReplyResult.SUCCESS, jt808.ReplyResult.FAILURE
_phones = itertools.count(int(time.time()) % 100_000 * 1000 + os.getpid() % 1000)


def new_phone() -> str:
    """A fresh 11-digit phone number, unique within and across test sessions."""
    return f"13{next(_phones) % 10**9:09d}"


async def make_terminal_device(
    url: str, phone: str, *, crs: str = "wgs84", as_identifier: bool = False
) -> tuple[int, str]:
    """A device of VILLAGE whose terminal is ``phone`` → (device id, identifier)."""
    identifier = phone if as_identifier else f"t808-{phone}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row, _ = await create_device(
            conn,
            SYSTEM,
            DeviceIn(identifier=identifier, home_village=VILLAGE, crs=crs),  # type: ignore[arg-type]
        )
        if not as_identifier:
            await conn.execute(
                "UPDATE device SET jt808_phone = %s WHERE id = %s", (phone, row["id"])
            )
    return int(row["id"]), identifier


@dataclass
class Harness:
    """A running server and the terminals a test opened (closed on exit)."""

    server: Jt808Server
    writer: GroupWriter
    url: str
    terminals: list[Terminal] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def terminal(self, phone: str, **kwargs: Any) -> Terminal:
        terminal = Terminal(phone, host="127.0.0.1", port=self.port, reply_timeout=20, **kwargs)
        self.terminals.append(terminal)
        return terminal

    async def online(self, *, crs: str = "wgs84", **kwargs: Any) -> tuple[Terminal, int, str]:
        """A registered, authenticated terminal of a new device → (terminal, id, identifier)."""
        phone = new_phone()
        device_id, identifier = await make_terminal_device(self.url, phone, crs=crs)
        terminal = self.terminal(phone, **kwargs)
        await terminal.login()
        return terminal, device_id, identifier


@asynccontextmanager
async def serving(
    url: str,
    *,
    writer_factory: Callable[[str, Ingestor], GroupWriter] | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A JT/T 808 server on a free port with its own writer and pool; all stopped on exit."""
    pool = AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True, timeout=30)
    ingestor = Ingestor(IngestSettings())
    writer = (writer_factory or GroupWriter)(url, ingestor)
    await writer.start()
    server = Jt808Server(Jt808Settings(port=0, **overrides), writer, pool)
    await server.start()
    harness = Harness(server, writer, url)
    try:
        yield harness
    finally:
        for terminal in harness.terminals:
            await terminal.close()
        await server.stop()
        await writer.stop()
        await pool.close()


def fix(i: int = 0, *, start: datetime | None = None, **changes: Any) -> jt808.Location:
    """A positioned report 10 s × i after ``start`` (default 30 min ago), moving east ≈ 10 m/s."""
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    values: dict[str, Any] = {
        "alarm": 0,
        "status": 0b11,  # ACC on, positioned
        "latitude": LAT,
        "longitude": round(LON + i * 0.00125, 6),
        "altitude": 1100 + i,
        "speed_ms": 360 / 36,  # 36 km/h on the wire
        "direction": 90,
        "time": start + timedelta(seconds=10 * i),
    }
    values.update(changes)
    return jt808.Location(**values)


def positions(db: psycopg.Connection[Any], device_id: int) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT fix_time, lat, lon, speed, course, altitude, protocol, extras FROM position "
        "WHERE device_id = %s ORDER BY fix_time",
        (device_id,),
    ).fetchall()


def assert_stored(rows: Sequence[tuple[Any, ...]], sent: Sequence[jt808.Location]) -> None:
    """Stored rows equal the reports sent (wire resolution: 1e-6°, 0.1 km/h, 1 s)."""
    assert len(rows) == len(sent)
    for row, loc in zip(rows, sorted(sent, key=lambda s: s.time or 0), strict=True):
        assert row[0] == loc.time
        assert (row[1], row[2]) == pytest.approx((loc.latitude, loc.longitude), abs=1e-9)
        assert row[3] == pytest.approx(loc.speed_ms, rel=1e-6)
        assert (row[4], row[5], row[6]) == (loc.direction, loc.altitude, "jt808")


pytestmark = pytest.mark.usefixtures("demo")


def test_register_authenticate_and_a_location_stored(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> tuple[int, jt808.Location, jt808.ReplyResult, bytes]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            sent = fix(0)
            result = await terminal.send_location(sent)
            assert terminal.auth_code is not None
            return device_id, sent, result, terminal.auth_code

    device_id, sent, result, code = run(scenario())
    assert result == SUCCESS
    assert_stored(positions(db, device_id), [sent])
    row = db.execute(
        "SELECT jt808_auth_hash, jt808_registered_at, jt808_manufacturer, jt808_terminal_id, "
        "jt808_plate, jt808_plate_colour, jt808_version FROM device WHERE id = %s",
        (device_id,),
    ).fetchone()
    assert row is not None
    assert bytes(row[0]) == auth_hash(code) != code  # only the digest is kept
    assert row[1] is not None
    assert row[2:] == ("GRIDP", row[3], row[4], 2, 2013)
    assert row[4].startswith("蒙H·")


def test_identifier_mapping_2019_phone_and_extras(db_url: str, db: psycopg.Connection[Any]) -> None:
    """A device registered with the phone as identifier; a 2019 terminal writes it in 20 BCD
    digits; every 808 extra lands in the extras JSON."""
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone, as_identifier=True))
    sent = fix(
        1,
        alarm=0b11,
        status=0b11 | 1 << 4,
        mileage_km=12345.6,
        fuel_l=40.5,
        satellites=11,
        signal_strength=27,
        raw_extras={0xE1: "0102ff"},
    )

    async def scenario() -> jt808.ReplyResult:
        async with serving(db_url, match_identifier=True) as h:  # the documented opt-in
            terminal = h.terminal(phone.rjust(20, "0"), version=2019)
            await terminal.login()
            return await terminal.send_location(sent)

    assert run(scenario()) == SUCCESS
    rows = positions(db, device_id)
    assert_stored(rows, [sent])
    assert rows[0][7] == {
        "alarm": 3,
        "alarms": ["emergency", "overspeed"],
        "status": 0b10011,
        "acc": True,
        "mileage_km": 12345.6,
        "fuel_l": 40.5,
        "satellites": 11,
        "signal_strength": 27,
        "raw_extras": {"0xE1": "0102ff"},
    }
    version = db.execute("SELECT jt808_version FROM device WHERE id = %s", (device_id,)).fetchone()
    assert version == (2019,)


def test_the_ack_waits_for_the_commit(db_url: str, db: psycopg.Connection[Any]) -> None:
    """A writer held at the door: no acknowledgement and no row until the commit happens."""
    entered, gate = asyncio.Event(), asyncio.Event()

    class HeldWriter(GroupWriter):
        async def submit(
            self, batch: FixBatch, *, protocol: str, errors: Sequence[FixError] = ()
        ) -> Any:
            entered.set()
            await gate.wait()
            return await super().submit(batch, protocol=protocol, errors=errors)

    before, after, answer = run(_ack_after_commit(db_url, db, entered, gate, HeldWriter))
    assert before == 0
    assert after == 1
    assert isinstance(answer, jt808.PlatformGeneralReply)
    assert answer.result == SUCCESS


async def _ack_after_commit(
    db_url: str,
    db: psycopg.Connection[Any],
    entered: asyncio.Event,
    gate: asyncio.Event,
    writer_cls: type[GroupWriter],
) -> tuple[int, int, jt808.Message]:
    async with serving(db_url, writer_factory=writer_cls) as h:
        terminal, device_id, _ = await h.online()
        data, serial = terminal.frame(fix(0))
        reply = terminal.expect(serial)
        terminal.send_raw(data)
        await entered.wait()  # the fix is at the writer, held
        hb_data, hb_serial = terminal.frame(jt808.Heartbeat())
        heartbeat = terminal.expect(hb_serial)
        terminal.send_raw(hb_data)  # answered in order: after the location, so not yet
        await asyncio.sleep(0.2)
        assert not reply.done()
        assert not heartbeat.done()
        rows_before = len(positions(db, device_id))
        gate.set()
        answer = await terminal.wait_reply(reply)
        rows_after = len(positions(db, device_id))
        await terminal.wait_reply(heartbeat)
        return rows_before, rows_after, answer


def test_no_success_when_the_writer_is_unavailable(db_url: str) -> None:
    class DownWriter(GroupWriter):
        async def submit(
            self,
            batch: FixBatch,  # noqa: ARG002
            *,
            protocol: str,  # noqa: ARG002
            errors: Sequence[FixError] = (),  # noqa: ARG002
        ) -> Any:
            raise IngestUnavailable("database down")

    async def scenario() -> tuple[jt808.ReplyResult, jt808.ReplyResult, dict[str, Any]]:
        async with serving(db_url, writer_factory=DownWriter) as h:
            terminal, _, _ = await h.online()
            single = await terminal.send_location(fix(0))
            batch = await terminal.send_batch([fix(1), fix(2)])
            return single, batch, h.server.snapshot()

    single, batch, stats = run(scenario())
    assert (single, batch) == (FAILURE, FAILURE)
    assert stats["events"]["ingest_unavailable"] == 2
    assert stats["replies"]["0x8001:0"] == 1  # the authentication, nothing else
    assert stats["replies"]["0x8001:1"] == 2


def test_a_batch_is_stored_exactly_and_duplicates_once(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    sent = [fix(i, satellites=9 + i % 3) for i in range(20)]

    async def scenario() -> tuple[int, list[jt808.ReplyResult]]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            results = [await terminal.send_batch(sent[:12])]
            results.append(await terminal.send_batch(sent[8:]))  # 4 repeated
            results.append(await terminal.send_location(sent[3]))  # and again
            return device_id, results

    device_id, results = run(scenario())
    assert results == [SUCCESS] * 3
    assert_stored(positions(db, device_id), sent)


def test_a_gcj02_terminal_is_converted(db_url: str, db: psycopg.Connection[Any]) -> None:
    lon_g, lat_g = wgs84_to_gcj02(np.array([LON]), np.array([LAT]))

    async def scenario() -> int:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online(crs="gcj02")
            report = fix(0, latitude=round(float(lat_g[0]), 6), longitude=round(float(lon_g[0]), 6))
            assert await terminal.send_location(report) == SUCCESS
            return device_id

    rows = positions(db, run(scenario()))
    assert len(rows) == 1
    # 600 m of offset removed; what is left is the wire's 1e-6° rounding (< 0.1 m)
    assert (rows[0][1], rows[0][2]) == pytest.approx((LAT, LON), abs=1e-6)


def test_reports_that_are_not_positions_are_quarantined(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> tuple[int, str, jt808.ReplyResult, dict[str, Any]]:
        async with serving(db_url) as h:
            terminal, device_id, identifier = await h.online()
            result = await terminal.send_batch(
                [fix(0), fix(1, status=0b01), NOWHERE, fix(2, status=0b11 | 0x20)]
            )
            return device_id, identifier, result, h.server.snapshot()

    device_id, identifier, result, stats = run(scenario())
    assert result == SUCCESS  # answered: the terminal must not resend them
    assert len(positions(db, device_id)) == 1
    rows = db.execute(
        "SELECT reason, field, raw FROM position_rejected WHERE protocol = 'jt808' "
        "AND raw LIKE %s ORDER BY id",
        (f"jt808 {identifier} %",),
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("unparsable", "status"),
        ("unparsable", "time"),
        ("unparsable", "status"),
    ]
    assert "not_positioned" in rows[0][2]
    assert "no_time" in rows[1][2]
    assert "encrypted" in rows[2][2]
    assert stats["fixes"]["quarantined_not_positioned"] == 1
    assert stats["fixes"]["quarantined_no_time"] == 1
    assert stats["fixes"]["quarantined_encrypted"] == 1
