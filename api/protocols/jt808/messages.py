"""JT/T 808 message bodies: one dataclass per message id, with its body encoder and decoder.

Text policy. STRING fields are GBK. They are decoded *strictly*: bytes that are not GBK raise
``BodyError("invalid_text")`` (answer 0x8001 result 2), never ``errors="replace"``, because a plate
or terminal id is an identity the server looks up and a replaced character could only mislead.
Authentication codes are not text at all: they stay ``bytes`` end to end, compared byte for byte
(``hmac.compare_digest``), so no decoding can make two different codes equal; a server should
issue ASCII codes. Fixed-size BYTE[n] text fields are padded with 0x00 after the text; the padding
is stripped on decode and added on encode.

Fields that exist only in the 2019 edition keep their defaults in 2013 messages; encoding a
non-default one as 2013 is a ``ValueError`` instead of a silent loss.

Every class has ``encode(version) -> bytes`` and a ``decode(body, version)`` classmethod; call
them through ``codec.encode_body`` / ``codec.decode_body``, which turn low-level failures (short
bodies, enum values out of range, non-GBK bytes) into ``BodyError`` / ``ValueError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final, Self

from api.protocols.jt808.errors import BodyError
from api.protocols.jt808.header import Version
from api.protocols.jt808.location import BatchLocation, Location, PositionQueryReply

_REPLY: Final = struct.Struct(">HHB")
_H: Final = struct.Struct(">H")
_HB: Final = struct.Struct(">HB")
_HH: Final = struct.Struct(">HH")
_HI: Final = struct.Struct(">HI")
_REGISTER_FIELDS: Final[dict[Version, tuple[int, int, int]]] = {
    2013: (5, 20, 7),  # manufacturer, model, terminal id sizes
    2019: (11, 30, 30),
}


class ReplyResult(IntEnum):
    """Result of a general reply (0x0001 terminal, 0x8001 platform)."""

    SUCCESS = 0
    FAILURE = 1
    MESSAGE_ERROR = 2
    NOT_SUPPORTED = 3
    ALARM_CONFIRMED = 4  # platform replies only


class RegisterResult(IntEnum):
    """Result of a registration (0x8100)."""

    SUCCESS = 0
    VEHICLE_REGISTERED = 1
    NO_SUCH_VEHICLE = 2
    TERMINAL_REGISTERED = 3
    NO_SUCH_TERMINAL = 4


class TextType(IntEnum):
    """2019 text message type (0x8300)."""

    NOTICE = 1
    SERVICE = 2


@dataclass(frozen=True, slots=True)
class _GeneralReply:
    """Layout shared by 0x0001 and 0x8001: answered serial WORD, answered id WORD, result BYTE."""

    MSG_ID: ClassVar[int]
    answered_serial: int
    answered_id: int
    result: ReplyResult

    def encode(self, version: Version) -> bytes:  # noqa: ARG002 - same in both editions
        return _REPLY.pack(self.answered_serial, self.answered_id, self.result)

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        serial, msg_id, result = _exact(_REPLY, body)
        return cls(serial, msg_id, ReplyResult(result))


@dataclass(frozen=True, slots=True)
class TerminalGeneralReply(_GeneralReply):
    """0x0001 终端通用应答: the terminal answers a platform message (results 0–3)."""

    MSG_ID: ClassVar[int] = 0x0001


@dataclass(frozen=True, slots=True)
class PlatformGeneralReply(_GeneralReply):
    """0x8001 平台通用应答: the platform answers a terminal message (results 0–4)."""

    MSG_ID: ClassVar[int] = 0x8001


@dataclass(frozen=True, slots=True)
class _EmptyBody:
    """Messages without a body; a non-empty one is an error."""

    MSG_ID: ClassVar[int]

    def encode(self, version: Version) -> bytes:  # noqa: ARG002
        return b""

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        if body:
            raise BodyError("invalid_body", f"{cls.__name__} has an empty body, got {len(body)}")
        return cls()


@dataclass(frozen=True, slots=True)
class Heartbeat(_EmptyBody):
    """0x0002 终端心跳."""

    MSG_ID: ClassVar[int] = 0x0002


@dataclass(frozen=True, slots=True)
class Unregister(_EmptyBody):
    """0x0003 终端注销."""

    MSG_ID: ClassVar[int] = 0x0003


@dataclass(frozen=True, slots=True)
class PositionQuery(_EmptyBody):
    """0x8201 位置信息查询."""

    MSG_ID: ClassVar[int] = 0x8201


@dataclass(frozen=True, slots=True)
class Register:
    """0x0100 终端注册. Text fields are GBK; ``plate`` holds the VIN when ``plate_colour`` is 0."""

    MSG_ID: ClassVar[int] = 0x0100
    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_colour: int
    plate: str

    def encode(self, version: Version) -> bytes:
        manufacturer, model, terminal = _REGISTER_FIELDS[version]
        return (
            _HH.pack(self.province, self.city)
            + _fixed_text(self.manufacturer, manufacturer, "manufacturer")
            + _fixed_text(self.model, model, "model")
            + _fixed_text(self.terminal_id, terminal, "terminal_id")
            + bytes((self.plate_colour,))
            + self.plate.encode("gbk")
        )

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        sizes = _REGISTER_FIELDS[version]
        fixed = 4 + sum(sizes) + 1
        if len(body) < fixed:
            raise BodyError("invalid_body", f"register needs {fixed} bytes, got {len(body)}")
        province, city = _HH.unpack_from(body)
        end_manufacturer = 4 + sizes[0]
        end_model = end_manufacturer + sizes[1]
        return cls(
            province,
            city,
            _read_fixed_text(body[4:end_manufacturer]),
            _read_fixed_text(body[end_manufacturer:end_model]),
            _read_fixed_text(body[end_model : fixed - 1]),
            body[fixed - 1],
            body[fixed:].decode("gbk"),
        )


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """0x8100 终端注册应答: ``auth_code`` (opaque bytes) is present only on success."""

    MSG_ID: ClassVar[int] = 0x8100
    answered_serial: int
    result: RegisterResult
    auth_code: bytes = b""

    def encode(self, version: Version) -> bytes:  # noqa: ARG002
        if self.result != RegisterResult.SUCCESS and self.auth_code:
            raise ValueError("an auth code is sent only with result 0")
        return _HB.pack(self.answered_serial, self.result) + self.auth_code

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        serial, result = _HB.unpack_from(body)
        if result != RegisterResult.SUCCESS and len(body) != _HB.size:
            raise BodyError("invalid_body", f"result {result} carries no auth code")
        return cls(serial, RegisterResult(result), body[_HB.size :])


@dataclass(frozen=True, slots=True)
class Authentication:
    """0x0102 终端鉴权. 2013: the whole body is the code; 2019 adds IMEI and software version."""

    MSG_ID: ClassVar[int] = 0x0102
    auth_code: bytes
    imei: str = ""  # 2019 only, BYTE[15]
    software_version: str = ""  # 2019 only, BYTE[20]

    def encode(self, version: Version) -> bytes:
        if version == 2013:
            _require_default(self.imei or self.software_version, "imei/software_version")
            return self.auth_code
        if len(self.auth_code) > 0xFF:
            raise ValueError("2019 auth code longer than 255 bytes")
        return (
            bytes((len(self.auth_code),))
            + self.auth_code
            + _fixed_text(self.imei, 15, "imei")
            + _fixed_text(self.software_version, 20, "software_version")
        )

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if version == 2013:
            return cls(body)
        size = body[0]
        if len(body) != 1 + size + 35:
            raise BodyError("invalid_body", f"2019 auth with {size}-byte code is {36 + size} bytes")
        end = 1 + size
        imei = _read_fixed_text(body[end : end + 15])
        return cls(body[1:end], imei, _read_fixed_text(body[end + 15 :]))


@dataclass(frozen=True, slots=True)
class TemporaryTracking:
    """0x8202 临时位置跟踪控制: report every ``interval_s`` for ``validity_s``; interval 0 stops."""

    MSG_ID: ClassVar[int] = 0x8202
    interval_s: int
    validity_s: int = 0  # not sent when interval_s == 0

    def encode(self, version: Version) -> bytes:  # noqa: ARG002
        if self.interval_s == 0:
            _require_default(self.validity_s, "validity_s with interval 0")
            return _H.pack(0)
        return _HI.pack(self.interval_s, self.validity_s)

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:  # noqa: ARG003
        # Some platforms send the validity even when stopping; it means nothing then.
        if len(body) == 2 or (len(body) == 6 and body[:2] == b"\0\0"):
            (interval,) = _H.unpack_from(body)
            if interval == 0:
                return cls(0)
        return cls(*_exact(_HI, body))


@dataclass(frozen=True, slots=True)
class TextMessage:
    """0x8300 文本信息下发: flag bits, GBK text; 2019 adds a text type (1 notice, 2 service)."""

    MSG_ID: ClassVar[int] = 0x8300
    flags: int
    text: str
    text_type: TextType = TextType.NOTICE  # 2019 only

    def encode(self, version: Version) -> bytes:
        if version == 2013:
            _require_default(self.text_type != TextType.NOTICE, "text_type")
            return bytes((self.flags,)) + self.text.encode("gbk")
        return bytes((self.flags, self.text_type)) + self.text.encode("gbk")

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        if version == 2013:
            return cls(body[0], body[1:].decode("gbk"))
        return cls(body[0], body[2:].decode("gbk"), TextType(body[1]))


@dataclass(frozen=True, slots=True)
class ResendRequest:
    """0x8003 补传分包请求: package indices to resend of the message whose first package had
    serial ``original_serial``. The count is a BYTE in 2013 and a WORD in 2019."""

    MSG_ID: ClassVar[int] = 0x8003
    original_serial: int
    indices: tuple[int, ...]

    def encode(self, version: Version) -> bytes:
        count = len(self.indices)
        head = _HB if version == 2013 else _HH
        return head.pack(self.original_serial, count) + struct.pack(f">{count}H", *self.indices)

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        head = _HB if version == 2013 else _HH
        serial, count = head.unpack_from(body)
        if len(body) != head.size + 2 * count:
            raise BodyError("invalid_body", f"{count} indices need {head.size + 2 * count} bytes")
        return cls(serial, struct.unpack_from(f">{count}H", body, head.size))


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message id this codec does not decode; the body is kept as is (answer 0x8001 result 3)."""

    msg_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """One package of a subpackaged message, decoded without reassembly: feed the packet to a
    ``Reassembler`` instead. Not encodable (use ``encode_subpackages``)."""

    body: bytes


