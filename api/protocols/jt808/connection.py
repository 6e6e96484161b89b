"""One terminal's TCP connection: framing, a bounded packet queue, back-pressure, replies.

``data_received`` only cuts the stream into checked packets (``FrameReader``: bad frames are
dropped and counted, the connection stays) and queues them; one worker task per connection
handles them in order (``Jt808Server.handle``), so replies keep the terminal's order and an
acknowledgement can wait for the database without blocking anybody else.

Back-pressure: when ``max_pending_frames`` packets wait, the connection stops reading
(``pause_reading``) until the worker has taken them; when the terminal does not read our replies
and the transport's write buffer fills (``pause_writing``), the worker stops handling until it
drains. A flooding terminal thus fills only its own TCP window; memory per connection is bounded
by the reader's frame limit, the queue bound and one read chunk.

Platform serial numbers are per connection, starting at 0, incremented for every frame sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from api.protocols.jt808.codec import encode_frame, message_id
from api.protocols.jt808.framing import FrameReader
from api.protocols.jt808.header import Header, Packet, Version
from api.protocols.jt808.messages import Message, PlatformGeneralReply, ReplyResult
from api.protocols.jt808.registration import TerminalDevice

if TYPE_CHECKING:
    from api.protocols.jt808.server import Jt808Server

log = logging.getLogger("gridpatrol.jt808")
MAX_REMEMBERED_COMMANDS = 256


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated terminal on a connection.

    Attributes
    ----------
    device : TerminalDevice
        The device it authenticated as.
    phone : str
        The normalised phone (device key).
    header_phone : str
        The phone digits as the terminal writes them (echoed in our frames).
    version : {2013, 2019}
        Edition of its authentication frame; our frames use it.
    protocol_version : int
        Its 2019 protocol version byte.
    since : float
        Wall-clock time of authentication (Unix seconds).
    """

    device: TerminalDevice
    phone: str
    header_phone: str
    version: Version
    protocol_version: int
    since: float


class Connection(asyncio.Protocol):
    """The asyncio protocol of one terminal connection (see the module docstring)."""

    def __init__(self, server: Jt808Server) -> None:
        self.server = server
        settings = server.settings
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader(max_frame_size=settings.max_frame_bytes)
        self.pending: deque[Packet] = deque()
        self.max_pending = settings.max_pending_frames
        self.session: Session | None = None
        self.auth_failures = 0
        self.closed = False
        self.close_reason = ""
        self.peer = ""
        self.frames = 0
        loop = asyncio.get_running_loop()
        self.opened_at = self.last_frame = loop.time()
        self.opened_wall = time.time()
        self._serial = 0
        self._paused = False
        self._errors_seen = 0
        self.reader_errors_counted: dict[str, int] = {}  # per reason, already in server stats
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._worker: asyncio.Task[None] | None = None
        self._commands: OrderedDict[tuple[int, int], int] = OrderedDict()

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.server.admit(self):
            self.closed = True
            self.transport.close()
            return
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def data_received(self, data: bytes) -> None:
        stats = self.server.stats
        stats.bytes_in += len(data)
        reader = self.reader
        packets = reader.feed(data)
        errors = reader.errors.total()
        if errors != self._errors_seen:
            self._errors_seen = errors
            self.server.count_frame_errors(self)
        if not packets:
            return
        stats.frames_in += len(packets)
        self.frames += len(packets)
        self.last_frame = asyncio.get_running_loop().time()
        self.pending.extend(packets)
        self._wakeup.set()
        if len(self.pending) >= self.max_pending and not self._paused and self.transport:
            self._paused = True
            stats.events["paused"] += 1
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - protocol API
        self.closed = True
        self.pending.clear()
        self._wakeup.set()
        self._writable.set()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- sending -------------------------------------------------------------------------------
    def next_serial(self) -> int:
        """The next platform serial number of this connection (0, 1, … 65535, 0 …)."""
        serial = self._serial
        self._serial = (serial + 1) & 0xFFFF
        return serial

    def send(self, message: Message, *, to: Header | None = None, serial: int | None = None) -> int:
        """Encode and write one frame; returns the serial it carries.

        Parameters
        ----------
        message : Message
            What to send.
        to : Header, optional
            The header being answered: its phone and edition are echoed. Default: the session's.
        serial : int, optional
            A serial taken earlier with ``next_serial`` (a command on record); default the next.

        Returns
        -------
        int
            The platform serial used (nothing is written when the connection is closing).
        """
        if serial is None:
            serial = self.next_serial()
        if to is not None:
            phone, version, pv = to.phone, to.version, to.protocol_version
        elif self.session is not None:
            session = self.session
            phone, version, pv = session.header_phone, session.version, session.protocol_version
        else:
            raise RuntimeError("no terminal to address: not authenticated and no header")
        transport = self.transport
        if transport is None or transport.is_closing():
            return serial
        transport.write(
            encode_frame(message, phone=phone, serial=serial, version=version, protocol_version=pv)
        )
        self.server.stats.frames_out += 1
        return serial

    def reply(self, header: Header, result: ReplyResult) -> None:
        """Answer a terminal message with 0x8001 (answered serial and id, result)."""
        self.send(PlatformGeneralReply(header.serial, header.msg_id, result), to=header)
        self.server.stats.replies[f"0x8001:{int(result)}"] += 1

    def expect_answer(self, serial: int, message: Message, command_id: int) -> None:
        """Remember a command on record so its answer finds it without a search."""
        self._commands[serial, message_id(message)] = command_id
        while len(self._commands) > MAX_REMEMBERED_COMMANDS:
            self._commands.popitem(last=False)

    def take_command(self, serial: int, msg_id: int) -> int | None:
        """The command id answered by (serial, message id), forgotten once taken."""
        return self._commands.pop((serial, msg_id), None)

    def close(self, reason: str) -> None:
        """Close the connection (idempotent), counting ``reason`` in the events."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.server.stats.events[reason] += 1
        deaf = not self._writable.is_set()  # the peer does not read: nothing would flush
        self._wakeup.set()
        self._writable.set()
        if self.transport is not None:
            if deaf:
                self.transport.abort()
            else:
                self.transport.close()

    # ---- work ----------------------------------------------------------------------------------
    async def _work(self) -> None:
        try:
            while True:
                while not self.pending:
                    if self.closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if not self._writable.is_set():
                    await self._writable.wait()
                if self.closed:
                    return
                take = min(len(self.pending), self.max_pending)
                packets = [self.pending.popleft() for _ in range(take)]
                if self._paused and len(self.pending) <= self.max_pending // 2:
                    self._paused = False
                    if self.transport is not None and not self.closed:
                        self.transport.resume_reading()
                await self.server.handle(self, packets)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("jt808: handling a message from %s failed; closing", self.peer)
            self.server.stats.errors["handler_error"] += 1
            self.close("handler_failed")

    async def stop(self, grace_s: float = 2.0) -> None:
        """Close, let the worker finish what it holds (an acknowledgement waiting for a commit)
        for up to ``grace_s`` seconds, then cancel it (server shutdown)."""
        self.close("server_stopped")
        worker = self._worker
        if worker is None or worker.done():
            return
        await asyncio.wait({worker}, timeout=grace_s)
        if not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
