"""FrameReader: a TCP stream in any chunking gives the same packets; bad frames are dropped and
counted by reason; memory stays bounded. Ends with a fuzz run of random and mutated frames."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.protocols import jt808
from tests.api.protocols.jt808_strategies import VERSIONS, messages

FIX = jt808.Location(0, 3, 43.9, 116.1, 1000, 10.0, 90, datetime(2024, 5, 1, tzinfo=UTC))


def frame(serial: int, message: jt808.Message = FIX, version: jt808.Version = 2013) -> bytes:
    return jt808.encode_frame(message, phone="13912345678", serial=serial, version=version)


def feed_all(reader: jt808.FrameReader, chunks: list[bytes]) -> list[jt808.Packet]:
    return [packet for chunk in chunks for packet in reader.feed(chunk)]


def test_byte_by_byte_equals_whole_stream() -> None:
    stream = b"".join(frame(i) for i in range(20))
    whole = jt808.FrameReader().feed(stream)
    reader = jt808.FrameReader()
    single = feed_all(reader, [stream[i : i + 1] for i in range(len(stream))])
    assert single == whole
    assert [p.header.serial for p in whole] == list(range(20))
    assert reader.packets == 20
    assert not reader.errors


def test_garbage_before_first_delimiter_and_doubled_delimiters() -> None:
    # Frames may share a delimiter (7E a 7E b 7E) or be separated by 7E 7E; both are normal.
    shared = frame(1) + frame(2)[1:]
    stream = b"GET / HTTP/1.1\r\n" + frame(0) + b"\x7e\x7e" + shared + frame(3)
    reader = jt808.FrameReader()
    assert [p.header.serial for p in reader.feed(stream)] == [0, 1, 2, 3]
    assert reader.skipped_bytes == len(b"GET / HTTP/1.1\r\n")
    assert not reader.errors


def test_bad_frames_are_counted_by_reason_and_the_next_frame_is_read() -> None:
    good = frame(1)
    bad_check = good[:-2] + bytes((good[-2] ^ 1,)) + b"\x7e"
    bad_escape = b"\x7e\x00\x02\x7d\x03" + good[5:]
    short = b"\x7e\x00\x02\x00\x00\x7e"
    bcd = bytearray(good)
    bcd[5] = 0xAB  # a phone byte
    bad_bcd = frame_with_check(bytes(bcd[1:-2]))
    mismatch = frame_with_check(bytes.fromhex("0002 0005 013912345678 0001 00"))
    truncated = good[:10]  # the next frame's opening delimiter ends it
    reader = jt808.FrameReader()

    packets = reader.feed(bad_check + bad_escape + short + bad_bcd + mismatch + truncated + good)

    assert [p.header.serial for p in packets] == [1]
    assert reader.errors == {
        "bad_checksum": 1,
        "bad_escape": 1,
        "too_short": 2,
        "invalid_bcd": 1,
        "length_mismatch": 1,
    }
    assert reader.last_error is not None
    assert reader.last_error.reason == "too_short"


def frame_with_check(packet: bytes) -> bytes:
    return b"\x7e" + jt808.escape(packet + bytes((jt808.checksum(packet),))) + b"\x7e"


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
def test_oversized_frame_is_dropped_without_buffering_it(chunk: int) -> None:
    reader = jt808.FrameReader(max_frame_size=64)
    stream = (
        frame(1) + b"\x7e" + b"\x01" * 1000 + b"\x7e" + frame(2) + b"\x7e" + bytes(65) + frame(3)
    )
    packets = []
    for i in range(0, len(stream), chunk):
        packets += reader.feed(stream[i : i + chunk])
        assert reader.buffered <= 64
    assert [p.header.serial for p in packets] == [1, 2, 3]
    assert reader.errors == {"oversized": 2}
    assert reader.skipped_bytes == 1000 + 65


def test_a_frame_of_exactly_the_maximum_size_is_accepted() -> None:
    good = frame(5)
    reader = jt808.FrameReader(max_frame_size=len(good) - 2)
    assert len(reader.feed(good[:10]) + reader.feed(good[10:])) == 1
    reader = jt808.FrameReader(max_frame_size=len(good) - 3)
    assert reader.feed(good) == []
    assert reader.errors == {"oversized": 1}


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    version=st.sampled_from(VERSIONS),
    separators=st.lists(st.sampled_from([b"", b"\x7e", b"\x7e\x7e"]), min_size=8, max_size=8),
)
def test_any_chunking_gives_the_same_packets(
    data: st.DataObject, version: jt808.Version, separators: list[bytes]
) -> None:
    sent = data.draw(st.lists(messages(version), min_size=1, max_size=8))
    frames = []
    for serial, message in enumerate(sent):
        if len(jt808.encode_body(message, version)) <= 1023:
            frames.append(frame(serial, message, version))
    stream = b"".join(f + sep for f, sep in zip(frames, separators, strict=False))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    reader = jt808.FrameReader()

    packets = feed_all(reader, chunks)

    assert packets == jt808.FrameReader().feed(stream)
    assert [jt808.decode_packet(p).message for p in packets] == [
        jt808.decode_frame(f).message for f in frames
    ]
    assert not reader.errors
    assert reader.buffered == 0


# --- fuzz -----------------------------------------------------------------------------------


def _seed_frames() -> list[bytes]:
    rng = random.Random(808)
    seeds = [frame(i, FIX, version) for i, version in enumerate(VERSIONS)]
    seeds += jt808.encode_subpackages(
        jt808.BatchLocation(jt808.BatchType.BACKFILL, (FIX,) * 3),
        phone="1",
        serial=9,
        package_size=40,
    )
    seeds.append(frame(3, jt808.Register(15, 2500, "GRIDP", "GP-808", "T1", 2, "蒙H·12345"), 2019))
    seeds.append(frame(4, jt808.Authentication(b"\x7e\x7d" * 3)))
    seeds.append(frame(5, jt808.ResendRequest(7, (1, 2, 3)), 2019))
    seeds.append(frame(6, jt808.TextMessage(1, "巡逻", jt808.TextType.SERVICE), 2019))
    seeds.append(frame(rng.randrange(65536), jt808.UnknownMessage(0x0F0F, bytes(range(20)))))
    return seeds


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    kind = rng.randrange(8)
    if kind == 0:  # pure noise, sometimes framed
        noise = rng.randbytes(rng.randrange(0, 80))
        return b"\x7e" + noise + b"\x7e" if rng.random() < 0.5 else noise
    if kind == 1:  # flip bits
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # insert special or random bytes
        for _ in range(rng.randrange(1, 4)):
            data.insert(rng.randrange(len(data)), rng.choice((0x7D, 0x7E, rng.randrange(256))))
    elif kind == 3:  # delete a run
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 10)]
    elif kind == 4:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 5:  # rewrite header bytes (properties, phone) then fix the check code
        inner = bytearray(jt808.unescape(bytes(data[1:-1])))
        for _ in range(rng.randrange(1, 3)):
            inner[rng.randrange(min(len(inner) - 1, 18))] = rng.randrange(256)
        packet = bytes(inner[:-1])
        return frame_with_check(packet)
    elif kind == 6:  # body surgery with a consistent length field and check code
        return frame_with_check(_reshape_body(rng, jt808.unescape(bytes(data[1:-1]))[:-1]))
    # kind 7: a valid frame left as is
    return bytes(data)


def _reshape_body(rng: random.Random, packet: bytes) -> bytes:
    """Change, cut or extend the body, then rewrite the body length so only the body is wrong."""
    header = jt808.decode_header(packet)
    body = bytearray(packet[header.size :])
    for _ in range(rng.randrange(0, 3)):
        if body:
            body[rng.randrange(len(body))] = rng.randrange(256)
    if rng.random() < 0.5:
        del body[rng.randrange(len(body) + 1) :]
    else:
        body += rng.randbytes(rng.randrange(0, 8))
    props = int.from_bytes(packet[2:4], "big") & ~0x03FF | len(body)
    return packet[:2] + props.to_bytes(2, "big") + packet[4 : header.size] + bytes(body)


def test_fuzz_random_and_mutated_frames() -> None:
    rng = random.Random(20240501)
    seeds = _seed_frames()
    reader = jt808.FrameReader(max_frame_size=512)
    joiner = jt808.Reassembler(max_message_size=4096, max_total_size=16384)
    decoded = dropped = 0
    for i in range(100_000):
        blob = _mutate(rng, seeds)
        try:
            jt808.decode_frame(blob)
            decoded += 1
        except jt808.Jt808Error:
            dropped += 1
        # The same bytes through the stream path, in one or two chunks.
        cut = rng.randrange(len(blob) + 1)
        for packet in reader.feed(blob[:cut]) + reader.feed(blob[cut:]):
            whole = joiner.add(packet, now=i / 1000)
            if whole is not None:
                with contextlib.suppress(jt808.BodyError):
                    jt808.decode_packet(whole)
        if rng.random() < 0.001:
            reader.feed(rng.randbytes(2000))  # a long run without delimiters
        assert reader.buffered <= 512
        assert joiner.buffered_bytes <= 16384
    assert decoded > 10_000
    assert dropped > 10_000
    assert reader.packets > 10_000
    assert set(reader.errors) <= set(jt808.REASONS)
    assert {"bad_checksum", "bad_escape", "oversized", "too_short"} <= set(reader.errors)
