"""A simulated JT/T 808 terminal (asyncio client), for tests, ``gridpatrol simulate`` and bench.

It behaves like a vehicle terminal: registers (0x0100) unless it already holds an auth code,
authenticates (0x0102), sends heartbeats, locations (0x0200) and batches (0x0704, subpackaged
when long), and answers the platform: 0x8201 with a 0x0201 position, 0x8202 and 0x8300 with a
0x0001 success (keeping the tracking order and the texts), 0x8003 by resending the packages
asked for, anything else with 0x0001 "not supported". It can also send broken frames on
purpose (``send_broken``).

Every request waits for the platform's reply to its serial (0x8001 or 0x8100) and returns it;
``inbox`` receives every platform message that is not such a reply (commands, 0x8003).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from api.protocols.jt808.codec import (
    decode_packet,
    encode_frame,
    encode_subpackages,
    message_id,
)
from api.protocols.jt808.errors import Jt808Error
from api.protocols.jt808.framing import FrameReader, checksum, escape
from api.protocols.jt808.header import MAX_BODY_LENGTH, Header, Packet, Version, encode_header
from api.protocols.jt808.location import BatchLocation, BatchType, Location, PositionQueryReply
from api.protocols.jt808.messages import (
    Authentication,
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
    UnknownMessage,
    Unregister,
)

BROKEN_KINDS: Final = ("garbage", "bad_checksum", "bad_escape", "truncated", "oversized")
NOWHERE: Final = Location(0, 0, 0.0, 0.0, 0, 0.0, 0, None)  # an all-zero, unpositioned report


class TerminalError(RuntimeError):
    """The platform refused a request or the connection failed."""


class Terminal:
    """One simulated terminal; see the module docstring.

    Parameters
    ----------
    phone : str
        Terminal phone number, ASCII digits (left-padded to 12 or 20 on the wire).
    host, port : str, int
        The platform.
    version : {2013, 2019}, default 2013
        Edition of every frame it sends.
    auth_code : bytes, optional
        A code from an earlier registration; ``login`` then skips registering.
    registration : Register, optional
        What 0x0100 reports (default: maker ``GRIDP``, model ``SIM-808``, terminal id from the
        phone's last 7 digits, plate colour 2 and plate ``蒙H·`` + the last 5 digits).
    reply_timeout : float, default 30
        Seconds to wait for a reply before ``TerminalError``.
    """

    def __init__(
        self,
        phone: str,
        *,
        host: str,
        port: int,
        version: Version = 2013,
        auth_code: bytes | None = None,
        registration: Register | None = None,
        reply_timeout: float = 30.0,
    ) -> None:
        self.phone, self.host, self.port, self.version = phone, host, port, version
        self.auth_code = auth_code
        self.registration = registration or Register(
            15, 2501, "GRIDP", "SIM-808", phone[-7:].rjust(7, "0"), 2, f"蒙H·{phone[-5:]}"
        )
        self.reply_timeout = reply_timeout
        self.position: Location = NOWHERE
        self.tracking: TemporaryTracking | None = None
        self.texts: list[str] = []
        self.inbox: asyncio.Queue[tuple[int, Message]] = asyncio.Queue()
        self.answered_commands = 0
        self.unexpected_replies = 0
        self._serial = 0
        # our serial → (future, the message id answered, when known)
        self._replies: dict[int, tuple[asyncio.Future[Message], int | None]] = {}
        self._packages: dict[int, list[bytes]] = {}  # first serial → frames, for 0x8003
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    # ---- connection ----------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP connection and start reading platform frames."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self.closed.clear()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        """Close the connection (waiting for the reader to stop)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer = self._reader = self._task = None
        self.closed.set()

    async def login(self) -> None:
        """Connect if needed, register if no auth code is held (or it is refused), authenticate.

        Raises
        ------
        TerminalError
            When registration or authentication is refused.
        """
        if self._writer is None:
            await self.connect()
        fresh = self.auth_code is None
        if fresh:
            await self._register_or_fail()
        result = await self.authenticate()
        if result != ReplyResult.SUCCESS and not fresh:  # the code held is stale: register anew
            await self._register_or_fail()
            result = await self.authenticate()
        if result != ReplyResult.SUCCESS:
            raise TerminalError(f"{self.phone}: authentication refused ({result.name})")

    async def _register_or_fail(self) -> None:
        reply = await self.register()
        if reply.result != RegisterResult.SUCCESS:
            raise TerminalError(f"{self.phone}: registration refused ({reply.result.name})")

    # ---- requests ------------------------------------------------------------------------------
    def next_serial(self) -> int:
        """The next terminal serial number (0, 1, … 65535, 0 …)."""
        serial = self._serial
        self._serial = (serial + 1) & 0xFFFF
        return serial

    def frame(self, message: Message, serial: int | None = None) -> tuple[bytes, int]:
        """Encode a message as this terminal would send it; returns (frame, serial)."""
        serial = self.next_serial() if serial is None else serial
        return encode_frame(message, phone=self.phone, serial=serial, version=self.version), serial

    def expect(self, serial: int, msg_id: int | None = None) -> asyncio.Future[Message]:
        """A future for the platform's reply to ``serial`` (create it before sending).

        With ``msg_id`` a 0x8001 counts only if it names that id (0x8100 answers 0x0100).
        """
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[serial] = (future, msg_id)
        return future

    async def wait_reply(self, future: asyncio.Future[Message]) -> Message:
        """Wait for a reply future, at most ``reply_timeout`` seconds."""
        try:
            return await asyncio.wait_for(future, self.reply_timeout)
        except TimeoutError:
            raise TerminalError(f"{self.phone}: no reply in {self.reply_timeout}s") from None

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (broken frames, fuzz, prepared frames)."""
        if self._writer is None:
            raise TerminalError(f"{self.phone}: not connected")
        self._writer.write(data)

    async def request(self, message: Message) -> Message:
        """Send one message and return the platform's reply to it."""
        data, serial = self.frame(message)
        future = self.expect(serial, message_id(message))
        self.send_raw(data)
        return await self.wait_reply(future)

    async def _general(self, message: Message) -> ReplyResult:
        reply = await self.request(message)
        if not isinstance(reply, PlatformGeneralReply):
            raise TerminalError(f"{self.phone}: unexpected reply {reply!r}")
        return reply.result

    async def register(self) -> RegisterReply:
        """0x0100; keeps the auth code on success."""
        reply = await self.request(self.registration)
        if not isinstance(reply, RegisterReply):
            raise TerminalError(f"{self.phone}: unexpected reply {reply!r}")
        if reply.result == RegisterResult.SUCCESS:
            self.auth_code = reply.auth_code
        return reply

    async def authenticate(self, code: bytes | None = None) -> ReplyResult:
        """0x0102 with ``code`` (default the one held)."""
        code = self.auth_code if code is None else code
        if code is None:
            raise TerminalError(f"{self.phone}: no auth code; register first")
        imei = self.phone[-15:].rjust(15, "0") if self.version == 2019 else ""
        version = "sim-1.0" if self.version == 2019 else ""
        return await self._general(Authentication(code, imei, version))

    async def heartbeat(self) -> ReplyResult:
        """0x0002."""
        return await self._general(Heartbeat())

    async def unregister(self) -> ReplyResult:
        """0x0003; the held auth code is forgotten on success."""
        result = await self._general(Unregister())
        if result == ReplyResult.SUCCESS:
            self.auth_code = None
        return result

    async def send_location(self, location: Location) -> ReplyResult:
        """0x0200; the position is remembered for 0x8201 answers."""
        self.position = location
        return await self._general(location)

    async def send_unknown(self, msg_id: int, body: bytes = b"") -> ReplyResult:
        """A message id the platform may not know (expect result 3)."""
        return await self._general(UnknownMessage(msg_id, body))

    async def send_batch(
        self,
        locations: Sequence[Location],
        *,
        kind: BatchType = BatchType.NORMAL,
        package_size: int = MAX_BODY_LENGTH,
        order: Sequence[int] | None = None,
        skip: Sequence[int] = (),
    ) -> ReplyResult:
        """0x0704, subpackaged when the body exceeds ``package_size``.

        Parameters
        ----------
        locations : sequence of Location
            The reports.
        kind : BatchType
            Normal or blind-area backfill.
        package_size : int
            Body bytes per package (small values force subpackaging).
        order : sequence of int, optional
            0-based package order to send in (default as numbered).
        skip : sequence of int
            0-based packages not sent at first (the platform should ask with 0x8003).

        Returns
        -------
        ReplyResult
            The platform's answer to the whole message.
        """
        if locations:
            self.position = locations[-1]
        message = BatchLocation(kind, tuple(locations))
        first = self._serial
        frames = encode_subpackages(
            message, phone=self.phone, serial=first, version=self.version, package_size=package_size
        )
        self._serial = (first + len(frames)) & 0xFFFF
        if len(frames) == 1:  # fits one frame: send it unpackaged, as terminals do
            data, _ = self.frame(message, serial=first)
            frames = [data]
        else:
            self._packages[first] = frames
            while len(self._packages) > 16:
                self._packages.pop(next(iter(self._packages)))
        future = self.expect(first, BatchLocation.MSG_ID)
        for index in order if order is not None else range(len(frames)):
            if index not in skip:
                self.send_raw(frames[index])
        return await self._general_future(future)

    async def _general_future(self, future: asyncio.Future[Message]) -> ReplyResult:
        reply = await self.wait_reply(future)
        if not isinstance(reply, PlatformGeneralReply):
            raise TerminalError(f"{self.phone}: unexpected reply {reply!r}")
        return reply.result

    def send_broken(self, kind: str | None = None, *, rng: random.Random | None = None) -> str:
        """Write one deliberately broken frame; returns its kind (see ``BROKEN_KINDS``).

        The platform drops it and counts it; the connection must stay usable.
        """
        rng = rng or random.Random()  # noqa: S311 - test data, not secrets
        kind = kind or rng.choice(BROKEN_KINDS)
        good, serial = self.frame(Heartbeat())
        if kind == "garbage":
            data = rng.randbytes(rng.randrange(1, 64)).replace(b"\x7e", b"")
        elif kind == "bad_checksum":
            packet = encode_header(Header(Heartbeat.MSG_ID, self.phone, serial, self.version, 1))
            data = b"\x7e" + escape(packet + bytes((checksum(packet) ^ 0x5A,))) + b"\x7e"
        elif kind == "bad_escape":
            data = good[:-1] + b"\x7d\x05\x7e"
        elif kind == "truncated":
            data = good[: len(good) // 2] + b"\x7e"
        elif kind == "oversized":
            data = b"\x7e" + b"\x30" * 8192 + b"\x7e"
        else:
            raise ValueError(f"unknown broken frame kind {kind!r}; use one of {BROKEN_KINDS}")
        self.send_raw(data)
        return kind

    # ---- platform messages ---------------------------------------------------------------------
    async def _read(self) -> None:
        reader = FrameReader()
        assert self._reader is not None  # noqa: S101 - set by connect()
        try:
            while data := await self._reader.read(65536):
                for packet in reader.feed(data):
                    self._on_packet(packet)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            for future, _ in self._replies.values():
                if not future.done():
                    future.set_exception(TerminalError(f"{self.phone}: connection closed"))
            self._replies.clear()

    def _on_packet(self, packet: Packet) -> None:
        try:
            frame = decode_packet(packet)
        except Jt808Error:
            return
        message, header = frame.message, frame.header
        if isinstance(message, PlatformGeneralReply | RegisterReply):
            answered = message.answered_id if isinstance(message, PlatformGeneralReply) else 0x0100
            future, msg_id = self._replies.get(message.answered_serial, (None, None))
            if future is not None and msg_id in (None, answered):
                del self._replies[message.answered_serial]
                if not future.done():
                    future.set_result(message)
            else:
                self.unexpected_replies += 1  # to raw frames nobody waits for (fuzz, floods)
            return
        self.inbox.put_nowait((header.serial, message))
        self._answer(header.serial, header.msg_id, message)

    def _answer(self, serial: int, msg_id: int, message: Message) -> None:
        if self._writer is None:
            return
        answer: Message
        if isinstance(message, PositionQuery):
            position = self.position
            if position.time is None:
                position = Location(
                    0, 0, 0.0, 0.0, 0, 0.0, 0, datetime.now(UTC).replace(microsecond=0)
                )
            answer = PositionQueryReply(serial, position)
        elif isinstance(message, ResendRequest):
            frames = self._packages.get(message.original_serial, [])
            for index in message.indices:
                if 1 <= index <= len(frames):
                    self.send_raw(frames[index - 1])
            return
        elif isinstance(message, TemporaryTracking | TextMessage):
            if isinstance(message, TextMessage):
                self.texts.append(message.text)
            else:
                self.tracking = message
            answer = TerminalGeneralReply(serial, msg_id, ReplyResult.SUCCESS)
        elif msg_id & 0x8000:
            answer = TerminalGeneralReply(serial, msg_id, ReplyResult.NOT_SUPPORTED)
        else:
            return
        self.answered_commands += 1
        self.send_raw(self.frame(answer)[0])
