"""Subpackage reassembly: any order, duplicates, missing packages for 0x8003, timeouts and the
memory bounds that keep a hostile terminal from exhausting the server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.protocols import jt808

FIX = jt808.Location(0, 3, 43.9, 116.1, 1000, 10.0, 90, datetime(2024, 5, 1, tzinfo=UTC))
BATCH = jt808.BatchLocation(jt808.BatchType.NORMAL, (FIX,) * 5)  # 3 + 5 × 30 = 153 bytes


def packages(
    message: jt808.Message = BATCH,
    *,
    phone: str = "13912345678",
    serial: int = 100,
    size: int = 40,
    version: jt808.Version = 2013,
) -> list[jt808.Packet]:
    frames = jt808.encode_subpackages(
        message, phone=phone, serial=serial, version=version, package_size=size
    )
    return [jt808.read_packet(f) for f in frames]


def test_in_order() -> None:
    parts = packages()
    assert len(parts) == 4
    joiner = jt808.Reassembler()
    results = [joiner.add(p, now=1.0) for p in parts]
    assert results[:3] == [None, None, None]
    whole = results[3]
    assert whole is not None
    assert whole.header.serial == 100
    assert whole.header.body_length == len(whole.body) == 153
    assert not whole.header.subpackaged
    assert jt808.decode_packet(whole).message == BATCH
    assert joiner.stats == {"completed": 1}
    assert len(joiner) == 0
    assert joiner.buffered_bytes == 0


@settings(max_examples=100, deadline=None)
@given(
    order=st.permutations(range(6)),
    repeats=st.lists(st.integers(0, 5), max_size=4),
    serial=st.integers(0, 0xFFFF),
    version=st.sampled_from((2013, 2019)),
)
def test_any_order_with_duplicates(
    order: list[int], repeats: list[int], serial: int, version: jt808.Version
) -> None:
    parts = packages(serial=serial, size=30, version=version)
    assert len(parts) == 6
    joiner = jt808.Reassembler()
    # Duplicates of packages already received may come at any point before completion.
    sequence = [parts[i] for i in order]
    for position, index in enumerate(repeats):
        sequence.insert(min(position + order.index(index) + 1, len(sequence) - 1), parts[index])
    results = [joiner.add(p, now=0.0) for p in sequence]
    done = [r for r in results if r is not None]
    assert len(done) == 1
    assert done[0].header.serial == serial
    assert jt808.decode_packet(done[0]).message == BATCH
    assert joiner.stats["completed"] == 1


def test_serials_wrap_around() -> None:
    parts = packages(serial=65534, size=40)
    assert [p.header.serial for p in parts] == [65534, 65535, 0, 1]
    joiner = jt808.Reassembler()
    key = jt808.Reassembler.key_of(parts[2].header)
    assert key == jt808.PartialKey("013912345678", 0x0704, 4, 65534)
    whole = [joiner.add(p, now=0.0) for p in reversed(parts)][-1]
    assert whole is not None
    assert whole.header.serial == 65534


def test_missing_packages_for_a_resend_request() -> None:
    parts = packages()
    joiner = jt808.Reassembler()
    for p in (parts[0], parts[2]):
        assert joiner.add(p, now=0.0) is None
    (key,) = joiner.partials()
    assert joiner.partials("013912345678") == [key]
    assert joiner.partials("000000000000") == []
    assert joiner.missing(key) == [2, 4]

    request = jt808.ResendRequest(key.first_serial, tuple(joiner.missing(key)))
    frame = jt808.encode_frame(request, phone=key.phone, serial=1)
    assert jt808.decode_frame(frame).message == jt808.ResendRequest(100, (2, 4))

    assert joiner.add(parts[3], now=1.0) is None
    assert joiner.missing(key) == [2]
    assert joiner.add(parts[1], now=2.0) is not None
    assert joiner.missing(key) == []


def test_incomplete_messages_expire_after_the_timeout() -> None:
    parts = packages()
    joiner = jt808.Reassembler(timeout=30.0)
    joiner.add(parts[0], now=100.0)
    joiner.add(parts[1], now=110.0)  # activity keeps it alive
    assert joiner.expire(now=139.9) == []
    (expired,) = joiner.expire(now=140.0)
    assert expired.first_serial == 100
    assert joiner.stats["expired"] == 1
    assert len(joiner) == 0
    assert joiner.buffered_bytes == 0
    # The rest arrive too late: a fresh partial that cannot complete.
    assert joiner.add(parts[2], now=141.0) is None
    assert joiner.add(parts[3], now=141.0) is None
    assert joiner.missing(expired) == [1, 2]


def test_add_expires_stale_messages_of_any_phone() -> None:
    joiner = jt808.Reassembler(timeout=5.0)
    joiner.add(packages(phone="1")[0], now=0.0)
    joiner.add(packages(phone="2")[0], now=3.0)
    joiner.add(packages(phone="3")[0], now=6.0)
    assert [k.phone for k in joiner.partials()] == ["000000000002", "000000000003"]


def test_not_subpackaged_packets_pass_through() -> None:
    packet = jt808.read_packet(jt808.encode_frame(FIX, phone="1", serial=1))
    assert jt808.Reassembler().add(packet, now=0.0) is packet


def test_partials_per_phone_are_limited_stalest_evicted() -> None:
    joiner = jt808.Reassembler(max_partials_per_phone=2)
    for i, serial in enumerate((10, 20, 30)):
        joiner.add(packages(serial=serial)[0], now=float(i))
    assert [k.first_serial for k in joiner.partials("013912345678")] == [20, 30]
    assert joiner.stats["evicted"] == 1
    joiner.add(packages(phone="999", serial=10)[0], now=5.0)  # other phones are not affected
    assert len(joiner) == 3


def test_message_size_is_limited() -> None:
    big = jt808.UnknownMessage(0x0F0F, bytes(5000))
    joiner = jt808.Reassembler(max_message_size=4096)
    results = [joiner.add(p, now=0.0) for p in packages(big, size=1000)]
    assert results == [None] * 5
    assert joiner.stats["too_large"] >= 1
    assert joiner.stats["completed"] == 0
    assert joiner.buffered_bytes <= 4096


def test_total_size_is_limited_across_phones() -> None:
    joiner = jt808.Reassembler(max_total_size=3000, max_message_size=10_000)
    message = jt808.UnknownMessage(0x0F0F, bytes(3000))
    for phone in ("1", "2", "3", "4"):
        for p in packages(message, phone=phone, size=1000)[:2]:
            joiner.add(p, now=0.0)
        assert joiner.buffered_bytes <= 3000
    assert joiner.stats["over_budget"] >= 1


def test_many_tiny_packages_are_charged_their_overhead() -> None:
    tiny = jt808.UnknownMessage(0x0F0F, bytes(2000))
    joiner = jt808.Reassembler(max_message_size=64 * 1024)
    for p in packages(tiny, size=1):
        joiner.add(p, now=0.0)
    assert joiner.stats["too_large"] == 1  # 2000 × (1 + 64) bytes > 64 KiB


@pytest.mark.parametrize("version", [2013, 2019])
def test_long_messages_round_trip_through_subpackages(version: jt808.Version) -> None:
    batch = jt808.BatchLocation(jt808.BatchType.BACKFILL, (FIX,) * 100)  # 3003 bytes
    frames = jt808.encode_subpackages(batch, phone="1", serial=7, version=version)
    assert len(frames) == 3
    reader, joiner = jt808.FrameReader(), jt808.Reassembler()
    wholes = [joiner.add(p, now=0.0) for p in reader.feed(b"".join(frames))]
    assert wholes[-1] is not None
    assert jt808.decode_packet(wholes[-1]).message == batch
