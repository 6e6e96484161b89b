"""Issue 18 item 11: a JT/T 808 terminal cannot be hijacked by re-registering.

The maker and terminal id of a 0x0100 travel in clear, so anyone who saw them could send the
same registration, get a fresh auth code (the real terminal's stops working) and, by
authenticating, close the real terminal's connection. A device whose terminal is connected or
was heard from within ``REREGISTER_QUIET_S`` is now refused (0x8100 result 3, terminal already
registered); every re-registration, accepted or refused, is audited in the registration's
transaction. Numeric identifiers of other devices can no longer be claimed by the first terminal
to register: ``MATCH_IDENTIFIER`` is off by default, a terminal registers only to the device an
operator bound it to (``jt808_phone``). All through the real TCP server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from api.protocols import jt808
from api.protocols.jt808.registration import auth_hash
from api.settings import Jt808Settings
from tests.api.protocols.test_jt808_server import (
    SUCCESS,
    fix,
    make_terminal_device,
    new_phone,
    positions,
    serving,
)
from tests.conftest import run

pytestmark = pytest.mark.usefixtures("demo")
TERMINAL_REGISTERED = jt808.RegisterResult.TERMINAL_REGISTERED


def _audit(db: psycopg.Connection[Any], device_id: int) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT action, user_name, detail FROM audit_log "
        "WHERE object_type = 'device' AND object_id = %s AND action LIKE 'jt808.register%%' "
        "ORDER BY id",
        (str(device_id),),
    ).fetchall()


async def _gone(h: Any, device_id: int) -> None:
    """Wait until the server has seen a closed terminal's connection end."""
    for _ in range(2000):
        if device_id not in h.server.by_device:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the connection of device {device_id} is still bound")


def _stored_hash(db: psycopg.Connection[Any], device_id: int) -> bytes:
    row = db.execute("SELECT jt808_auth_hash FROM device WHERE id = %s", (device_id,)).fetchone()
    assert row is not None
    assert row[0] is not None
    return bytes(row[0])


