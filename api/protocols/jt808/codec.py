"""Whole frames ↔ messages: the entry points a server or a terminal simulator calls.

Decoding is split in two so a server can reassemble subpackages between the steps:
``read_packet`` (framing and header, also done by ``FrameReader``) and ``decode_packet`` (body).
``decode_frame`` does both for one frame. Encoding mirrors it: ``encode_frame`` for a message that
fits one frame, ``encode_subpackages`` for a longer one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from api.protocols.jt808.errors import BodyError
from api.protocols.jt808.framing import build_frame, read_packet
from api.protocols.jt808.header import MAX_BODY_LENGTH, Header, Packet, Version
from api.protocols.jt808.location import (
    BatchLocation,
    Location,
    PositionQueryReply,
    decode_location,
    encode_location,
)
from api.protocols.jt808.messages import (
    Authentication,
    Fragment,
    Heartbeat,
    Message,
    PlatformGeneralReply,
    PositionQuery,
    Register,
    RegisterReply,
    ResendRequest,
    TemporaryTracking,
    TerminalGeneralReply,
    TextMessage,
    UnknownMessage,
    Unregister,
)

_CLASSES: Final = (
    TerminalGeneralReply,
    PlatformGeneralReply,
    Heartbeat,
    Unregister,
    PositionQuery,
    Register,
    RegisterReply,
    Authentication,
    BatchLocation,
    PositionQueryReply,
    TemporaryTracking,
    TextMessage,
    ResendRequest,
)
_DECODERS: Final[dict[int, Callable[[bytes, Version], Message]]] = {
    cls.MSG_ID: cls.decode for cls in _CLASSES
}
_DECODERS[Location.MSG_ID] = lambda body, _version: decode_location(body)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its header and its message."""

    header: Header
    message: Message


def decode_body(header: Header, body: bytes) -> Message:
    """Decode a body according to ``header.msg_id``, edition, encryption and package fields.

    Parameters
    ----------
    header : Header
        The packet's header.
    body : bytes
        The unescaped body (the whole message body once reassembled).

    Returns
    -------
    Message
        The message dataclass; ``UnknownMessage`` for ids not handled here and ``Fragment`` for
        one package of a subpackaged message.

    Raises
    ------
    BodyError
        With ``header`` set: ``unsupported_encryption``, ``invalid_body``, ``invalid_text`` or
        ``invalid_bcd``.
    """
    if header.encryption:
        kind = "RSA" if header.encryption == 1 else f"reserved scheme {header.encryption}"
        raise BodyError("unsupported_encryption", f"{kind} encryption", header)
    if header.package_count:
        return Fragment(body)
    decoder = _DECODERS.get(header.msg_id)
    if decoder is None:
        return UnknownMessage(header.msg_id, body)
    try:
        return decoder(body, header.version)
    except BodyError as exc:
        exc.header = header
        raise
    except UnicodeDecodeError as exc:
        raise BodyError("invalid_text", f"not GBK: {exc}", header) from None
    except (struct.error, IndexError, ValueError) as exc:
        # Short bodies (struct.error, IndexError) and values outside an enum (ValueError).
        raise BodyError("invalid_body", f"{header.msg_id:#06x}: {exc}", header) from None


def decode_packet(packet: Packet) -> Frame:
    """Decode the body of a checked packet (from ``FrameReader`` or ``Reassembler``).

    Parameters
    ----------
    packet : Packet
        Header and unescaped body.

    Returns
    -------
    Frame
        The header and the decoded message.

    Raises
    ------
    BodyError
        See ``decode_body``; ``exc.header`` lets the server answer 0x8001.
    """
    return Frame(packet.header, decode_body(packet.header, packet.body))


def decode_frame(frame: bytes) -> Frame:
    """Check and decode one frame.

    Parameters
    ----------
    frame : bytes
        One escaped frame, with or without its 0x7E delimiters.

    Returns
    -------
    Frame
        The header and message (``Fragment`` when the frame is one package of several).

    Raises
    ------
    FrameError, HeaderError, BodyError
        Subclasses of ``Jt808Error``; ``reason`` says why.
    """
    return decode_packet(read_packet(frame))


