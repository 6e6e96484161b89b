"""The 0x0200 location body (位置信息汇报) and the messages carrying it: 0x0200, 0x0201, 0x0704.

Fixed part (28 bytes, big-endian)::

    alarm DWORD | status DWORD | latitude DWORD | longitude DWORD | altitude WORD
    | speed WORD (0.1 km/h) | direction WORD | time BCD[6] YYMMDDhhmmss (GMT+8)

then additional items (附加信息) ``id BYTE | length BYTE | value``. Many terminals append vendor
data that does not parse that way (blocks with word lengths, padding, a stray byte): decoding
stops at the first item that does not fit, keeps the items before it, and keeps the rest of the
body as hex in ``raw_tail``, so the position is not lost for a vendor's tail (the fixed part must
still be whole and its date possible). Coordinates are 1e-6 degrees,
unsigned; status bit 2 (south) and bit 3 (west) give the hemispheres, so ``latitude`` and
``longitude`` here are signed degrees and the encoder derives those two bits from their signs.
Values are decoded faithfully, not judged: a latitude of 91° or a course of 400 passes through,
the ingest filter decides. An all-zero time (sent by terminals that never had a fix) decodes as
``None``; any other impossible date is an error.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar, Final, Self

from api.protocols.jt808.errors import BodyError
from api.protocols.jt808.header import Version
from gis.units import CHINA_OFFSET

_FIXED: Final = struct.Struct(">IIIIHHH6s")
_H: Final = struct.Struct(">H")
_HB: Final = struct.Struct(">HB")
FIXED_SIZE: Final = _FIXED.size  # 28
_GMT8: Final = CHINA_OFFSET  # the wire's GMT+8 is China's time
_NO_TIME: Final = bytes(6)
SOUTH: Final = 1 << 2
WEST: Final = 1 << 3

# BCD byte → 0–99, or -1 when a nibble is above 9 (one table look-up per time field).
_BCD_VALUE: Final = tuple(
    (b >> 4) * 10 + (b & 0xF) if b >> 4 < 10 and b & 0xF < 10 else -1 for b in range(256)
)

ALARM_NAMES: Final[dict[int, str]] = {
    0: "emergency",
    1: "overspeed",
    2: "fatigue",
    3: "danger_warning",
    4: "gnss_fault",
    5: "gnss_antenna_cut",
    6: "gnss_antenna_short",
    7: "power_undervoltage",
    8: "power_off",
    9: "display_fault",
    10: "tts_fault",
    11: "camera_fault",
    12: "ic_card_fault",
    13: "overspeed_warning",
    14: "fatigue_warning",
    18: "driving_time_exceeded",
    19: "parking_overtime",
    20: "area_in_out",
    21: "route_in_out",
    22: "route_time_abnormal",
    23: "route_deviation",
    24: "vss_fault",
    25: "fuel_abnormal",
    26: "stolen",
    27: "illegal_ignition",
    28: "illegal_displacement",
    29: "collision_warning",
    30: "rollover_warning",
    31: "illegal_door_open",
}

# Additional item id → (field name, value size in bytes, wire units per field unit). Dividing by
# 10 (not multiplying by 0.1) keeps 3 → 0.3 exact, so values round-trip.
EXTRA_ITEMS: Final[dict[int, tuple[str, int, int]]] = {
    0x01: ("mileage_km", 4, 10),
    0x02: ("fuel_l", 2, 10),
    0x03: ("recorder_speed_kmh", 2, 10),
    0x04: ("alarm_event_id", 2, 1),
    0x25: ("vehicle_signal", 4, 1),
    0x2A: ("io_status", 2, 1),
    0x2B: ("analog", 4, 1),
    0x30: ("signal_strength", 1, 1),
    0x31: ("satellites", 1, 1),
}
_SCALED: Final = frozenset(i for i, (_, _, per_unit) in EXTRA_ITEMS.items() if per_unit != 1)


class BatchType(IntEnum):
    """Kind of a 0x0704 batch."""

    NORMAL = 0
    BACKFILL = 1  # blind-area backfill (盲区补报)


@dataclass(frozen=True, slots=True)
class Location:
    """A location report (0x0200 body).

    Attributes
    ----------
    alarm : int
        Alarm flags DWORD as sent; ``alarms`` names the set bits.
    status : int
        Status flags DWORD as sent (bit 0 ACC on, 1 positioned, 2 south, 3 west, 4 out of
        service, 5 coordinates encrypted).
    latitude, longitude : float
        Signed degrees (south and west negative), resolution 1e-6°.
    altitude : int
        Metres (WORD, unsigned as the 2013 table says).
    speed_ms : float
        Speed in m/s (the wire carries 0.1 km/h).
    direction : int
        Degrees clockwise from north, 0–359.
    time : datetime or None
        Aware UTC time of the fix (the wire carries GMT+8); None for an all-zero time.
    mileage_km, fuel_l, recorder_speed_kmh : float or None
        Additional items 0x01 (0.1 km), 0x02 (0.1 L), 0x03 (0.1 km/h), in km, L, km/h.
    alarm_event_id, vehicle_signal, io_status, analog, signal_strength, satellites : int or None
        Additional items 0x04, 0x25, 0x2A, 0x2B, 0x30, 0x31 as raw integers.
    raw_extras : dict[int, str]
        Every other additional item (unknown id, or a known id with an unexpected length):
        item id → value as lowercase hex. Nothing the terminal sent is dropped.
    raw_tail : str
        The undecodable rest of the additional information, from the first byte that does not
        start a complete ``id | length | value`` item, as lowercase hex ("" when all parsed).
    """

    MSG_ID: ClassVar[int] = 0x0200

    alarm: int
    status: int
    latitude: float
    longitude: float
    altitude: int
    speed_ms: float
    direction: int
    time: datetime | None
    mileage_km: float | None = None
    fuel_l: float | None = None
    recorder_speed_kmh: float | None = None
    alarm_event_id: int | None = None
    vehicle_signal: int | None = None
    io_status: int | None = None
    analog: int | None = None
    signal_strength: int | None = None
    satellites: int | None = None
    raw_extras: dict[int, str] = field(default_factory=dict)
    raw_tail: str = ""

    @property
    def alarms(self) -> frozenset[str]:
        """Names of the set alarm bits (bits without a name are left out; ``alarm`` has all)."""
        return frozenset(name for bit, name in ALARM_NAMES.items() if self.alarm >> bit & 1)

    @property
    def acc_on(self) -> bool:
        """Status bit 0: ignition (ACC) on."""
        return bool(self.status & 1)

    @property
    def positioned(self) -> bool:
        """Status bit 1: the GNSS fix is valid (定位)."""
        return bool(self.status & 2)

    @property
    def out_of_service(self) -> bool:
        """Status bit 4: vehicle out of operation (停运)."""
        return bool(self.status & 16)

    @property
    def coordinates_encrypted(self) -> bool:
        """Status bit 5: latitude/longitude encrypted by a confidentiality plug-in."""
        return bool(self.status & 32)

    @property
    def speed_kmh(self) -> float:
        """Speed in km/h."""
        return self.speed_ms * 3.6


def decode_location(body: bytes) -> Location:
    """Decode a 0x0200 body (the fixed 28 bytes and any additional items).

    Parameters
    ----------
    body : bytes
        The body, exactly (a 0x0704 item or the part of 0x0201 after the serial).

    Returns
    -------
    Location
        The report.

    Raises
    ------
    BodyError
        ``invalid_body`` when shorter than the fixed part or the date is impossible;
        ``invalid_bcd`` when the time is not BCD. Additional items that do not parse are no
        error: they end up in ``raw_tail``.
    """
    if len(body) < FIXED_SIZE:
        raise BodyError("invalid_body", f"location needs {FIXED_SIZE} bytes, got {len(body)}")
    alarm, status, lat, lon, altitude, speed, direction, stamp = _FIXED.unpack_from(body)
    latitude = -lat / 1e6 if status & SOUTH else lat / 1e6
    longitude = -lon / 1e6 if status & WEST else lon / 1e6
    known: dict[str, Any] = {}
    raw: dict[int, str] = {}
    tail = _decode_extras(body, known, raw) if len(body) > FIXED_SIZE else ""
    return Location(
        alarm,
        status,
        latitude,
        longitude,
        altitude,
        speed / 36,  # 0.1 km/h → m/s
        direction,
        _decode_time(stamp),
        raw_extras=raw,
        raw_tail=tail,
        **known,
    )


def _decode_time(stamp: bytes) -> datetime | None:
    if stamp == _NO_TIME:
        return None
    v = _BCD_VALUE
    year, month, day, hour, minute, second = (
        v[stamp[0]],
        v[stamp[1]],
        v[stamp[2]],
        v[stamp[3]],
        v[stamp[4]],
        v[stamp[5]],
    )
    if min(year, month, day, hour, minute, second) < 0:
        raise BodyError("invalid_bcd", f"time {stamp.hex()} is not BCD")
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=UTC) - _GMT8
    except ValueError as exc:
        raise BodyError("invalid_body", f"time {stamp.hex()}: {exc}") from None


def _decode_extras(body: bytes, known: dict[str, Any], raw: dict[int, str]) -> str:
    """Decode the additional items into ``known`` and ``raw``; return the undecodable tail (hex)."""
    pos, end = FIXED_SIZE, len(body)
    while pos < end:
        if not _item_fits(body, pos):
            return body[pos:].hex()
        item_id, length = body[pos], body[pos + 1]
        start, pos = pos + 2, pos + 2 + length
        spec = EXTRA_ITEMS.get(item_id)
        if spec is not None and spec[1] == length:
            value = int.from_bytes(body[start:pos], "big")
            known[spec[0]] = value / spec[2] if item_id in _SCALED else value
        else:
            raw[item_id] = body[start:pos].hex()
    return ""


def _item_fits(data: bytes, pos: int) -> bool:
    """Whether a complete ``id | length | value`` item starts at ``pos``."""
    return pos + 2 <= len(data) and pos + 2 + data[pos + 1] <= len(data)


def encode_location(location: Location) -> bytes:
    """Encode a location as a 0x0200 body.

    Status bits 2 and 3 are set from the signs of latitude and longitude (``-0.0`` counts as
    negative, so a decoded report round-trips exactly).

    Parameters
    ----------
    location : Location
        The report; ``time`` must be timezone-aware (any zone) within 2000–2099 at GMT+8.

    Returns
    -------
    bytes
        The body.

    Raises
    ------
    ValueError
        For values that do not fit their wire fields.
    """
    status = location.status & ~(SOUTH | WEST)
    if math.copysign(1.0, location.latitude) < 0:
        status |= SOUTH
    if math.copysign(1.0, location.longitude) < 0:
        status |= WEST
    try:
        fixed = _FIXED.pack(
            location.alarm,
            status,
            round(abs(location.latitude) * 1e6),
            round(abs(location.longitude) * 1e6),
            location.altitude,
            round(location.speed_ms * 36),
            location.direction,
            _encode_time(location.time),
        )
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"location field out of range: {exc}") from None
    return fixed + _encode_extras(location)


def _encode_time(time: datetime | None) -> bytes:
    if time is None:
        return _NO_TIME
    if time.tzinfo is None:
        raise ValueError("location time must be timezone-aware")
    local = time.astimezone(UTC) + _GMT8
    if not 2000 <= local.year <= 2099:
        raise ValueError(f"{time} is outside 2000–2099 (GMT+8)")
    fields = (local.year - 2000, local.month, local.day, local.hour, local.minute, local.second)
    return bytes((v // 10) << 4 | v % 10 for v in fields)


def _encode_extras(location: Location) -> bytes:
    items: list[tuple[int, bytes]] = []
    for item_id, (name, size, per_unit) in EXTRA_ITEMS.items():
        value = getattr(location, name)
        if value is not None:
            try:
                number = round(value * per_unit) if item_id in _SCALED else value
                items.append((item_id, number.to_bytes(size, "big")))
            except (OverflowError, ValueError):
                raise ValueError(f"{name}={value} does not fit {size} bytes") from None
    for item_id, hex_value in location.raw_extras.items():
        value_bytes = bytes.fromhex(hex_value)
        if not 0 <= item_id <= 0xFF or len(value_bytes) > 0xFF:
            raise ValueError(f"additional item {item_id} of {len(value_bytes)} bytes")
        spec = EXTRA_ITEMS.get(item_id)
        if spec is not None and spec[1] == len(value_bytes):
            # It would decode into the named field, not back into raw_extras.
            raise ValueError(f"item {item_id:#04x} belongs in Location.{spec[0]}")
        items.append((item_id, value_bytes))
    items.sort(key=lambda item: item[0])
    tail = bytes.fromhex(location.raw_tail)
    if tail and _item_fits(tail, 0):
        # It would decode as an item, not back into raw_tail.
        raise ValueError(f"raw_tail {location.raw_tail} starts with a complete item")
    return b"".join(bytes((item_id, len(value))) + value for item_id, value in items) + tail


@dataclass(frozen=True, slots=True)
class BatchLocation:
    """0x0704 定位数据批量上传: count WORD, type BYTE, then (length WORD, 0x0200 body) items."""

    MSG_ID: ClassVar[int] = 0x0704
    kind: BatchType
    locations: tuple[Location, ...]

    def encode(self, version: Version) -> bytes:  # noqa: ARG002
        parts = [_HB.pack(len(self.locations), self.kind)]
        for location in self.locations:
            body = encode_location(location)
            parts += (_H.pack(len(body)), body)
        return b"".join(parts)

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        count, kind = _HB.unpack_from(body)
        pos, end = _HB.size, len(body)
        locations: list[Location] = []
        for _ in range(count):
            if pos + 2 > end:
                raise BodyError("invalid_body", f"batch item {len(locations) + 1} is missing")
            (size,) = _H.unpack_from(body, pos)
            pos += 2 + size
            if pos > end:
                raise BodyError("invalid_body", f"batch item {len(locations) + 1} is cut short")
            locations.append(decode_location(body[pos - size : pos]))
        if pos != end:
            raise BodyError("invalid_body", f"{end - pos} bytes after {count} batch items")
        return cls(BatchType(kind), tuple(locations))


@dataclass(frozen=True, slots=True)
class PositionQueryReply:
    """0x0201 位置信息查询应答: the answered 0x8201 serial and a 0x0200 body."""

    MSG_ID: ClassVar[int] = 0x0201
    answered_serial: int
    location: Location

    def encode(self, version: Version) -> bytes:  # noqa: ARG002
        return _H.pack(self.answered_serial) + encode_location(self.location)

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        (serial,) = _H.unpack_from(body)
        return cls(serial, decode_location(body[2:]))
