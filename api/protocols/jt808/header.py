"""The JT/T 808 message header (消息头) for the 2013 and 2019 editions, and BCD helpers.

Layout (all integers big-endian)::

    2013: msg id WORD | properties WORD |              phone BCD[6]  | serial WORD | [count|index]
    2019: msg id WORD | properties WORD | version BYTE | phone BCD[10] | serial WORD | [count|index]

(count and index are WORDs, the index 1-based).

Properties word: bits 0–9 body length, bits 10–12 encryption (bit 10 = RSA; 11, 12 reserved),
bit 13 subpackage (then package count and 1-based index follow the serial), bit 14 the 2019
version flag, bit 15 reserved (ignored). The edition of a frame is read from bit 14, so one server
can talk to terminals of both editions.

``Header.phone`` keeps every BCD digit as sent (12 digits in 2013, 20 in 2019, leading zeros
included) so that a reply echoes exactly what the terminal used; strip leading zeros yourself if
you want one device key across editions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from api.protocols.jt808.errors import HeaderError

Version = Literal[2013, 2019]

_HH: Final = struct.Struct(">HH")
_HEAD_2013: Final = struct.Struct(">HH6sH")
_HEAD_2019: Final = struct.Struct(">HHB10sH")

BODY_LENGTH_MASK: Final = 0x03FF
MAX_BODY_LENGTH: Final = BODY_LENGTH_MASK
ENCRYPTION_SHIFT: Final = 10
ENCRYPTION_MASK: Final = 0x7
SUBPACKAGE_BIT: Final = 0x2000
VERSION_BIT: Final = 0x4000
ENCRYPTION_RSA: Final = 1

PHONE_BYTES: Final[dict[Version, int]] = {2013: 6, 2019: 10}


def bcd_digits(data: bytes) -> str | None:
    """Read packed BCD as a digit string, or None when a nibble is not 0–9.

    Parameters
    ----------
    data : bytes
        Packed BCD, two digits per byte, most significant nibble first.

    Returns
    -------
    str or None
        ``2 * len(data)`` ASCII digits, or None if any nibble is A–F.
    """
    # hex() is the BCD digit string exactly when every nibble is 0–9: one C call, no loop.
    digits = data.hex()
    return digits if digits.isdigit() else None


def bcd_bytes(digits: str, size: int) -> bytes:
    """Pack an ASCII digit string into ``size`` BCD bytes, left-padded with zeros.

    Parameters
    ----------
    digits : str
        At most ``2 * size`` ASCII digits ``0``–``9``.
    size : int
        Number of bytes to produce.

    Returns
    -------
    bytes
        The packed BCD.

    Raises
    ------
    ValueError
        If ``digits`` holds anything but ASCII digits or is too long.
    """
    # isdigit() alone accepts '²' and Arabic-Indic digits; isascii() rules them out.
    if not (digits.isascii() and digits.isdigit()) and digits:
        raise ValueError(f"BCD needs ASCII digits, got {digits!r}")
    if len(digits) > 2 * size:
        raise ValueError(f"{digits!r} has more than {2 * size} digits")
    return bytes.fromhex(digits.rjust(2 * size, "0"))


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded (or to-be-encoded) message header.

    Attributes
    ----------
    msg_id : int
        Message id (消息ID), e.g. 0x0200.
    phone : str
        Terminal phone number, BCD digits as sent (12 in 2013, 20 in 2019).
    serial : int
        Message serial number (消息流水号), 0–65535.
    version : {2013, 2019}
        Edition, from bit 14 of the properties word.
    protocol_version : int
        2019 protocol version byte (初始为 1); 0 for 2013 frames.
    body_length : int
        Body length in bytes (of this package, or of the whole message once reassembled).
    encryption : int
        Bits 10–12 of the properties word: 0 none, 1 RSA; anything else is reserved.
    package_count, package_index : int
        Total packages and this package's 1-based index; both 0 when not subpackaged.
    """

    msg_id: int
    phone: str
    serial: int
    version: Version = 2013
    protocol_version: int = 0
    body_length: int = 0
    encryption: int = 0
    package_count: int = 0
    package_index: int = 0

    @property
    def subpackaged(self) -> bool:
        """True when this frame is one package of a longer message (bit 13)."""
        return self.package_count > 0

    @property
    def size(self) -> int:
        """Number of header bytes on the wire (before escaping)."""
        base = 17 if self.version == 2019 else 12
        return base + 4 if self.package_count else base


