"""A seeded mutation fuzzer for the JT/T 808 codec (no I/O), shared by the codec fuzz test and
``bench/bench_fuzz_jt808.py``.

Seeds are valid packets of every message kind in both editions, subpackaged ones included. Each
fuzz frame is a seed mutated at the packet level (bit flips, special bytes 0x7D/0x7E, truncation,
dropped or repeated slices, inserted garbage, any message id, any properties word — length,
encryption, subpackage and version bits — impossible package count/index, bad BCD in the phone)
and then framed one of several ways: a correct check code (so it reaches header and body
decoding), a mutated body with its length repaired (so it reaches the body decoders), a wrong
check code, a broken escape, no delimiters, or random bytes.

Every frame goes through the stream reader (fed in random chunk sizes), the subpackage
reassembler and ``decode_packet``, and separately through ``decode_frame``. The codec may refuse
a frame only with its own ``Jt808Error`` (``reason`` in ``REASONS``); anything else is a crash
and is recorded with the frame that caused it.
"""

from __future__ import annotations

import contextlib
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from api.protocols import jt808
from api.protocols.jt808.header import Version

PHONE = "013912345678"
# a report with an unknown extra: the seed of every location message
LOCATION = jt808.Location(
    1, 3, 43.9, 116.1, 1000, 10.0, 90, datetime(2024, 5, 1, 8, 30, tzinfo=UTC), mileage_km=12.5,
    satellites=9, raw_extras={0xE0: "abcd"},
)  # fmt: skip


def seed_packets(phone: str = PHONE) -> list[bytes]:
    """Valid packets (header + body, unescaped, without check code) of every kind."""
    location = LOCATION
    messages: list[jt808.Message] = [
        jt808.Heartbeat(),
        jt808.Unregister(),
        location,
        jt808.BatchLocation(jt808.BatchType.BACKFILL, (location,) * 3),
        jt808.PositionQuery(),
        jt808.PositionQueryReply(7, location),
        jt808.TerminalGeneralReply(3, 0x8300, jt808.ReplyResult.SUCCESS),
        jt808.PlatformGeneralReply(3, 0x0200, jt808.ReplyResult.SUCCESS),
        jt808.Register(15, 2501, "MAKER", "MODEL", "ID00001", 2, "蒙H·12345"),
        jt808.RegisterReply(4, jt808.RegisterResult.SUCCESS, b"CODE"),
        jt808.TemporaryTracking(10, 600),
        jt808.UnknownMessage(0x0900, b"\x01\x02\x03\x7d\x7e"),
        jt808.ResendRequest(5, (1, 2)),
    ]
    packets = []
    for version in (2013, 2019):
        extra: list[jt808.Message] = (
            [jt808.Authentication(b"ABCDEF0123456789")]
            if version == 2013
            else [jt808.Authentication(b"ABCDEF", "IMEI0000000001", "1.0.0")]
        )
        text = jt808.TextMessage(1, "请到 3 号网格")
        packets += packets_of([*messages, *extra, text], location, phone, version)
    return packets


def packets_of(
    messages: list[jt808.Message], location: jt808.Location, phone: str, version: Version
) -> list[bytes]:
    """Each message as a packet (header + body, unescaped, without check code), then a batch
    of 12 ``location`` reports split into subpackages of 120 bytes."""
    packets = []
    for serial, message in enumerate(messages):
        frame = jt808.encode_frame(message, phone=phone, serial=serial, version=version)
        packets.append(jt808.unescape(frame[1:-1])[:-1])
    long = jt808.BatchLocation(jt808.BatchType.NORMAL, (location,) * 12)
    frames = jt808.encode_subpackages(
        long, phone=phone, serial=100, version=version, package_size=120
    )
    return packets + [jt808.unescape(f[1:-1])[:-1] for f in frames]