def test_a_connected_terminal_cannot_be_re_registered_by_an_impostor(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """The impostor copies phone, maker and terminal id: refused with result 3, no code; the
    real terminal keeps its connection, its code and its fixes; the refusal is audited."""

    async def scenario() -> tuple[int, bytes, jt808.RegisterReply, list[jt808.ReplyResult], bool]:
        async with serving(db_url) as h:
            real, device_id, _ = await h.online()
            assert real.auth_code is not None
            impostor = h.terminal(real.phone)
            impostor.registration = real.registration  # everything sent in clear, copied
            await impostor.connect()
            reply = await impostor.register()
            # Had it got a code, authenticating would have closed the real terminal.
            stolen = await impostor.authenticate(reply.auth_code or b"guess")
            results = [stolen, await real.send_location(fix(0)), await real.heartbeat()]
            return device_id, real.auth_code, reply, results, real.closed.is_set()

    device_id, code, reply, results, closed = run(scenario())
    assert (reply.result, reply.auth_code) == (TERMINAL_REGISTERED, b"")
    assert results == [jt808.ReplyResult.FAILURE, SUCCESS, SUCCESS]
    assert not closed
    assert _stored_hash(db, device_id) == auth_hash(code)  # the real code still works
    assert len(positions(db, device_id)) == 1
    audit = _audit(db, device_id)
    assert [(a, d["result"], d["reason"]) for a, _, d in audit] == [
        ("jt808.register", 0, "registered"),
        ("jt808.register_refused", 3, "terminal_connected"),
    ]
    _, who, detail = audit[-1]
    assert who.startswith("jt808:")
    assert detail["reregistration"] is True
    assert detail["manufacturer"] == "GRIDP"
    assert detail["peer"].startswith("127.0.0.1:")


def test_a_terminal_heard_from_recently_cannot_be_re_registered(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """The real terminal reported and went away (a tunnel, a restart): within the quiet window
    a re-registration is still refused, and the real terminal logs in again with its code."""

    async def scenario() -> tuple[int, bytes, jt808.RegisterReply, jt808.ReplyResult]:
        async with serving(db_url) as h:
            real, device_id, _ = await h.online()
            assert await real.send_location(fix(0)) == SUCCESS
            await real.close()
            await _gone(h, device_id)
            impostor = h.terminal(real.phone)
            impostor.registration = real.registration
            await impostor.connect()
            reply = await impostor.register()
            await real.login()  # it still holds its code: authenticates without registering
            assert real.auth_code is not None
            return device_id, real.auth_code, reply, await real.send_location(fix(1))

    device_id, code, reply, after = run(scenario())
    assert (reply.result, reply.auth_code) == (TERMINAL_REGISTERED, b"")
    assert after == SUCCESS
    assert _stored_hash(db, device_id) == auth_hash(code)
    assert len(positions(db, device_id)) == 2
    refused = [d for a, _, d in _audit(db, device_id) if a == "jt808.register_refused"]
    assert [(d["result"], d["reason"]) for d in refused] == [(3, "heard_recently")]
    assert refused[0]["last_heard"] is not None


def test_a_silent_terminal_may_re_register_and_that_is_audited(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Past the quiet window (0 here: only a live connection protects) a terminal that lost its
    code registers again; the new code replaces the old and the audit log says so."""

    async def scenario() -> tuple[int, bytes, bytes, jt808.ReplyResult]:
        async with serving(db_url, reregister_quiet_s=0) as h:
            old, device_id, _ = await h.online()
            assert await old.send_location(fix(0)) == SUCCESS
            assert old.auth_code is not None
            await old.close()
            await _gone(h, device_id)
            renewed = h.terminal(old.phone)  # holds no code: registers first
            await renewed.login()
            assert renewed.auth_code is not None
            await old.connect()
            return device_id, old.auth_code, renewed.auth_code, await old.authenticate()

    device_id, old_code, new_code, stale = run(scenario())
    assert new_code != old_code
    assert _stored_hash(db, device_id) == auth_hash(new_code)
    assert stale == jt808.ReplyResult.FAILURE  # only the holder of the new code gets in
    audit = _audit(db, device_id)
    assert [(a, d["result"], d["reregistration"]) for a, _, d in audit] == [
        ("jt808.register", 0, False),
        ("jt808.register", 0, True),
    ]
    assert audit[-1][2]["previous_registered_at"] is not None


def test_numeric_identifiers_of_other_devices_are_not_claimable_by_default(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A device whose identifier is all digits (an IMEI, a phone) and which no operator bound
    to a terminal is not a terminal's to claim; the auto-match is an opt-in."""
    assert Jt808Settings().match_identifier is False
    phone = new_phone()
    device_id, _ = run(make_terminal_device(db_url, phone, as_identifier=True))

    async def scenario(**overrides: Any) -> jt808.RegisterReply:
        async with serving(db_url, **overrides) as h:
            claimant = h.terminal(phone)
            await claimant.connect()
            return await claimant.register()

    refused = run(scenario())
    assert (refused.result, refused.auth_code) == (jt808.RegisterResult.NO_SUCH_TERMINAL, b"")
    row = db.execute(
        "SELECT jt808_phone, jt808_auth_hash, jt808_terminal_id FROM device WHERE id = %s",
        (device_id,),
    ).fetchone()
    assert row == (None, None, None)
    assert _audit(db, device_id) == []
    # The documented opt-in still maps it.
    accepted = run(scenario(match_identifier=True))
    assert accepted.result == jt808.RegisterResult.SUCCESS
    assert _stored_hash(db, device_id) == auth_hash(accepted.auth_code)


def test_refused_re_registrations_still_close_the_connection_after_too_many(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """A prober cannot retry for ever on one socket: refused re-registrations count as failures."""

    async def scenario() -> tuple[list[jt808.RegisterResult], bool]:
        async with serving(db_url, max_auth_failures=2) as h:
            real, _, _ = await h.online()
            impostor = h.terminal(real.phone)
            impostor.registration = real.registration
            await impostor.connect()
            results = [(await impostor.register()).result for _ in range(2)]
            await asyncio.wait_for(impostor.closed.wait(), 20)
            return results, impostor.closed.is_set() and not real.closed.is_set()

    results, only_impostor_closed = run(scenario())
    assert results == [TERMINAL_REGISTERED] * 2
    assert only_impostor_closed