Message = (
    TerminalGeneralReply
    | PlatformGeneralReply
    | Heartbeat
    | Unregister
    | Register
    | RegisterReply
    | Authentication
    | Location
    | BatchLocation
    | PositionQuery
    | PositionQueryReply
    | TemporaryTracking
    | TextMessage
    | ResendRequest
    | UnknownMessage
    | Fragment
)


def _exact(layout: struct.Struct, body: bytes) -> tuple[int, ...]:
    if len(body) != layout.size:
        raise BodyError("invalid_body", f"body is {len(body)} bytes, expected {layout.size}")
    return layout.unpack(body)


def _read_fixed_text(raw: bytes) -> str:
    # GBK trail bytes are 0x40–0xFE, so a trailing 0x00 is always padding, never half a character.
    return raw.rstrip(b"\0").decode("gbk")


def _fixed_text(value: str, size: int, name: str) -> bytes:
    raw = value.encode("gbk")
    if len(raw) > size or raw.endswith(b"\0"):
        raise ValueError(f"{name} {value!r} must be at most {size} GBK bytes, no trailing NUL")
    return raw.ljust(size, b"\0")


def _require_default(non_default: object, name: str) -> None:
    if non_default:
        raise ValueError(f"{name} cannot be encoded in JT/T 808-2013")
