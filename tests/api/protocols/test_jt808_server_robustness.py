"""The JT/T 808 server under bad input and bad behaviour: broken frames dropped and counted while
the connection stays, "not supported" answers, subpackages in any order and 0x8003 for missing
ones, one connection per terminal, timeouts for idle, never-authenticating and slow-drip
connections, and back-pressure against a flood."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import psycopg
import pytest

from api.protocols import jt808
from api.protocols.jt808.terminal import BROKEN_KINDS
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
NOT_SUPPORTED = jt808.ReplyResult.NOT_SUPPORTED


def _raw_frame(packet: bytes) -> bytes:
    """A frame around hand-made header+body bytes, with a correct check code."""
    return b"\x7e" + jt808.escape(packet + bytes((jt808.checksum(packet),))) + b"\x7e"


def test_broken_frames_are_counted_and_the_connection_stays(db_url: str) -> None:
    async def scenario() -> tuple[list[jt808.ReplyResult], dict[str, Any]]:
        async with serving(db_url) as h:
            terminal, _, _ = await h.online()
            results = []
            for kind in BROKEN_KINDS:
                terminal.send_broken(kind)
                results.append(await terminal.heartbeat())
            header = bytes.fromhex("0002 0000 0139abcdef12 0007")  # phone not BCD
            terminal.send_raw(_raw_frame(header))
            long_header = bytes.fromhex("0002 0005") + bytes.fromhex(terminal.phone.rjust(12, "0"))
            terminal.send_raw(_raw_frame(long_header + b"\x00\x08" + b"\x01"))  # says 5, has 1
            results.append(await terminal.heartbeat())
            return results, h.server.snapshot()

    results, stats = run(scenario())
    assert results == [SUCCESS] * (len(BROKEN_KINDS) + 1)
    errors = stats["errors"]
    for reason in ("bad_checksum", "bad_escape", "oversized", "invalid_bcd", "length_mismatch"):
        assert errors.get(reason, 0) >= 1, reason
    assert sum(errors.values()) >= len(BROKEN_KINDS) + 2
    assert stats["connections"] == 1


def test_unknown_ids_and_bad_bodies_get_the_right_result(db_url: str) -> None:
    async def scenario() -> list[jt808.ReplyResult]:
        async with serving(db_url) as h:
            terminal, _, _ = await h.online()
            results = [
                await terminal.send_unknown(0x0F01, b"\x01\x02"),
                await terminal.send_unknown(0x0900),  # 数据上行透传: not handled here
                await terminal._general(jt808.PositionQuery()),  # a platform message
                await terminal.send_unknown(0x0200, bytes(10)),  # a location cut short
            ]
            serial = terminal.next_serial()
            reply = terminal.expect(serial)
            header = jt808.Header(0x0002, terminal.phone, serial, encryption=1)  # RSA
            terminal.send_raw(jt808.build_frame(header, b""))
            answer = await terminal.wait_reply(reply)
            assert isinstance(answer, jt808.PlatformGeneralReply)
            return [*results, answer.result]

    assert run(scenario()) == [
        NOT_SUPPORTED,
        NOT_SUPPORTED,
        NOT_SUPPORTED,
        jt808.ReplyResult.MESSAGE_ERROR,
        NOT_SUPPORTED,
    ]


def test_a_frame_for_another_phone_is_refused(db_url: str) -> None:
    async def scenario() -> tuple[jt808.ReplyResult, jt808.ReplyResult, dict[str, Any]]:
        async with serving(db_url) as h:
            terminal, _, _ = await h.online()
            serial = terminal.next_serial()
            reply = terminal.expect(serial)
            frame = jt808.encode_frame(fix(0), phone=new_phone(), serial=serial)
            terminal.send_raw(frame)
            answer = await terminal.wait_reply(reply)
            assert isinstance(answer, jt808.PlatformGeneralReply)
            own = await terminal.heartbeat()
            return answer.result, own, h.server.snapshot()

    refused, own, stats = run(scenario())
    assert (refused, own) == (FAILURE, SUCCESS)
    assert stats["errors"]["phone_mismatch"] == 1


def test_subpackages_out_of_order_are_reassembled(db_url: str, db: psycopg.Connection[Any]) -> None:
    sent = [fix(i, mileage_km=100 + i / 10) for i in range(40)]

    async def scenario() -> tuple[int, jt808.ReplyResult, jt808.ReplyResult]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online(version=2019)
            body = jt808.encode_body(jt808.BatchLocation(jt808.BatchType.NORMAL, sent[:20]), 2019)
            count = -(-len(body) // 97)
            assert count == 8
            backwards = await terminal.send_batch(
                sent[:20], package_size=97, order=range(count - 1, -1, -1)
            )
            shuffled = await terminal.send_batch(
                sent[20:], package_size=97, order=[3, 0, 7, 6, 2, 5, 1, 4]
            )
            return device_id, backwards, shuffled

    device_id, backwards, shuffled = run(scenario())
    assert (backwards, shuffled) == (SUCCESS, SUCCESS)
    assert len(positions(db, device_id)) == 40


def test_a_missing_package_is_requested_with_0x8003(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    sent = [fix(i) for i in range(30)]

    async def scenario() -> tuple[int, jt808.ReplyResult, list[Any], dict[str, Any]]:
        async with serving(db_url, resend_after_s=0.2) as h:
            terminal, device_id, _ = await h.online()
            first = terminal._serial
            # package 3 is "lost"; the terminal resends it when asked (see Terminal._answer)
            result = await terminal.send_batch(sent, package_size=200, skip=[2])
            inbox = []
            while not terminal.inbox.empty():
                inbox.append(terminal.inbox.get_nowait())
            return device_id, result, [first, inbox], h.server.snapshot()

    device_id, result, (first, inbox), stats = run(scenario())
    assert result == SUCCESS
    requests = [m for _, m in inbox if isinstance(m, jt808.ResendRequest)]
    assert requests[0] == jt808.ResendRequest(first, (3,))
    assert stats["events"]["resend_requested"] >= 1
    assert len(positions(db, device_id)) == 30


def test_a_second_connection_replaces_the_first(db_url: str) -> None:
    async def scenario() -> tuple[bool, jt808.ReplyResult, list[dict[str, Any]], dict[str, Any]]:
        async with serving(db_url) as h:
            first, device_id, _ = await h.online()
            second = h.terminal(first.phone, auth_code=first.auth_code)
            await second.login()
            await asyncio.wait_for(first.closed.wait(), 20)
            result = await second.send_location(fix(0))
            listed = h.server.terminals()
            assert listed[0]["device_id"] == device_id
            return first.closed.is_set(), result, listed, h.server.snapshot()

    closed, result, listed, stats = run(scenario())
    assert closed
    assert result == SUCCESS
    assert len(listed) == 1
    assert stats["events"]["replaced"] == 1
    assert (stats["connections"], stats["authenticated"]) == (1, 1)


def test_idle_never_authenticating_and_slow_drip_connections_are_closed(db_url: str) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(db_url, idle_timeout_s=0.6, auth_timeout_s=0.6) as h:
            silent = socket.create_connection(("127.0.0.1", h.port))  # never says a word
            idle, _, _ = await h.online()
            dripper, _, _ = await h.online()

            async def drip() -> None:
                frame, _ = dripper.frame(jt808.Heartbeat())
                for byte in frame[:-1] + frame[1:-1] * 100:  # never ends, byte by byte
                    if dripper.closed.is_set():
                        return
                    dripper.send_raw(bytes((byte,)))
                    await asyncio.sleep(0.02)

            await asyncio.gather(
                drip(),
                asyncio.wait_for(idle.closed.wait(), 20),
                asyncio.wait_for(dripper.closed.wait(), 20),
            )
            loop = asyncio.get_running_loop()
            silent.settimeout(20)
            assert await loop.run_in_executor(None, silent.recv, 1) == b""  # closed by the server
            silent.close()
            return h.server.snapshot()

    stats = run(scenario())
    assert stats["events"]["auth_timeout"] == 1
    assert stats["events"]["idle_closed"] == 2
    assert stats["connections"] == 0


def test_a_flood_is_paused_and_others_are_served(db_url: str, db: psycopg.Connection[Any]) -> None:
    phone = new_phone()
    flooder_id, _ = run(make_terminal_device(db_url, phone))

    async def scenario() -> tuple[int, jt808.ReplyResult, int, dict[str, Any]]:
        async with serving(db_url, max_pending_frames=16) as h:
            flood = h.terminal(phone)
            await flood.login()
            frames = [flood.frame(jt808.Heartbeat()) for _ in range(20_000)]
            replies = [flood.expect(serial) for _, serial in frames]
            flood.send_raw(b"".join(frame for frame, _ in frames))  # one burst, 300 kB
            # a never-reading flooder too: unauthenticated frames, replies never read
            _, deaf = await asyncio.open_connection("127.0.0.1", h.port)
            deaf.write(jt808.encode_frame(jt808.Heartbeat(), phone="1", serial=0) * 100_000)
            good, device_id, _ = await h.online()
            result = await good.send_location(fix(0))
            answers = await asyncio.gather(*(flood.wait_reply(r) for r in replies))
            ok = sum(isinstance(a, jt808.PlatformGeneralReply) and a.result == 0 for a in answers)
            deaf.transport.abort()
            return device_id, result, ok, h.server.snapshot()

    device_id, result, ok, stats = run(scenario())
    assert result == SUCCESS
    assert len(positions(db, device_id)) == 1
    assert ok == 20_000  # paused, never dropped
    assert stats["events"]["paused"] >= 2
    assert positions(db, flooder_id) == []


def test_the_reassembler_lists_idle_messages() -> None:
    frames = jt808.encode_subpackages(
        jt808.BatchLocation(jt808.BatchType.NORMAL, (fix(0),) * 5),
        phone="13900000001",
        serial=7,
        package_size=40,
    )
    packets = [jt808.read_packet(f) for f in frames]
    joiner = jt808.Reassembler(timeout=30)
    joiner.add(packets[0], now=0.0)
    joiner.add(packets[1], now=4.0)
    other = jt808.encode_subpackages(
        jt808.BatchLocation(jt808.BatchType.NORMAL, (fix(1),) * 5),
        phone="13900000002",
        serial=9,
        package_size=40,
    )
    joiner.add(jt808.read_packet(other[0]), now=5.0)
    assert joiner.idle(now=8.0, after=5.0) == []
    assert [k.phone for k in joiner.idle(now=9.5, after=5.0)] == ["013900000001"]
    assert len(joiner.idle(now=10.0, after=5.0)) == 2
