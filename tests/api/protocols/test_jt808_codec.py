"""JT/T 808 codec: golden frames written from the standard's field tables, header fields, and
encode → decode round trips of every message type in both editions.

Golden frames are spelled out byte by byte with the field each byte belongs to; their check codes
are asserted against a plain ``functools.reduce(xor, …)`` so the expectation does not depend on
the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from operator import xor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.protocols import jt808
from tests.api.protocols.jt808_strategies import (
    MESSAGE_TYPES,
    VERSIONS,
    locations,
    message_strategies,
    phones,
)


def wire(*parts: str) -> bytes:
    """Join hex fields (spaces allowed) into bytes."""
    return bytes.fromhex("".join(parts).replace(" ", ""))


def xor_all(data: bytes) -> int:
    return reduce(xor, data, 0)


# --- golden frames -------------------------------------------------------------------------


def test_golden_2013_heartbeat() -> None:
    packet = wire(
        "0002",  # msg id 0x0002 终端心跳
        "0000",  # properties: body length 0, no encryption, not subpackaged, 2013
        "013912345678",  # phone BCD[6]
        "0001",  # serial 1
    )
    check = "33"
    assert xor_all(packet) == 0x33
    frame = wire("7E", packet.hex(), check, "7E")

    decoded = jt808.decode_frame(frame)

    assert decoded.header == jt808.Header(0x0002, "013912345678", 1)
    assert decoded.message == jt808.Heartbeat()
    assert jt808.decode_frame(frame[1:-1]) == decoded  # delimiters are optional
    assert jt808.encode_frame(jt808.Heartbeat(), phone="13912345678", serial=1) == frame


LOCATION_BODY_2013 = wire(
    "00000001",  # alarm DWORD: bit 0 emergency
    "00000003",  # status DWORD: bit 0 ACC on, bit 1 positioned; north, east
    "029E5D48",  # latitude DWORD 43933000 → 43.933°
    "06EB3D80",  # longitude DWORD 116080000 → 116.08°
    "03DE",  # altitude WORD 990 m
    "01C2",  # speed WORD 450 × 0.1 km/h = 45 km/h = 12.5 m/s
    "010E",  # direction WORD 270°
    "240501120000",  # time BCD[6] 2024-05-01 12:00:00 GMT+8 = 04:00 UTC
    "01 04 00003039",  # item 0x01 mileage DWORD 12345 × 0.1 km
    "30 01 19",  # item 0x30 wireless signal strength 25
    "31 01 0C",  # item 0x31 GNSS satellites 12
    "E1 02 0102",  # item 0xE1, unknown to the standard: kept raw
)


def test_golden_2013_location() -> None:
    assert len(LOCATION_BODY_2013) == 0x2C
    packet = wire("0200", "002C", "013912345678", "0007") + LOCATION_BODY_2013
    assert xor_all(packet) == 0x19
    frame = wire("7E") + packet + wire("19", "7E")

    decoded = jt808.decode_frame(frame)

    assert decoded.header.msg_id == 0x0200
    assert decoded.header.serial == 7
    fix = decoded.message
    assert isinstance(fix, jt808.Location)
    assert fix.alarms == {"emergency"}
    assert fix.acc_on
    assert fix.positioned
    assert not fix.out_of_service
    assert (fix.latitude, fix.longitude) == (43.933, 116.08)
    assert fix.altitude == 990
    assert fix.speed_ms == pytest.approx(12.5)
    assert fix.speed_kmh == pytest.approx(45.0)
    assert fix.direction == 270
    assert fix.time == datetime(2024, 5, 1, 4, 0, 0, tzinfo=UTC)
    assert fix.mileage_km == 1234.5
    assert (fix.signal_strength, fix.satellites) == (25, 12)
    assert fix.fuel_l is None
    assert fix.raw_extras == {0xE1: "0102"}
    assert jt808.encode_frame(fix, phone="013912345678", serial=7) == frame


def test_golden_2019_register_with_gbk_plate() -> None:
    body = wire(
        "000F",  # province WORD 15 内蒙古
        "09C4",  # city WORD 2500 锡林郭勒盟 (GB/T 2260 152500)
        "4752494450 000000000000",  # manufacturer BYTE[11] "GRIDP" + 0x00 padding
        "47502D383038" + "00" * 24,  # model BYTE[30] "GP-808"
        "5431323334353637" + "00" * 22,  # terminal id BYTE[30] "T1234567"
        "02",  # plate colour BYTE 2 yellow
        "C3C9 48 A1A4 3132333435",  # plate STRING GBK 蒙 H · 12345
    )
    assert len(body) == 86
    packet = wire(
        "0100",  # msg id 0x0100 终端注册
        "4056",  # properties: bit 14 version flag, body length 0x56 = 86
        "01",  # protocol version 1
        "00000000013912345678",  # phone BCD[10]
        "002A",  # serial 42
    )
    packet += body
    assert xor_all(packet) == 0x9C
    frame = wire("7E") + packet + wire("9C", "7E")

    decoded = jt808.decode_frame(frame)

    assert decoded.header == jt808.Header(
        0x0100, "00000000013912345678", 42, 2019, protocol_version=1, body_length=86
    )
    assert decoded.message == jt808.Register(
        15, 2500, "GRIDP", "GP-808", "T1234567", 2, "蒙H·12345"
    )
    again = jt808.encode_frame(decoded.message, phone="13912345678", serial=42, version=2019)
    assert again == frame


def test_golden_2019_authentication_keeps_code_as_bytes() -> None:
    body = wire(
        "08",  # auth code length BYTE
        "4155544831323334",  # auth code "AUTH1234"
        "383630303030303030303030303031",  # IMEI BYTE[15] "860000000000001"
        "56312E302E30" + "00" * 14,  # software version BYTE[20] "V1.0.0"
    )
    packet = wire("0102", "402C", "01", "00000000013912345678", "0003") + body
    assert xor_all(packet) == 0x01
    frame = wire("7E") + packet + wire("01", "7E")

    message = jt808.decode_frame(frame).message

    assert message == jt808.Authentication(b"AUTH1234", "860000000000001", "V1.0.0")


def test_golden_escapes_in_body_and_check_code_7e() -> None:
    # 0x8001 answering serial 0x7E7D: the body holds both special bytes, and serial 0x00CB makes
    # the check code itself 0x7E.
    packet = wire("8001", "0005", "013912345678", "00CB", "7E7D", "0200", "00")
    assert xor_all(packet) == 0x7E
    frame = wire(
        "7E",
        "8001 0005 013912345678 00CB",
        "7D02 7D01",  # answered serial 0x7E7D, escaped
        "0200 00",  # answered id 0x0200, result 0
        "7D02",  # check code 0x7E, escaped
        "7E",
    )
    reply = jt808.PlatformGeneralReply(0x7E7D, 0x0200, jt808.ReplyResult.SUCCESS)

    assert jt808.encode_frame(reply, phone="13912345678", serial=0xCB) == frame
    assert jt808.decode_frame(frame).message == reply
    assert jt808.unescape(frame[1:-1]) == packet + b"\x7e"


def test_golden_check_code_7d() -> None:
    packet = wire("8001 0005 013912345678 00C8 7E7D 0200 00")
    assert xor_all(packet) == 0x7D
    frame = wire("7E 8001 0005 013912345678 00C8 7D02 7D01 0200 00", "7D01", "7E")

    reply = jt808.PlatformGeneralReply(0x7E7D, 0x0200, jt808.ReplyResult.SUCCESS)
    assert jt808.encode_frame(reply, phone="013912345678", serial=0xC8) == frame
    assert jt808.decode_frame(frame).message == reply


def test_golden_2013_subpackaged_batch_reassembles() -> None:
    location = wire(
        "00000000",  # alarm
        "0000000E",  # status: positioned, south, west
        "0204CC00",  # latitude 33868800 → 33.8688° S
        "09034554",  # longitude 151209300 → 151.2093° W
        "0010",  # altitude 16 m
        "0000",  # speed 0
        "013B",  # direction 315°
        "991231235959",  # 2099-12-31 23:59:59 GMT+8
    )
    package_1 = wire(
        "0704",  # msg id 0x0704 定位数据批量上传
        "2005",  # properties: bit 13 subpackage, body length 5
        "013912345678 0010",  # phone, serial 16
        "0002 0001",  # package count 2, index 1
        "0001 01 001C",  # body part 1: count 1, type 1 (blind-area backfill), item length 28
    )
    package_2 = wire("0704 201C 013912345678 0011 0002 0002") + location
    assert (xor_all(package_1), xor_all(package_2)) == (0x19, 0x72)
    frames = [wire("7E") + package_1 + wire("19 7E"), wire("7E") + package_2 + wire("72 7E")]
    reader, joiner = jt808.FrameReader(), jt808.Reassembler()

    packets = [p for f in reversed(frames) for p in reader.feed(f)]  # out of order
    assert isinstance(jt808.decode_packet(packets[0]).message, jt808.Fragment)
    whole = [joiner.add(p, now=0.0) for p in packets]

    assert whole[0] is None
    assert whole[1] is not None
    frame = jt808.decode_packet(whole[1])
    assert frame.header.serial == 0x0010
    assert not frame.header.subpackaged
    batch = frame.message
    assert isinstance(batch, jt808.BatchLocation)
    assert batch.kind == jt808.BatchType.BACKFILL
    (fix,) = batch.locations
    assert (fix.latitude, fix.longitude) == (-33.8688, -151.2093)
    assert fix.time == datetime(2099, 12, 31, 15, 59, 59, tzinfo=UTC)
    assert whole[1].body == package_1[-5:] + location


# --- header ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_header_round_trip_with_package_fields(version: jt808.Version) -> None:
    header = jt808.Header(
        0x0704,
        "1" * (12 if version == 2013 else 20),
        65535,
        version,
        protocol_version=7 if version == 2019 else 0,
        body_length=3,
        package_count=9,
        package_index=9,
    )
    packed = jt808.encode_header(header) + b"abc"
    assert len(packed) == header.size + 3 == (19 if version == 2013 else 24)
    assert jt808.decode_header(packed) == header


def test_phone_is_left_padded_and_kept_as_sent() -> None:
    frame = jt808.encode_frame(jt808.Heartbeat(), phone="1", serial=0, version=2019)
    assert jt808.decode_frame(frame).header.phone == "0" * 19 + "1"
    with pytest.raises(ValueError, match="digits"):
        jt808.encode_frame(jt808.Heartbeat(), phone="1390000000a", serial=0)
    with pytest.raises(ValueError, match="digits"):
        jt808.encode_frame(jt808.Heartbeat(), phone="1" * 13, serial=0)


# --- round trips ----------------------------------------------------------------------------


def round_trip(message: jt808.Message, phone: str, serial: int, version: jt808.Version) -> None:
    """Encode, then decode through the public paths, and compare."""
    body = jt808.encode_body(message, version)
    if len(body) <= 1023:
        frame = jt808.decode_frame(
            jt808.encode_frame(message, phone=phone, serial=serial, version=version)
        )
    else:
        joiner, reader, whole = jt808.Reassembler(), jt808.FrameReader(), None
        stream = b"".join(
            jt808.encode_subpackages(message, phone=phone, serial=serial, version=version)
        )
        for packet in reader.feed(stream):
            whole = joiner.add(packet, now=0.0) or whole
        assert whole is not None
        frame = jt808.decode_packet(whole)
    assert frame.message == message
    assert type(frame.message) is type(message)
    assert frame.header.phone == phone.rjust(12 if version == 2013 else 20, "0")
    assert frame.header.serial == serial
    assert frame.header.version == version


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_every_message_type_round_trips(kind: str, version: jt808.Version) -> None:
    @settings(max_examples=60, deadline=None)
    @given(
        message=message_strategies(version)[kind],
        phone=phones(version),
        serial=st.integers(0, 0xFFFF),
    )
    def check(message: jt808.Message, phone: str, serial: int) -> None:
        round_trip(message, phone, serial, version)

    check()


@settings(max_examples=300, deadline=None)
@given(location=locations())
def test_location_body_round_trips_exactly(location: jt808.Location) -> None:
    assert jt808.decode_location(jt808.encode_location(location)) == location
