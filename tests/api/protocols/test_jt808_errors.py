"""JT/T 808 decode errors, each with its stable reason, and the encoder's refusals."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from api.protocols import jt808
from tests.api.protocols.test_jt808_codec import LOCATION_BODY_2013, wire, xor_all

# --- errors by reason -----------------------------------------------------------------------

HEARTBEAT = "0002 0000 013912345678 0001"


def framed(packet_hex: str, check: int | None = None) -> bytes:
    """A frame around a packet, with its correct check code unless one is forced."""
    packet = wire(packet_hex)
    code = xor_all(packet) if check is None else check
    return b"\x7e" + jt808.escape(packet + bytes((code,))) + b"\x7e"


@pytest.mark.parametrize(
    ("frame", "error", "reason"),
    [
        (framed(HEARTBEAT, check=0x34), jt808.FrameError, "bad_checksum"),
        (wire("7E 0002 0000 013912345678 0001 7D03 7E"), jt808.FrameError, "bad_escape"),
        (wire("7E 0002 0000 013912345678 0001 33 7D 7E"), jt808.FrameError, "bad_escape"),
        (wire("7E 0002 7E 0000 013912345678 0001 33 7E"), jt808.FrameError, "bad_escape"),
        (wire("7E 0002 0000 0139 33 7E"), jt808.FrameError, "too_short"),
        (framed("0002 4000 01 0000000001391234"), jt808.HeaderError, "too_short"),
        (framed("0002 2000 013912345678 0001 00"), jt808.HeaderError, "too_short"),
        (framed("0002 0001 013912345678 0001"), jt808.HeaderError, "length_mismatch"),
        (framed("0002 0000 013912345678 0001 00"), jt808.HeaderError, "length_mismatch"),
        (framed("0002 0000 0139123456A8 0001"), jt808.HeaderError, "invalid_bcd"),
        (framed("0002 2000 013912345678 0001 0000 0000"), jt808.HeaderError, "invalid_header"),
        (framed("0002 2000 013912345678 0001 0002 0000"), jt808.HeaderError, "invalid_header"),
        (framed("0002 2000 013912345678 0001 0002 0003"), jt808.HeaderError, "invalid_header"),
        (framed("0002 0001 013912345678 0001 00"), jt808.BodyError, "invalid_body"),
        (framed("0200 0003 013912345678 0001 000000"), jt808.BodyError, "invalid_body"),
        (framed("0002 0400 013912345678 0001"), jt808.BodyError, "unsupported_encryption"),
        (framed("0002 1000 013912345678 0001"), jt808.BodyError, "unsupported_encryption"),
        (framed("0001 0005 013912345678 0001 0001 0200 09"), jt808.BodyError, "invalid_body"),
        (framed("8100 0004 013912345678 0001 0001 01 41"), jt808.BodyError, "invalid_body"),
    ],
)
def test_decode_errors_carry_their_reason(
    frame: bytes, error: type[jt808.Jt808Error], reason: str
) -> None:
    with pytest.raises(error) as caught:
        jt808.decode_frame(frame)
    assert caught.value.reason == reason
    assert reason in jt808.REASONS


def location_frame(body: bytes) -> bytes:
    return framed(f"0200 {len(body):04x} 013912345678 0009" + body.hex())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (LOCATION_BODY_2013[:20], "invalid_body"),  # the fixed part cut short
        (LOCATION_BODY_2013[:22] + wire("241301120000"), "invalid_body"),  # month 13
        (LOCATION_BODY_2013[:22] + wire("2405011200A0"), "invalid_bcd"),  # second nibble A
    ],
)
def test_bad_location_is_a_body_error_with_header(body: bytes, reason: str) -> None:
    with pytest.raises(jt808.BodyError) as caught:
        jt808.decode_frame(location_frame(body))
    assert caught.value.reason == reason
    assert caught.value.header is not None
    assert caught.value.header.serial == 9


@pytest.mark.parametrize(
    ("body", "tail"),
    [
        (LOCATION_BODY_2013[:-1], "e10201"),  # last item cut: 0xE1 says 2 bytes, 1 left
        (LOCATION_BODY_2013 + b"\x05", "05"),  # an item id without its length
    ],
)
def test_additional_items_that_do_not_parse_are_kept_raw(body: bytes, tail: str) -> None:
    """Vendor data after the items is no decode error (issue 18 item 15): the items before it
    are decoded, the rest is kept as hex."""
    fix = jt808.decode_frame(location_frame(body)).message
    assert isinstance(fix, jt808.Location)
    assert (fix.latitude, fix.longitude, fix.mileage_km, fix.satellites) == (
        43.933,
        116.08,
        1234.5,
        12,
    )
    assert fix.raw_tail == tail
    assert jt808.decode_location(jt808.encode_location(fix)) == fix  # round-trips


def test_a_raw_tail_that_would_parse_as_an_item_is_not_encoded() -> None:
    fix = jt808.decode_location(LOCATION_BODY_2013[:28])
    with pytest.raises(ValueError, match="complete item"):
        jt808.encode_location(replace(fix, raw_tail="e10101"))


def test_all_zero_time_decodes_as_none() -> None:
    fix = jt808.decode_frame(location_frame(LOCATION_BODY_2013[:22] + bytes(6))).message
    assert isinstance(fix, jt808.Location)
    assert fix.time is None


def test_known_item_with_unexpected_length_is_kept_raw() -> None:
    body = LOCATION_BODY_2013[:28] + wire("01 02 0102", "2A 02 00FF")
    fix = jt808.decode_frame(location_frame(body)).message
    assert isinstance(fix, jt808.Location)
    assert fix.mileage_km is None
    assert fix.io_status == 0xFF
    assert fix.raw_extras == {0x01: "0102"}


def test_alarm_names_cover_the_first_seven_bits() -> None:
    fix = jt808.decode_location(LOCATION_BODY_2013[:28])
    names = [replace(fix, alarm=1 << bit).alarms for bit in range(7)]
    assert names == [
        {"emergency"},
        {"overspeed"},
        {"fatigue"},
        {"danger_warning"},
        {"gnss_fault"},
        {"gnss_antenna_cut"},
        {"gnss_antenna_short"},
    ]


def test_invalid_gbk_plate_is_invalid_text_not_replaced() -> None:
    body = wire("000F 09C4", "00" * 5, "00" * 20, "00" * 7, "01", "FF FF")
    frame = framed(f"0100 {len(body):04x} 013912345678 0001" + body.hex())
    with pytest.raises(jt808.BodyError) as caught:
        jt808.decode_frame(frame)
    assert caught.value.reason == "invalid_text"


def test_unknown_message_keeps_its_body() -> None:
    frame = framed("0F0F 0003 013912345678 0001 010203")
    assert jt808.decode_frame(frame).message == jt808.UnknownMessage(0x0F0F, b"\x01\x02\x03")


def test_temporary_tracking_stop_accepts_a_trailing_validity() -> None:
    for body in ("0000", "0000 0000003C"):
        frame = framed(f"8202 {len(wire(body)):04x} 013912345678 0001 {body}")
        assert jt808.decode_frame(frame).message == jt808.TemporaryTracking(0)


# --- encoding rules -------------------------------------------------------------------------


def test_2019_only_fields_cannot_be_encoded_as_2013() -> None:
    with pytest.raises(ValueError, match="2013"):
        jt808.encode_body(jt808.Authentication(b"x", imei="860000000000001"), 2013)
    with pytest.raises(ValueError, match="2013"):
        jt808.encode_body(jt808.TextMessage(0, "hi", jt808.TextType.SERVICE), 2013)


def test_a_long_body_needs_subpackages() -> None:
    batch = jt808.BatchLocation(
        jt808.BatchType.NORMAL, (jt808.decode_location(LOCATION_BODY_2013),) * 30
    )
    with pytest.raises(ValueError, match="subpackage"):
        jt808.encode_frame(batch, phone="1", serial=1)
    frames = jt808.encode_subpackages(batch, phone="1", serial=65535)
    headers = [jt808.decode_frame(f).header for f in frames]
    assert [(h.serial, h.package_index, h.package_count) for h in headers] == [
        (65535, 1, 2),
        (0, 2, 2),
    ]


def test_out_of_range_values_are_value_errors() -> None:
    fix = jt808.decode_location(LOCATION_BODY_2013)
    for bad in (
        replace(fix, alarm=1 << 32),
        jt808.Location(0, 0, 0.0, 0.0, 70000, 0.0, 0, None),
        jt808.Location(0, 0, 0.0, 0.0, 0, 0.0, 0, datetime(2024, 1, 1)),  # noqa: DTZ001
        jt808.Location(0, 0, 0.0, 0.0, 0, 0.0, 0, None, fuel_l=-1.0),
        jt808.Location(0, 0, 0.0, 0.0, 0, 0.0, 0, None, raw_extras={0x01: "00000001"}),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per field
            jt808.encode_location(bad)