def message_id(message: Message) -> int:
    """The message id of a message object (``UnknownMessage`` carries its own)."""
    if isinstance(message, UnknownMessage):
        return message.msg_id
    if isinstance(message, Fragment):
        raise ValueError("a Fragment has no message id of its own")
    return message.MSG_ID


def encode_body(message: Message, version: Version) -> bytes:
    """Encode a message's body for the given edition.

    Parameters
    ----------
    message : Message
        Any message dataclass except ``Fragment``.
    version : {2013, 2019}
        Edition whose layout to use.

    Returns
    -------
    bytes
        The body before escaping (it may exceed 1023 bytes; then use ``encode_subpackages``).

    Raises
    ------
    ValueError
        For values that do not fit their fields, 2019-only fields set in 2013, or a ``Fragment``.
    """
    if isinstance(message, Location):
        return encode_location(message)
    if isinstance(message, UnknownMessage):
        return message.body
    if isinstance(message, Fragment):
        raise ValueError("a Fragment is part of a body; encode the whole message instead")
    try:
        return message.encode(version)
    except struct.error as exc:
        raise ValueError(f"{type(message).__name__} field out of range: {exc}") from None


def encode_frame(
    message: Message,
    *,
    phone: str,
    serial: int,
    version: Version = 2013,
    protocol_version: int = 1,
) -> bytes:
    """Encode a message as one complete frame (delimiters, escaping and check code included).

    Parameters
    ----------
    message : Message
        The message to send.
    phone : str
        Terminal phone number, ASCII digits; left-padded with zeros to 12 (2013) or 20 (2019).
    serial : int
        Message serial number 0–65535 (the sender keeps one counter per connection).
    version : {2013, 2019}, default 2013
        Edition; answer a terminal in the edition it used (``Header.version``).
    protocol_version : int, default 1
        The 2019 protocol version byte; ignored for 2013.

    Returns
    -------
    bytes
        The frame.

    Raises
    ------
    ValueError
        For out-of-range fields or a body longer than 1023 bytes (use ``encode_subpackages``).
    """
    body = encode_body(message, version)
    header = Header(
        message_id(message),
        phone,
        serial,
        version,
        protocol_version if version == 2019 else 0,
        len(body),
    )
    return build_frame(header, body)


def encode_subpackages(
    message: Message,
    *,
    phone: str,
    serial: int,
    version: Version = 2013,
    protocol_version: int = 1,
    package_size: int = MAX_BODY_LENGTH,
) -> list[bytes]:
    """Encode a message as subpackaged frames of at most ``package_size`` body bytes each.

    Package *i* (1-based) gets serial ``serial + i - 1`` (mod 65536), so the sender must advance
    its serial counter by ``len(result)``; a 0x8003 request names ``serial`` as the original.

    Parameters
    ----------
    message : Message
        The message to send (typically a long 0x0704 batch).
    phone, serial, version, protocol_version
        As for ``encode_frame``; ``serial`` is that of package 1.
    package_size : int, default 1023
        Body bytes per package, 1–1023.

    Returns
    -------
    list of bytes
        One frame per package, in order (always at least one, even for a short body).

    Raises
    ------
    ValueError
        For out-of-range fields or a body needing more than 65535 packages.
    """
    if not 0 <= serial <= 0xFFFF:
        raise ValueError(f"serial {serial} is not a WORD (0–65535)")
    if not 1 <= package_size <= MAX_BODY_LENGTH:
        raise ValueError(f"package_size {package_size} not in 1–{MAX_BODY_LENGTH}")
    body = encode_body(message, version)
    chunks = [body[i : i + package_size] for i in range(0, len(body), package_size)] or [b""]
    if len(chunks) > 0xFFFF:
        raise ValueError(f"{len(chunks)} packages do not fit a WORD count")
    msg_id, count = message_id(message), len(chunks)
    return [
        build_frame(
            Header(
                msg_id,
                phone,
                (serial + index - 1) & 0xFFFF,
                version,
                protocol_version if version == 2019 else 0,
                len(chunk),
                0,
                count,
                index,
            ),
            chunk,
        )
        for index, chunk in enumerate(chunks, start=1)
    ]