@dataclass(frozen=True, slots=True)
class Packet:
    """A checked frame: its header and its (unescaped) body, not yet decoded.

    ``FrameReader`` yields these; ``decode_packet`` turns one into a ``Frame``; ``Reassembler``
    joins subpackaged ones into a single packet whose header has no package fields.
    """

    header: Header
    body: bytes


def decode_header(packet: bytes) -> Header:
    """Read the header of an unescaped packet (header + body, check code removed).

    Parameters
    ----------
    packet : bytes
        Header and body, unescaped, without delimiters and without the check code byte.

    Returns
    -------
    Header
        The header; the body is ``packet[header.size:]``.

    Raises
    ------
    HeaderError
        ``too_short`` when the header does not fit, ``invalid_bcd`` for a non-BCD phone,
        ``invalid_header`` for impossible package fields, ``length_mismatch`` when the body
        length field differs from the bytes present.
    """
    size = len(packet)
    if size < 12:
        raise HeaderError("too_short", f"{size} bytes cannot hold a header")
    props = _HH.unpack_from(packet)[1]
    version: Version
    if props & VERSION_BIT:
        if size < 17:
            raise HeaderError("too_short", f"{size} bytes cannot hold a 2019 header")
        msg_id, _, protocol_version, phone_bcd, serial = _HEAD_2019.unpack_from(packet)
        version, offset = 2019, 17
    else:
        msg_id, _, phone_bcd, serial = _HEAD_2013.unpack_from(packet)
        version, protocol_version, offset = 2013, 0, 12
    phone = bcd_digits(phone_bcd)
    if phone is None:
        raise HeaderError("invalid_bcd", f"phone {phone_bcd.hex()} is not BCD")
    count = index = 0
    if props & SUBPACKAGE_BIT:
        if size < offset + 4:
            raise HeaderError("too_short", "subpackage fields missing")
        count, index = _HH.unpack_from(packet, offset)
        offset += 4
        if count == 0 or not 1 <= index <= count:
            raise HeaderError("invalid_header", f"package {index} of {count}")
    body_length = props & BODY_LENGTH_MASK
    if body_length != size - offset:
        raise HeaderError(
            "length_mismatch", f"properties say {body_length} body bytes, {size - offset} present"
        )
    return Header(
        msg_id,
        phone,
        serial,
        version,
        protocol_version,
        body_length,
        (props >> ENCRYPTION_SHIFT) & ENCRYPTION_MASK,
        count,
        index,
    )


def encode_header(header: Header) -> bytes:
    """Pack a header; ``body_length`` must already be the length of the body that follows.

    Parameters
    ----------
    header : Header
        The header to write. ``protocol_version`` is written only for 2019.

    Returns
    -------
    bytes
        12 or 17 bytes, plus 4 when subpackaged.

    Raises
    ------
    ValueError
        For out-of-range fields or a phone that is not a digit string of the edition's size.
    """
    if not 0 <= header.body_length <= MAX_BODY_LENGTH:
        raise ValueError(f"body length {header.body_length} does not fit 10 bits; subpackage it")
    if not 0 <= header.encryption <= ENCRYPTION_MASK:
        raise ValueError(f"encryption {header.encryption} does not fit 3 bits")
    _check_word("msg_id", header.msg_id)
    _check_word("serial", header.serial)
    props = header.body_length | header.encryption << ENCRYPTION_SHIFT
    if header.package_count:
        props |= SUBPACKAGE_BIT
    phone = bcd_bytes(header.phone, PHONE_BYTES[header.version])
    if header.version == 2019:
        if not 0 <= header.protocol_version <= 0xFF:
            raise ValueError(f"protocol version {header.protocol_version} is not a byte")
        props |= VERSION_BIT
        head = _HEAD_2019.pack(header.msg_id, props, header.protocol_version, phone, header.serial)
    else:
        head = _HEAD_2013.pack(header.msg_id, props, phone, header.serial)
    if header.package_count:
        _check_word("package_count", header.package_count)
        if not 1 <= header.package_index <= header.package_count:
            raise ValueError(f"package {header.package_index} of {header.package_count}")
        head += _HH.pack(header.package_count, header.package_index)
    elif header.package_index:
        raise ValueError("package_index without package_count")
    return head


def _check_word(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} is not a WORD (0–65535)")
