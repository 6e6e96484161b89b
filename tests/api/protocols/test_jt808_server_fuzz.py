"""Fuzz the RUNNING JT/T 808 server: well over 100,000 random and mutated frames over an
authenticated and an unauthenticated connection. No crash, no handler error, every connection
still answers, and a good terminal is served normally afterwards."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from api.protocols import jt808
from tests.api.protocols.jt808_mutations import LOCATION, packets_of, wire
from tests.api.protocols.test_jt808_server import (
    FAILURE,
    SUCCESS,
    fix,
    new_phone,
    positions,
    serving,
)
from tests.conftest import run

pytestmark = pytest.mark.usefixtures("demo")
FRAMES = 110_000
KEEP_SESSION = {0x0003: 0x0002}  # an unregister would end the session the fuzz relies on


def _seed_packets(phone: str) -> list[bytes]:
    """Valid packets (header + body, unescaped, no check code) of every kind, both editions."""
    location = LOCATION
    messages: list[jt808.Message] = [
        jt808.Heartbeat(),
        location,
        jt808.BatchLocation(jt808.BatchType.BACKFILL, (location,) * 3),
        jt808.PositionQueryReply(7, location),
        jt808.TerminalGeneralReply(3, 0x8300, jt808.ReplyResult.SUCCESS),
        jt808.Register(15, 2501, "MAKER", "MODEL", "ID00001", 2, "蒙H·12345"),
        jt808.Authentication(b"ABCDEF0123456789"),
        jt808.UnknownMessage(0x0900, b"\x01\x02\x03"),
        jt808.ResendRequest(5, (1, 2)),
    ]
    return [p for version in (2013, 2019) for p in packets_of(messages, location, phone, version)]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if not out:
            out += rng.randbytes(rng.randint(1, 20))
        pos = rng.randrange(len(out))
        if op == 0:  # flip a bit, mostly in the body
            pos = rng.randrange(min(12, len(out) - 1), len(out)) if rng.random() < 0.8 else pos
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:  # any byte value, delimiter and escape included
            out[pos] = rng.choice((0x7E, 0x7D, 0x00, 0xFF, rng.randrange(256)))
        elif op == 2:  # cut short
            del out[pos:]
        elif op == 3:  # drop a slice
            del out[pos : pos + rng.randint(1, 8)]
        elif op == 4:  # repeat a slice
            out[pos:pos] = out[pos : pos + rng.randint(1, 16)]
        elif op == 5:  # any message id
            out[0:2] = rng.choice((rng.randrange(65536), 0x0200, 0x0704, 0x0201, 0x0001)).to_bytes(
                2, "big"
            )
        else:  # any properties word (length, encryption, subpackage, version bits)
            out[2:4] = rng.randrange(65536).to_bytes(2, "big")
    return bytes(out)


def fuzz_frames(rng: random.Random, packets: list[bytes], n: int) -> Iterator[bytes]:
    """``n`` frames: garbage, mutated wire frames (checks mostly wrong), and mutated packets
    framed with a correct check code (so they reach header and body decoding)."""
    for _ in range(n):
        roll = rng.random()
        packet = rng.choice(packets)
        if roll < 0.1:
            yield rng.randbytes(rng.randint(1, 48))
        elif roll < 0.45:
            yield _mutate(rng, wire(packet))
        else:
            body = _mutate(rng, packet)
            if len(body) >= 2 and int.from_bytes(body[:2], "big") in KEEP_SESSION:
                body = KEEP_SESSION[int.from_bytes(body[:2], "big")].to_bytes(2, "big") + body[2:]
            yield wire(body)


def test_a_fuzzed_running_server_keeps_serving(db_url: str, db: psycopg.Connection[Any]) -> None:
    rng = random.Random(808)

    async def scenario() -> tuple[int, list[jt808.ReplyResult], int, dict[str, Any]]:
        async with serving(db_url, max_auth_failures=10**6, max_pending_frames=64) as h:
            inside, _, _ = await h.online()
            outside = h.terminal(new_phone())
            await outside.connect()
            sent = 0
            for terminal, share in ((inside, 0.8), (outside, 0.2)):
                frames = list(fuzz_frames(rng, _seed_packets(terminal.phone), int(FRAMES * share)))
                for start in range(0, len(frames), 2000):
                    terminal.send_raw(b"".join(frames[start : start + 2000]))
                    await asyncio.sleep(0)
                sent += len(frames)
            # answers come in order, so these arrive after every fuzz frame was handled; the
            # serials are far from the fuzz's, whose answers may still be on their way
            inside._serial = outside._serial = 50_000
            results = [await inside.heartbeat(), await outside.heartbeat()]
            good, device_id, _ = await h.online()
            results.append(await good.send_location(fix(0)))
            results.append(await inside.heartbeat())
            return sent, results, device_id, h.server.snapshot()

    sent, results, device_id, stats = run(scenario())
    assert sent >= 100_000
    assert results == [SUCCESS, FAILURE, SUCCESS, SUCCESS]
    assert len(positions(db, device_id)) == 1
    errors = stats["errors"]
    assert "handler_error" not in errors
    assert sum(errors.values()) > sent // 4  # most mutations are refused and counted …
    for reason in ("bad_checksum", "invalid_body", "length_mismatch", "invalid_bcd"):
        assert errors.get(reason, 0) > 0, reason
    assert stats["replies"]["0x8001:3"] > 100  # … and others answered "not supported"
    assert stats["connections"] == 3
    assert stats["reassembly"]["buffered_bytes"] < 64 << 20
