"""Registration and authentication of JT/T 808 terminals: unknown terminals refused unless
auto-registration is on, wrong codes refused (and the connection closed after too many),
nothing but 0x0100/0x0102 before authentication, one terminal per vehicle, and the
phone ↔ device mapping."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from api.protocols import jt808
from api.protocols.jt808 import registration
from tests.api.protocols.test_jt808_server import (
    FAILURE,
    SUCCESS,
    fix,
    make_terminal_device,
    new_phone,
    positions,
    serving,
)
from tests.conftest import run

pytestmark = pytest.mark.usefixtures("demo")


def test_wrong_code_is_refused_and_nothing_is_stored(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone))

    async def scenario() -> tuple[list[jt808.ReplyResult], dict[str, Any], bool]:
        async with serving(db_url, max_auth_failures=3) as h:
            terminal = h.terminal(phone)
            await terminal.connect()
            assert (await terminal.register()).result == jt808.RegisterResult.SUCCESS
            results = [await terminal.authenticate(b"not-the-code")]
            results.append(await terminal.send_location(fix(0)))
            results.append(await terminal.heartbeat())
            results += [await terminal.authenticate(b"guess") for _ in range(2)]
            await asyncio.wait_for(terminal.closed.wait(), 20)  # the third wrong code closes
            return results, h.server.snapshot(), terminal.closed.is_set()

    results, stats, closed = run(scenario())
    assert results == [FAILURE] * 5
    assert closed
    assert positions(db, device_id) == []
    assert stats["events"]["auth_failed wrong_code"] == 3
    assert stats["events"]["unauthenticated"] == 2
    assert stats["events"]["auth_failures"] == 1


def test_unknown_terminal_is_refused_by_default(db_url: str, db: psycopg.Connection[Any]) -> None:
    phone = new_phone()

    async def scenario() -> tuple[jt808.RegisterReply, jt808.ReplyResult]:
        async with serving(db_url) as h:
            terminal = h.terminal(phone)
            await terminal.connect()
            reply = await terminal.register()
            return reply, await terminal.authenticate(b"anything")

    reply, auth = run(scenario())
    assert (reply.result, reply.auth_code) == (jt808.RegisterResult.NO_SUCH_TERMINAL, b"")
    assert auth == FAILURE
    assert db.execute("SELECT 1 FROM device WHERE jt808_phone = %s", (phone,)).fetchone() is None


def test_auto_registration_creates_the_device(db_url: str, db: psycopg.Connection[Any]) -> None:
    phone = new_phone()

    async def scenario() -> jt808.ReplyResult:
        async with serving(db_url, auto_register=True, auto_register_crs="gcj02") as h:
            terminal = h.terminal("0" + phone)  # leading zeros are not part of the key
            await terminal.login()
            return await terminal.send_location(fix(0))

    assert run(scenario()) == SUCCESS
    row = db.execute(
        "SELECT id, identifier, plate, crs, jt808_terminal_id FROM device WHERE jt808_phone = %s",
        (phone,),
    ).fetchone()
    assert row is not None
    assert row[1:] == (phone, f"蒙H·{phone[-5:]}", "gcj02", phone[-7:])
    assert len(positions(db, row[0])) == 1


def test_a_second_terminal_cannot_take_a_registered_vehicle(db_url: str) -> None:
    phone = new_phone()
    run(make_terminal_device(db_url, phone))

    async def scenario() -> list[jt808.RegisterResult]:
        async with serving(db_url) as h:
            first = h.terminal(phone)
            await first.login()
            intruder = h.terminal(phone)
            intruder.registration = jt808.Register(15, 2501, "OTHER", "X1", "9999999", 2, "蒙H·0")
            await intruder.connect()
            results = [(await intruder.register()).result]
            assert await first.unregister() == SUCCESS  # the old terminal leaves (0x0003)
            results.append((await intruder.register()).result)
            return results

    assert run(scenario()) == [
        jt808.RegisterResult.VEHICLE_REGISTERED,
        jt808.RegisterResult.SUCCESS,
    ]


def test_nothing_but_registration_and_authentication_before_login(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone))

    async def scenario() -> tuple[list[jt808.ReplyResult], dict[str, Any]]:
        async with serving(db_url) as h:
            terminal = h.terminal(phone)
            await terminal.connect()
            results = [
                await terminal.send_location(fix(0)),
                await terminal.send_batch([fix(1), fix(2)]),
                await terminal.send_batch([fix(i) for i in range(3, 40)], package_size=200),
                await terminal.heartbeat(),
                await terminal.send_unknown(0x0F01),
            ]
            return results, h.server.snapshot()

    results, stats = run(scenario())
    assert results == [FAILURE] * 5
    assert positions(db, device_id) == []
    assert stats["events"]["unauthenticated"] >= 5
    assert stats["fixes"] == {}


def test_identifier_matching_can_be_switched_off_and_phones_bound(db_url: str) -> None:
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone, as_identifier=True))

    async def scenario() -> list[jt808.RegisterResult]:
        async with serving(db_url, match_identifier=False) as h:
            terminal = h.terminal(phone)
            await terminal.connect()
            results = [(await terminal.register()).result]
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await registration.bind(conn, device_id, "000" + phone)
                with pytest.raises(ValueError, match="digits"):
                    await registration.bind(conn, device_id, "13x")
            results.append((await terminal.register()).result)
            return results

    assert run(scenario()) == [
        jt808.RegisterResult.NO_SUCH_TERMINAL,
        jt808.RegisterResult.SUCCESS,
    ]
