"""Errors of the JT/T 808 codec: one base class, one subclass per layer, a ``reason`` on each.

The layer tells a server what it may still do: after a ``FrameError`` or ``HeaderError`` nothing in
the frame can be trusted (drop it, count it); a ``BodyError`` carries the valid ``header`` so the
server can answer 0x8001 with result 2 (message error) or 3 (not supported). ``reason`` is a short
stable token for counters and logs; ``detail`` is for people.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from api.protocols.jt808.header import Header

Reason = Literal[
    "bad_escape",  # 0x7D not followed by 0x01/0x02, or a bare 0x7E inside a frame
    "bad_checksum",  # XOR of header+body differs from the check code byte
    "too_short",  # fewer bytes than the header (with its optional parts) plus check code
    "oversized",  # more than the reader's maximum between two delimiters
    "length_mismatch",  # body length in the properties word differs from the bytes present
    "invalid_bcd",  # a BCD nibble outside 0–9 (phone in the header, time in a body)
    "invalid_header",  # impossible subpackage fields (count 0, index 0 or index > count)
    "invalid_body",  # a body that does not fit its message's layout
    "invalid_text",  # a GBK string field whose bytes are not valid GBK
    "unsupported_encryption",  # RSA (bit 10) or reserved encryption bits set
]

REASONS: tuple[Reason, ...] = (
    "bad_escape",
    "bad_checksum",
    "too_short",
    "oversized",
    "length_mismatch",
    "invalid_bcd",
    "invalid_header",
    "invalid_body",
    "invalid_text",
    "unsupported_encryption",
)


class Jt808Error(ValueError):
    """Bytes that are not a valid JT/T 808 frame or message.

    Attributes
    ----------
    reason : Reason
        A stable token naming the problem (see ``REASONS``), used as a counter key.
    detail : str
        A human-readable explanation.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


class FrameError(Jt808Error):
    """Delimiting, escaping or check-code problems: the frame's bytes cannot be trusted."""


class HeaderError(Jt808Error):
    """A header that cannot be read (bad BCD phone, wrong body length, bad subpackage fields)."""


class BodyError(Jt808Error):
    """A body that does not match its message layout; ``header`` is valid when set.

    Decoders deep inside raise it without a header; ``decode_body`` attaches the header before it
    reaches the caller, so a server always has ``msg_id`` and ``serial`` to answer with.
    """

    def __init__(self, reason: Reason, detail: str, header: Header | None = None) -> None:
        super().__init__(reason, detail)
        self.header = header
