"""JT/T 808 framing: 0x7E delimiters, 0x7D escaping, the XOR check code and a streaming reader.

On the wire a frame is ``7E escape(header + body + check) 7E`` where ``check`` is the XOR of
every header and body byte, and escaping turns 0x7D into ``7D 01`` and 0x7E into ``7D 02`` (the
check byte is escaped too). Everything here works on whole ``bytes`` with C-level operations
(``find``, ``count``, ``replace``, ``int.from_bytes``) rather than a Python loop per byte: the
server reads tens of thousands of frames a second.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Final

from api.protocols.jt808.errors import FrameError, Jt808Error, Reason
from api.protocols.jt808.header import Header, Packet, decode_header, encode_header

DELIMITER: Final = 0x7E
_FLAG: Final = b"\x7e"
_ESC: Final = b"\x7d"
_ESC_7D: Final = b"\x7d\x01"
_ESC_7E: Final = b"\x7d\x02"
MIN_PACKET: Final = 13  # a 2013 header (12) and the check code (1), body empty
DEFAULT_MAX_FRAME: Final = 4096


def escape(data: bytes) -> bytes:
    """Escape 0x7D → ``7D 01`` and 0x7E → ``7D 02`` (0x7D first, so new 7Ds are not re-escaped).

    Parameters
    ----------
    data : bytes
        Header, body and check code.

    Returns
    -------
    bytes
        Bytes free of 0x7E, ready to be put between delimiters.
    """
    return data.replace(_ESC, _ESC_7D).replace(_FLAG, _ESC_7E)


def unescape(data: bytes) -> bytes:
    """Undo ``escape``, rejecting a 0x7D that is not followed by 0x01 or 0x02.

    Parameters
    ----------
    data : bytes
        The bytes between two delimiters.

    Returns
    -------
    bytes
        Header, body and check code.

    Raises
    ------
    FrameError
        ``bad_escape`` for a dangling or unknown escape, or a bare 0x7E.
    """
    if _FLAG in data:
        raise FrameError("bad_escape", "0x7E inside a frame")
    escapes = data.count(_ESC)
    if not escapes:
        return data
    # The two escape pairs cannot overlap (their second byte is not 0x7D), so every 0x7D starts a
    # valid pair exactly when the pair counts add up to the 0x7D count.
    if escapes != data.count(_ESC_7D) + data.count(_ESC_7E):
        raise FrameError("bad_escape", "0x7D not followed by 0x01 or 0x02")
    return data.replace(_ESC_7E, _FLAG).replace(_ESC_7D, _ESC)


def checksum(data: bytes) -> int:
    """XOR of all bytes (the check code, 校验码).

    Parameters
    ----------
    data : bytes
        Header and body.

    Returns
    -------
    int
        The check code, 0–255.
    """
    # XOR-folding one big integer: after x ^= x >> 8s for s = 2^k … 1 the low byte is the XOR of
    # all bytes. A handful of big-int operations instead of one Python step per byte.
    x = int.from_bytes(data, "little")
    shift = 4 << (len(data) - 1).bit_length()
    while shift > 4:
        x ^= x >> shift
        shift >>= 1
    return x & 0xFF


def build_frame(header: Header, body: bytes) -> bytes:
    """Write one complete frame: header, body, check code, escaped, between 0x7E delimiters.

    Parameters
    ----------
    header : Header
        The header; its ``body_length`` is replaced by ``len(body)``.
    body : bytes
        The encoded message body (at most 1023 bytes).

    Returns
    -------
    bytes
        The frame as sent on the wire.

    Raises
    ------
    ValueError
        If the header fields are out of range or the body is longer than 1023 bytes.
    """
    if header.body_length != len(body):
        header = replace(header, body_length=len(body))
    packet = encode_header(header) + body
    return b"\x7e" + escape(packet + bytes((checksum(packet),))) + b"\x7e"


def read_packet(frame: bytes) -> Packet:
    """Check one frame and split it into header and body (the body is not decoded).

    Parameters
    ----------
    frame : bytes
        The escaped bytes of one frame, with or without its 0x7E delimiters.

    Returns
    -------
    Packet
        The header and the unescaped body.

    Raises
    ------
    FrameError
        ``bad_escape``, ``too_short`` or ``bad_checksum``.
    HeaderError
        ``too_short``, ``invalid_bcd``, ``invalid_header`` or ``length_mismatch``.
    """
    if frame[:1] == _FLAG:
        frame = frame[1:]
    if frame[-1:] == _FLAG:
        frame = frame[:-1]
    data = unescape(frame)
    if len(data) < MIN_PACKET:
        raise FrameError("too_short", f"{len(data)} bytes cannot hold header and check code")
    packet = data[:-1]
    if checksum(packet) != data[-1]:
        raise FrameError("bad_checksum", f"check code {data[-1]:#04x} != {checksum(packet):#04x}")
    header = decode_header(packet)
    return Packet(header, packet[header.size :])


class FrameReader:
    """Cut a TCP byte stream into checked packets, dropping and counting bad frames.

    Feed it whatever ``data_received`` gives; it returns the packets completed so far. Bytes before
    the first 0x7E are skipped, empty frames (``7E 7E``) are ignored, a delimiter may close one
    frame and open the next. A frame longer than ``max_frame_size`` escaped bytes is dropped
    without being buffered further, so memory per connection stays below that bound.

    Parameters
    ----------
    max_frame_size : int, default 4096
        Largest number of (escaped) bytes accepted between two delimiters.

    Attributes
    ----------
    errors : Counter[str]
        Dropped frames per ``Jt808Error.reason`` (``oversized`` included).
    packets : int
        Packets returned so far.
    skipped_bytes : int
        Bytes discarded without being read as a frame: those before the first delimiter and
        those of oversized frames.
    last_error : Jt808Error or None
        The most recent reason a frame was dropped, for logging.
    """

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame_size < MIN_PACKET:
            raise ValueError(f"max_frame_size {max_frame_size} < {MIN_PACKET}")
        self.max_frame_size = max_frame_size
        self.errors: Counter[str] = Counter()
        self.packets = 0
        self.skipped_bytes = 0
        self.last_error: Jt808Error | None = None
        self._buf = bytearray()
        self._open = False  # inside a frame (an opening delimiter has been seen)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back, never more than ``max_frame_size``."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Take the next bytes of the stream and return the packets they complete.

        Parameters
        ----------
        data : bytes-like
            The next chunk of the stream, of any size (one byte is fine).

        Returns
        -------
        list of Packet
            Checked packets in stream order; bad frames are counted in ``errors`` instead.
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        packets: list[Packet] = []
        pos, end, limit, buf = 0, len(data), self.max_frame_size, self._buf
        while pos < end:
            if not self._open:
                start = data.find(_FLAG, pos)
                if start < 0:
                    self.skipped_bytes += end - pos
                    break
                self.skipped_bytes += start - pos
                self._open = True
                pos = start + 1
                continue
            stop = data.find(_FLAG, pos)
            if stop < 0:
                if len(buf) + end - pos > limit:
                    # No end in sight: drop it now rather than buffer an unbounded frame.
                    self.skipped_bytes += len(buf) + end - pos
                    buf.clear()
                    self._open = False
                    self._drop(FrameError("oversized", f"more than {limit} bytes"))
                else:
                    buf += data[pos:]
                break
            size = len(buf) + stop - pos
            if size > limit:
                self.skipped_bytes += size
                buf.clear()
                self._drop(FrameError("oversized", f"{size} bytes > {limit}"))
            elif buf:
                buf += data[pos:stop]
                self._read(bytes(buf), packets)
                buf.clear()
            elif size:
                self._read(data[pos:stop], packets)
            pos = stop + 1  # the closing delimiter may also open the next frame
        return packets

    def _read(self, content: bytes, packets: list[Packet]) -> None:
        try:
            packets.append(read_packet(content))
        except Jt808Error as exc:
            self._drop(exc)
        else:
            self.packets += 1

    def _drop(self, exc: Jt808Error) -> None:
        reason: Reason = exc.reason
        self.errors[reason] += 1
        self.last_error = exc