def mutate(rng: random.Random, data: bytes) -> bytes:  # noqa: PLR0912 - a branch per edit
    """One to four random edits of a packet (header + body)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out += rng.randbytes(rng.randint(1, 20))
        op = rng.randrange(11)
        pos = rng.randrange(len(out))
        if op == 0:  # flip a bit
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:  # a special byte: delimiter, escape, 0, 0xFF, or anything
            out[pos] = rng.choice((0x7E, 0x7D, 0x00, 0xFF, rng.randrange(256)))
        elif op == 2:  # truncated
            del out[pos:]
        elif op == 3:  # a slice dropped
            del out[pos : pos + rng.randint(1, 8)]
        elif op == 4:  # a slice repeated
            out[pos:pos] = out[pos : pos + rng.randint(1, 32)]
        elif op == 5:  # garbage inserted
            out[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 6 and len(out) >= 2:  # any message id
            msg_id = rng.choice((rng.randrange(65536), 0x0200, 0x0704, 0x0102, 0x0100, 0x8003))
            out[0:2] = msg_id.to_bytes(2, "big")
        elif op == 7 and len(out) >= 4:  # any properties word
            out[2:4] = rng.randrange(65536).to_bytes(2, "big")
        elif op == 8 and len(out) >= 4:  # body length off by a little or a lot
            props = int.from_bytes(out[2:4], "big")
            length = (props & 0x3FF) + rng.choice((-2, -1, 1, 2, 512, 1023))
            out[2:4] = ((props & ~0x3FF) | (length & 0x3FF)).to_bytes(2, "big")
        elif op == 9 and len(out) >= 4:  # subpackage bit set/cleared; impossible count/index
            props = int.from_bytes(out[2:4], "big") ^ (1 << 13)
            out[2:4] = props.to_bytes(2, "big")
            if props & (1 << 13) and len(out) > 16:
                at = 12 if not props & (1 << 14) else 17
                field = rng.choice((0, 1, rng.randrange(65536), 65535))
                out[at : at + 2] = field.to_bytes(2, "big")
        elif op == 10 and len(out) > 6:  # a BCD nibble above 9 in the phone
            at = rng.randrange(4, min(len(out), 10))
            out[at] = (out[at] & 0x0F) | (rng.randrange(10, 16) << 4)
    return bytes(out)


def mutate_body(rng: random.Random, packet: bytes) -> bytes:
    """Mutate only the body and write its new length into the header, so the frame passes the
    framing and header checks and the body decoders see the damage."""
    size = jt808.decode_header(packet).size
    head, body = bytearray(packet[:size]), bytearray(packet[size:])
    for _ in range(rng.randint(1, 3)):
        if not body:
            body += rng.randbytes(rng.randint(1, 20))
        pos = rng.randrange(len(body))
        op = rng.randrange(5)
        if op == 0:
            body[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            body[pos] = rng.choice((0x7E, 0x7D, 0x00, 0xFF, 0x80, rng.randrange(256)))
        elif op == 2:
            del body[pos:]
        elif op == 3:
            body[pos:pos] = rng.randbytes(rng.randint(1, 32))
        else:
            body[pos:pos] = body[pos : pos + rng.randint(1, 64)]
    del body[1023:]
    props = int.from_bytes(head[2:4], "big")
    head[2:4] = ((props & ~0x3FF) | len(body)).to_bytes(2, "big")
    return bytes(head + body)


def wire(packet: bytes) -> bytes:
    return b"\x7e" + jt808.escape(packet + bytes((jt808.checksum(packet),))) + b"\x7e"


def fuzz_frames(rng: random.Random, packets: list[bytes], n: int) -> Iterator[bytes]:
    """``n`` fuzz frames (see the module docstring for the mix)."""
    for _ in range(n):
        roll = rng.random()
        packet = rng.choice(packets)
        if roll < 0.05:  # random bytes, delimiters or not
            yield rng.randbytes(rng.randint(0, 64))
        elif roll < 0.35:  # mutated packet, correct check code: reaches the header decoder
            yield wire(mutate(rng, packet))
        elif roll < 0.60:  # mutated body, length and check code right: reaches body decoders
            yield wire(mutate_body(rng, packet))
        elif roll < 0.75:  # correct packet or mutated, wrong check code
            body = mutate(rng, packet) if rng.random() < 0.5 else packet
            check = (jt808.checksum(body) + rng.randint(1, 255)) & 0xFF
            yield b"\x7e" + jt808.escape(body + bytes((check,))) + b"\x7e"
        elif roll < 0.85:  # a broken escape sequence
            framed = bytearray(wire(packet))
            at = rng.randrange(1, max(2, len(framed) - 1))
            framed[at:at] = rng.choice((b"\x7d", b"\x7d\x03", b"\x7d\x00", b"\x7d\x7e"))
            yield bytes(framed)
        elif roll < 0.92:  # mutated on the wire (after escaping)
            yield mutate(rng, wire(packet))
        else:  # no delimiters at one or both ends
            bare = wire(mutate(rng, packet))
            yield bare[1:] if rng.random() < 0.5 else bare[1:-1]


@dataclass
class FuzzReport:
    """What the codec did with the fuzz frames."""

    frames: int = 0
    decoded: int = 0
    reassembled: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str]] = field(default_factory=list)  # (error, frame hex)
    max_frame_s: float = 0.0
    frame_seconds: array[float] = field(default_factory=lambda: array("d"))
    reader_max_buffered: int = 0
    reassembly_max_bytes: int = 0


def _crash(report: FuzzReport, exc: BaseException, frame: bytes) -> None:
    if len(report.crashes) < 20:
        report.crashes.append((f"{type(exc).__name__}: {exc}", frame.hex()))
    else:
        report.crashes.append((type(exc).__name__, ""))


def _stream(
    rng: random.Random,
    frame: bytes,
    reader: jt808.FrameReader,
    joiner: jt808.Reassembler,
    report: FuzzReport,
    *,
    now: float,
) -> None:
    """The frame's bytes fed to the stream reader in up to three random chunks, packets
    reassembled when subpackaged, then decoded (refusals are the reader's to count)."""
    cuts = sorted(rng.sample(range(len(frame) + 1), k=min(2, len(frame) + 1)))
    for chunk in (frame[: cuts[0]], frame[cuts[0] : cuts[-1]], frame[cuts[-1] :]):
        for packet in reader.feed(chunk):
            whole = joiner.add(packet, now=now)
            if whole is None:
                continue
            if whole is not packet:
                report.reassembled += 1
            with contextlib.suppress(jt808.Jt808Error):
                jt808.decode_packet(whole)


def run_fuzz(
    n: int,
    *,
    seed: int = 808,
    sample_every: int = 1,
    every: int = 0,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """Push ``n`` fuzz frames through the codec; one in ``sample_every`` frames is timed (both
    paths), and ``progress`` is called with the report every ``every`` frames."""
    rng = random.Random(seed)
    packets = seed_packets()
    reader = jt808.FrameReader(max_frame_size=4096)
    joiner = jt808.Reassembler(max_message_size=64 << 10, max_total_size=4 << 20)
    report = FuzzReport()
    clock = 0.0
    for i, frame in enumerate(fuzz_frames(rng, packets, n)):
        timed = i % sample_every == 0
        start = time.perf_counter() if timed else 0.0
        clock += 0.01
        # 1. a single frame, as ``decode_frame`` sees it
        try:
            jt808.decode_frame(frame)
        except jt808.Jt808Error as exc:
            report.refused[exc.reason] += 1
        except Exception as exc:  # noqa: BLE001 - a crash is what the fuzzer looks for
            _crash(report, exc, frame)
        else:
            report.decoded += 1
        # 2. the same bytes in the stream, cut into random chunks, then reassembled
        try:
            _stream(rng, frame, reader, joiner, report, now=clock)
        except Exception as exc:  # noqa: BLE001
            _crash(report, exc, frame)
        if timed:
            spent = time.perf_counter() - start
            report.frame_seconds.append(spent)
            report.max_frame_s = max(report.max_frame_s, spent)
        report.reader_max_buffered = max(report.reader_max_buffered, reader.buffered)
        report.reassembly_max_bytes = max(report.reassembly_max_bytes, joiner.buffered_bytes)
        report.frames += 1
        if progress is not None and every and report.frames % every == 0:
            progress(report)
    for reason, count in reader.errors.items():
        report.refused[f"stream:{reason}"] += count
    return report
