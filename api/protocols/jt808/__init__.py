"""JT/T 808 (2013 and 2019 editions) as a pure codec: bytes ↔ frames ↔ messages, no I/O.

Decoding a TCP stream on a server::

    import hmac
    from api.protocols import jt808

    reader = jt808.FrameReader()            # one per connection; max_frame_size=4096
    joiner = jt808.Reassembler()            # one per connection (or one per server)

    def data_received(data: bytes) -> None:
        for packet in reader.feed(data):    # checked frames; bad ones are counted in reader.errors
            if packet.header.subpackaged:
                packet = joiner.add(packet, now=loop.time())
                if packet is None:          # waiting for more packages; see joiner.missing(...)
                    continue
            try:
                frame = jt808.decode_packet(packet)
            except jt808.BodyError as exc:  # exc.header is valid: answer it
                result = 3 if exc.reason == "unsupported_encryption" else 2
                send(reply(exc.header, jt808.ReplyResult(result)))
                continue
            match frame.message:
                case jt808.Location() as fix: ...            # fix.time is aware UTC
                case jt808.Authentication(auth_code=code):
                    ok = hmac.compare_digest(code, issued_code)
                case jt808.UnknownMessage():
                    send(reply(frame.header, jt808.ReplyResult.NOT_SUPPORTED))

    def reply(header: jt808.Header, result: jt808.ReplyResult) -> bytes:
        answer = jt808.PlatformGeneralReply(header.serial, header.msg_id, result)
        return jt808.encode_frame(
            answer, phone=header.phone, serial=next_serial(), version=header.version
        )

``decode_frame(frame_bytes)`` does ``read_packet`` + ``decode_packet`` for a single frame (a
package of a subpackaged message then decodes as a ``Fragment``). ``encode_subpackages`` splits a
long message into frames with consecutive serials; ``Reassembler.missing(key)`` lists what to ask
for in a 0x8003 ``ResendRequest`` whose original serial is ``key.first_serial``.

Errors: every problem with received bytes raises a ``Jt808Error`` subclass whose ``reason`` is a
stable token (``REASONS``): ``FrameError`` / ``HeaderError`` mean the frame cannot be trusted,
``BodyError`` carries the valid header. Problems with values given to an encoder are plain
``ValueError``. Units: coordinates in signed degrees, speed in m/s, times aware UTC (the wire's
GMT+8 is converted), auth codes ``bytes``; text is GBK, decoded strictly (see ``messages``).

Modules: ``framing`` (escaping, check code, ``FrameReader``), ``header`` (``Header``, BCD),
``location`` (0x0200 body, 0x0201, 0x0704), ``messages`` (the other bodies), ``codec`` (frame ↔
message), ``reassembly`` (``Reassembler``), ``errors``.

The server and the simulator build on the codec (import them from their modules; they do I/O):
``server`` (``Jt808Server``: listening, connection rules, housekeeping, the command API),
``connection`` (one terminal's TCP connection, back-pressure, serials), ``handlers`` (what each
message does, acknowledgement after commit), ``registration`` (0x0100/0x0102/0x0003 against the
``device`` table), ``fixes`` (reports → ``FixBatch``), ``commands`` (the ``jt808_command``
record), ``stats`` (counters), ``terminal`` (a simulated terminal) and ``fleet``
(``send_jt808`` for ``gridpatrol simulate --protocol jt808``).
"""

from api.protocols.jt808.codec import (
    Frame,
    decode_body,
    decode_frame,
    decode_packet,
    encode_body,
    encode_frame,
    encode_subpackages,
    message_id,
)
from api.protocols.jt808.errors import (
    REASONS,
    BodyError,
    FrameError,
    HeaderError,
    Jt808Error,
    Reason,
)
from api.protocols.jt808.framing import (
    FrameReader,
    build_frame,
    checksum,
    escape,
    read_packet,
    unescape,
)
from api.protocols.jt808.header import Header, Packet, Version, decode_header, encode_header
from api.protocols.jt808.location import (
    ALARM_NAMES,
    BatchLocation,
    BatchType,
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
    RegisterResult,
    ReplyResult,
    ResendRequest,
    TemporaryTracking,
    TerminalGeneralReply,
    TextMessage,
    TextType,
    UnknownMessage,
    Unregister,
)
from api.protocols.jt808.reassembly import PartialKey, Reassembler

__all__ = [
    "ALARM_NAMES",
    "REASONS",
    "Authentication",
    "BatchLocation",
    "BatchType",
    "BodyError",
    "Fragment",
    "Frame",
    "FrameError",
    "FrameReader",
    "Header",
    "HeaderError",
    "Heartbeat",
    "Jt808Error",
    "Location",
    "Message",
    "Packet",
    "PartialKey",
    "PlatformGeneralReply",
    "PositionQuery",
    "PositionQueryReply",
    "Reason",
    "Reassembler",
    "Register",
    "RegisterReply",
    "RegisterResult",
    "ReplyResult",
    "ResendRequest",
    "TemporaryTracking",
    "TerminalGeneralReply",
    "TextMessage",
    "TextType",
    "UnknownMessage",
    "Unregister",
    "Version",
    "build_frame",
    "checksum",
    "decode_body",
    "decode_frame",
    "decode_header",
    "decode_location",
    "decode_packet",
    "encode_body",
    "encode_frame",
    "encode_header",
    "encode_location",
    "encode_subpackages",
    "escape",
    "message_id",
    "read_packet",
    "unescape",
]
