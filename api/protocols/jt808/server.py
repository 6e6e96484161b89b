"""The JT/T 808 terminal server (TCP, default port 5015; editions 2013 and 2019 side by side).

Started in the app lifespan next to the OsmAnd server; every location goes through the shared
group-commit writer (same filters, quarantine, idempotent store and live state as HTTP), and
is acknowledged only once committed (see ``handlers``).

Connections: at most ``max_connections``; one per terminal — when a terminal authenticates on
a new connection, its old connection is closed (``replaced``). A connection that has not
authenticated within ``auth_timeout_s`` (a never-authenticating terminal), or has sent no valid
frame for ``idle_timeout_s`` (a vanished terminal, or a slow-drip sender whose bytes never make
a frame), is closed by a housekeeping tick, which also asks terminals for the missing packages of
stalled subpackaged messages (0x8003, at most ``max_resend_requests`` times; the
``Reassembler`` drops a message ``reassembly_timeout_s`` after its last package).

Service API for dispatch: ``query_position``, ``track`` and ``send_text`` send 0x8201, 0x8202
and 0x8300 to a connected terminal, record the command in ``jt808_command`` and return its id;
the terminal's 0x0001 / 0x0201 answer is recorded there when it comes. ``TerminalOffline``
(HTTP 409) when the terminal is not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.errors import Unprocessable
from api.ingest.writer import GroupWriter
from api.limits import connection_cap
from api.protocols.jt808 import commands, handlers
from api.protocols.jt808.codec import message_id
from api.protocols.jt808.commands import TerminalOffline
from api.protocols.jt808.connection import Connection, Session
from api.protocols.jt808.header import MAX_BODY_LENGTH, Packet
from api.protocols.jt808.messages import (
    Message,
    PositionQuery,
    ResendRequest,
    TemporaryTracking,
    TextMessage,
)
from api.protocols.jt808.reassembly import PartialKey, Reassembler
from api.protocols.jt808.registration import normalise_phone
from api.protocols.jt808.stats import Stats, hex_id
from api.settings import Jt808Settings

log = logging.getLogger("gridpatrol.jt808")
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")  # Linux, BSD: N listeners share the port
TEXT_DISPLAY_TTS = 0x0C  # 0x8300 flags: bit 2 show on the display, bit 3 read aloud (TTS)
TEXT_EMERGENCY = 0x01


class Jt808Server:
    """Listens for JT/T 808 terminals; see the module docstring.

    Parameters
    ----------
    settings : Jt808Settings
        Port, limits, timeouts, auto-registration.
    writer : GroupWriter
        The process's group-commit writer.
    pool : AsyncConnectionPool
        For registration, authentication and the command record.
    """

    def __init__(
        self, settings: Jt808Settings, writer: GroupWriter, pool: AsyncConnectionPool
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.pool = pool
        self.stats = Stats()
        self.joiner = Reassembler(
            timeout=settings.reassembly_timeout_s,
            max_message_size=settings.max_message_kb << 10,
            max_total_size=settings.max_reassembly_mb << 20,
        )
        self.connections: set[Connection] = set()
        self.by_device: dict[int, Connection] = {}
        self.by_phone: dict[str, Connection] = {}
        self._resend: dict[PartialKey, tuple[int, float]] = {}
        self._server: asyncio.Server | None = None
        self._tick: asyncio.Task[None] | None = None
        # told each device id that authenticates here: with several ingest processes, the
        # others close their connection of that terminal (api.roles.relay)
        self.on_bind: Callable[[int], None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on ``settings.host:settings.port`` (0 = any free port) and start ticking."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            # several ingest processes on one port (gridpatrol serve --role ingest, N times);
            # the kernel spreads new connections over them
            reuse_port=REUSE_PORT,
            backlog=4096,
        )
        self._tick = loop.create_task(self._housekeeping(), name="jt808-housekeeping")
        log.info("JT/T 808 protocol on %s:%d", self.settings.host, self.port)

    @property
    def port(self) -> int:
        """The port listened on (the real one when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, close every connection (letting acknowledgements finish)."""
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
            self._tick = None
        if self._server is not None:
            self._server.close()
            await asyncio.gather(*(conn.stop() for conn in list(self.connections)))
            await self._server.wait_closed()
            self._server = None

    # ---- connections ---------------------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        """Count a new connection in, unless the server is full."""
        if len(self.connections) >= connection_cap(self.settings.max_connections, 0.4):
            self.stats.events["rejected_full"] += 1
            return False
        self.connections.add(conn)
        self.stats.events["connected"] += 1
        return True

    def forget(self, conn: Connection) -> None:
        """A connection ended: drop it from every index."""
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.events["disconnected"] += 1
        self.unbind(conn)

    def bind(self, conn: Connection, session: Session) -> None:
        """Make ``conn`` the one connection of its terminal, closing any older one."""
        self.unbind(conn)
        old = self.by_device.get(session.device.device_id)
        if old is not None and old is not conn:
            self.unbind(old)
            old.close("replaced")
        conn.session = session
        self.by_device[session.device.device_id] = conn
        self.by_phone[session.phone] = conn
        if self.on_bind is not None:
            self.on_bind(session.device.device_id)

    def unbind(self, conn: Connection) -> None:
        """Forget the connection's session (unregistered, replaced or gone)."""
        session = conn.session
        if session is None:
            return
        if self.by_device.get(session.device.device_id) is conn:
            del self.by_device[session.device.device_id]
        if self.by_phone.get(session.phone) is conn:
            del self.by_phone[session.phone]
        conn.session = None

    async def handle(self, conn: Connection, packets: list[Packet]) -> None:
        """Handle a connection's packets in order (``handlers.handle``)."""
        await handlers.handle(self, conn, packets)

    def count_frame_errors(self, conn: Connection) -> None:
        """Bring the server's error counters up to date with a connection's frame reader."""
        seen = conn.reader_errors_counted
        for reason, n in conn.reader.errors.items():
            delta = n - seen.get(reason, 0)
            if delta:
                self.stats.errors[reason] += delta
                seen[reason] = n

    # ---- housekeeping --------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        s = self.settings
        tick = max(0.02, min(1.0, s.resend_after_s / 2, s.idle_timeout_s / 4, s.auth_timeout_s / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            try:
                self.sweep(loop.time())
            except Exception:
                log.exception("jt808 housekeeping failed")

    def sweep(self, now: float) -> None:
        """Close idle and never-authenticated connections; ask for missing packages."""
        s = self.settings
        for conn in list(self.connections):
            if conn.closed:
                continue
            if conn.session is None and now - conn.opened_at > s.auth_timeout_s:
                conn.close("auth_timeout")
            elif now - conn.last_frame > s.idle_timeout_s:
                conn.close("idle_closed")
        self.joiner.expire(now=now)
        if s.max_resend_requests:
            for key in self.joiner.idle(now=now, after=s.resend_after_s):
                self._request_missing(key, now)
        if self._resend:
            live = set(self.joiner.partials())
            for key in [k for k in self._resend if k not in live]:
                del self._resend[key]

    def _request_missing(self, key: PartialKey, now: float) -> None:
        asked, last = self._resend.get(key, (0, -math.inf))
        if asked >= self.settings.max_resend_requests or now - last < self.settings.resend_after_s:
            return
        conn = self.by_phone.get(normalise_phone(key.phone))
        missing = self.joiner.missing(key)
        if conn is None or conn.closed or not missing:
            return
        conn.send(ResendRequest(key.first_serial, tuple(missing)))
        self._resend[key] = (asked + 1, now)
        self.stats.events["resend_requested"] += 1

    # ---- state for the API ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges (``GET /api/v1/jt808/stats``)."""
        return self.stats.snapshot(
            port=self.port,
            connections=len(self.connections),
            authenticated=len(self.by_device),
            reassembly={
                "partial_messages": len(self.joiner),
                "buffered_bytes": self.joiner.buffered_bytes,
                **dict(self.joiner.stats),
            },
        )

    def terminals(self) -> list[dict[str, Any]]:
        """The authenticated terminals, one entry per device (``GET /api/v1/jt808/terminals``)."""
        loop_now = asyncio.get_running_loop().time()
        out = []
        for device_id, conn in sorted(self.by_device.items()):
            session = conn.session
            if session is None:
                continue
            out.append(
                {
                    "device_id": device_id,
                    "identifier": session.device.identifier,
                    "home_village": session.device.home_village,
                    "phone": session.phone,
                    "version": session.version,
                    "peer": conn.peer,
                    "connected_at": conn.opened_wall,
                    "authenticated_at": session.since,
                    "frames": conn.frames,
                    "idle_s": round(loop_now - conn.last_frame, 3),
                }
            )
        return out

    # ---- platform → terminal commands ----------------------------------------------------------
    async def query_position(self, device_id: int, *, requested_by: str | None = None) -> int:
        """Send 0x8201; the 0x0201 answer (a position, also stored as a fix) is recorded.

        Returns
        -------
        int
            The ``jt808_command`` id.

        Raises
        ------
        TerminalOffline
            When the device's terminal is not connected and authenticated here.
        """
        return await self._command(device_id, PositionQuery(), {}, requested_by)

    async def track(
        self,
        device_id: int,
        interval_s: int,
        duration_s: int,
        *,
        requested_by: str | None = None,
    ) -> int:
        """Send 0x8202: report every ``interval_s`` seconds for ``duration_s`` (0 stops).

        Raises
        ------
        TerminalOffline
            When the terminal is not connected.
        Unprocessable
            For an interval outside 0–65535 s or a duration outside 0–2^32-1 s.
        """
        if not 0 <= interval_s <= 0xFFFF or not 0 <= duration_s <= 0xFFFFFFFF:
            raise Unprocessable("interval 0–65535 s, duration 0–4294967295 s", field="interval_s")
        message = TemporaryTracking(interval_s, duration_s if interval_s else 0)
        params = {"interval_s": interval_s, "duration_s": message.validity_s}
        return await self._command(device_id, message, params, requested_by)

    async def send_text(
        self,
        device_id: int,
        text: str,
        *,
        emergency: bool = False,
        requested_by: str | None = None,
    ) -> int:
        """Send 0x8300 (GBK text, shown on the display and read aloud).

        Raises
        ------
        TerminalOffline
            When the terminal is not connected.
        Unprocessable
            For empty text, text GBK cannot encode, or text longer than one frame.
        """
        try:
            size = len(text.encode("gbk"))
        except UnicodeEncodeError as exc:
            raise Unprocessable(f"not encodable in GBK: {text[exc.start : exc.end]!r}") from None
        if not 0 < size <= MAX_BODY_LENGTH - 2:
            raise Unprocessable(f"text is {size} GBK bytes; 1–{MAX_BODY_LENGTH - 2} fit")
        flags = TEXT_DISPLAY_TTS | (TEXT_EMERGENCY if emergency else 0)
        params = {"text": text, "flags": flags}
        return await self._command(device_id, TextMessage(flags, text), params, requested_by)

    async def _command(
        self,
        device_id: int,
        message: Message,
        params: dict[str, Any],
        requested_by: str | None,
    ) -> int:
        conn = self.by_device.get(device_id)
        if conn is None or conn.closed or conn.session is None:
            raise TerminalOffline(f"the terminal of device {device_id} is not connected")
        serial = conn.next_serial()
        msg_id = message_id(message)
        async with self.pool.connection() as db:
            command_id = await commands.record_sent(
                db,
                device_id=device_id,
                msg_id=msg_id,
                serial=serial,
                params=params,
                requested_by=requested_by,
            )
            if conn.closed or conn.session is None:  # gone while we wrote the record
                await db.execute("DELETE FROM jt808_command WHERE id = %s", (command_id,))
                raise TerminalOffline(f"the terminal of device {device_id} disconnected")
        conn.expect_answer(serial, message, command_id)
        conn.send(message, serial=serial)
        self.stats.commands[f"sent {hex_id(msg_id)}"] += 1
        return command_id
