"""Issue 18 item 15: JT/T 808 locations with vendor extras are stored, not refused.

Many terminals append additional information that does not parse as ``id BYTE | length BYTE |
value`` (vendor blocks with word lengths, padding, a stray byte). Such a 0x0200, or such an
item of a 0x0704, used to be answered result 2 with nothing stored, so the terminal resent it
for ever. Now the base position is stored, the items that did parse are decoded as usual, the
undecodable tail is kept as hex in the fix's extras (``raw_tail``), and the answer is 0. All
through the real TCP server.
"""

from __future__ import annotations

import struct
from typing import Any

import psycopg
import pytest

from api.protocols import jt808
from tests.api.protocols.test_jt808_server import (
    SUCCESS,
    fix,
    positions,
    serving,
)
from tests.conftest import run

pytestmark = pytest.mark.usefixtures("demo")

# A vendor block announcing 0x40 bytes with 5 left; a stray byte; a block announcing 255 bytes
# (a word length's high byte read as the length) with 3 left.
TAILS = (bytes.fromhex("eb400102030405"), b"\x05", bytes.fromhex("feff000102"))


def _batch_body(bodies: list[bytes]) -> bytes:
    items = b"".join(struct.pack(">H", len(b)) + b for b in bodies)
    return struct.pack(">HB", len(bodies), 0) + items


def test_a_location_with_an_undecodable_tail_is_stored_and_acknowledged(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    sent = [fix(i, mileage_km=100.5 + i, satellites=9, raw_extras={0xE1: "0102"}) for i in (0, 1)]
    base = [jt808.encode_location(s) for s in sent]

    async def scenario() -> tuple[int, list[jt808.ReplyResult], dict[str, Any]]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            results = [
                await terminal.send_unknown(0x0200, base[0] + TAILS[0]),
                await terminal.send_unknown(0x0200, base[1] + TAILS[1]),
            ]
            return device_id, results, h.server.snapshot()

    device_id, results, stats = run(scenario())
    assert results == [SUCCESS, SUCCESS]
    rows = positions(db, device_id)
    assert [r[0] for r in rows] == [s.time for s in sent]
    assert [(r[1], r[2]) for r in rows] == [
        pytest.approx((s.latitude, s.longitude), abs=1e-9) for s in sent
    ]
    extras = [r[7] for r in rows]
    assert [e["raw_tail"] for e in extras] == [TAILS[0].hex(), TAILS[1].hex()]
    # What parsed before the tail is decoded as usual.
    assert [e["mileage_km"] for e in extras] == [100.5, 101.5]
    assert all(e["satellites"] == 9 and e["raw_extras"] == {"0xE1": "0102"} for e in extras)
    assert stats["fixes"]["raw_tail"] == 2
    assert "invalid_body" not in stats["errors"]


def test_batch_items_with_undecodable_tails_are_all_stored(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    sent = [fix(i) for i in range(3)]
    bodies = [jt808.encode_location(s) + tail for s, tail in zip(sent, TAILS, strict=True)]

    async def scenario() -> tuple[int, jt808.ReplyResult]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            return device_id, await terminal.send_unknown(0x0704, _batch_body(bodies))

    device_id, result = run(scenario())
    assert result == SUCCESS
    rows = positions(db, device_id)
    assert [r[0] for r in rows] == [s.time for s in sent]
    assert [r[7]["raw_tail"] for r in rows] == [t.hex() for t in TAILS]


def test_a_broken_fixed_part_is_still_a_message_error(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    """Leniency covers the additional items only: a body shorter than the 28 fixed bytes or an
    impossible date is still result 2 and nothing is stored."""
    good = jt808.encode_location(fix(0))
    bad_date = good[:22] + bytes.fromhex("241301120000") + good[28:]

    async def scenario() -> tuple[int, list[jt808.ReplyResult]]:
        async with serving(db_url) as h:
            terminal, device_id, _ = await h.online()
            return device_id, [
                await terminal.send_unknown(0x0200, good[:20]),
                await terminal.send_unknown(0x0200, bad_date + TAILS[1]),
            ]

    device_id, results = run(scenario())
    assert results == [jt808.ReplyResult.MESSAGE_ERROR] * 2
    assert positions(db, device_id) == []
