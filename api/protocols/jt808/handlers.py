"""What the server does with each terminal message, in the order the terminal sent them.

Rules:

- Before authentication only 0x0100 register and 0x0102 authenticate are handled; anything else
  (subpackages included) gets 0x8001 result 1 and is neither decoded nor stored. After
  ``max_auth_failures`` refused registrations or authentications the connection is closed.
- A registration of a device whose terminal is connected on another connection, or was heard
  from within ``reregister_quiet_s``, is refused with 0x8100 result 3 (``registration``): a
  copied maker + terminal id does not take a live terminal's place. Every registration naming a
  device is audited.
- After authentication a frame naming another phone than the session's is refused the same way
  (``phone_mismatch``): one connection speaks for one terminal.
- Subpackaged messages go through the server's ``Reassembler``; the whole message is answered
  once, with the serial of its first package (the one 0x8003 names).
- Locations (0x0200, 0x0704, the position in 0x0201) queued back to back are stored with ONE
  ``GroupWriter.submit``; each 0x0200/0x0704 is acknowledged (0x8001 result 0) only after that
  future resolved — stored, duplicate or quarantined alike. When the writer is unavailable the
  answer is result 1 (failure): the terminal keeps the fixes and sends them again.
- A body that does not decode gets result 2 (3 for an unsupported encryption); an unknown id, or
  a platform message sent by a terminal, gets result 3 "not supported". Vendor additional
  information that does not parse is no decode error: the position is stored with the tail in
  its extras (``raw_tail``), answered 0 and counted (``fixes.raw_tail``).
- 0x0001 and 0x0201 are answers to our commands: recorded, not answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg_pool import PoolTimeout

from api.ingest.writer import IngestUnavailable
from api.protocols.jt808 import commands, registration
from api.protocols.jt808.codec import decode_body
from api.protocols.jt808.connection import Connection, Session
from api.protocols.jt808.errors import BodyError
from api.protocols.jt808.fixes import Report, to_batch
from api.protocols.jt808.header import Header, Packet
from api.protocols.jt808.location import BatchLocation, Location, PositionQueryReply
from api.protocols.jt808.messages import (
    Authentication,
    Heartbeat,
    Message,
    Register,
    RegisterReply,
    ReplyResult,
    TerminalGeneralReply,
    Unregister,
)
from api.protocols.jt808.registration import normalise_phone
from api.protocols.jt808.stats import hex_id

if TYPE_CHECKING:
    from api.protocols.jt808.server import Jt808Server

log = logging.getLogger("gridpatrol.jt808")
OPEN_IDS: Final = frozenset({Register.MSG_ID, Authentication.MSG_ID})
MAX_GROUP: Final = 5000  # location reports per submit
DB_ERRORS: Final = (psycopg.Error, PoolTimeout)


@dataclass
class _Group:
    """Location reports waiting for one submit, and what to do once it resolved; ``session``
    is the one they arrived under (the connection may be replaced while they are stored)."""

    session: Session | None = None
    reports: list[Report] = field(default_factory=list)
    acks: list[Header] = field(default_factory=list)
    answers: list[tuple[int, Location]] = field(default_factory=list)
    tails: int = 0  # reports with an undecodable vendor tail (stored all the same)

    def __bool__(self) -> bool:
        return bool(self.reports or self.acks or self.answers)


async def handle(server: Jt808Server, conn: Connection, packets: list[Packet]) -> None:
    """Handle checked packets of one connection in order (see the module docstring).

    Parameters
    ----------
    server : Jt808Server
        Owner of the writer, the pool, the reassembler and the counters.
    conn : Connection
        Where the packets came from and replies go.
    packets : list of Packet
        Checked packets in arrival order.
    """
    stats = server.stats
    group = _Group()
    now = asyncio.get_running_loop().time()
    for received in packets:
        if conn.closed:  # replaced, timed out or refused: the rest will be sent again
            break
        header, body = received.header, received.body
        stats.messages[header.msg_id] += 1
        session = conn.session
        if session is None:
            if header.msg_id not in OPEN_IDS or header.subpackaged:
                stats.events["unauthenticated"] += 1
                conn.reply(header, ReplyResult.FAILURE)
                continue
        elif header.phone != session.header_phone and (
            normalise_phone(header.phone) != session.phone
        ):
            stats.errors["phone_mismatch"] += 1
            conn.reply(header, ReplyResult.FAILURE)
            continue
        if header.subpackaged:
            whole = server.joiner.add(received, now=now)
            if whole is None:
                continue
            header, body = whole.header, whole.body
        try:
            message = decode_body(header, body)
        except BodyError as exc:
            stats.errors[exc.reason] += 1
            unsupported = exc.reason == "unsupported_encryption"
            result = ReplyResult.NOT_SUPPORTED if unsupported else ReplyResult.MESSAGE_ERROR
            conn.reply(header, result)
            continue
        if conn.session is not None and _collect(group, conn.session, header, message):
            if len(group.reports) >= MAX_GROUP:
                await _flush(server, conn, group)
                group = _Group()
            continue
        if group:
            await _flush(server, conn, group)
            group = _Group()
        await _one(server, conn, header, message)
    if group:
        await _flush(server, conn, group)


def _collect(group: _Group, session: Session, header: Header, message: Message) -> bool:
    """Add a location-carrying message to the group; False for any other message."""
    if not isinstance(message, Location | BatchLocation | PositionQueryReply):
        return False
    group.session = group.session or session
    if isinstance(message, Location):
        group.reports.append(Report(message, f"0x0200 serial {header.serial}"))
        group.acks.append(header)
        group.tails += bool(message.raw_tail)
    elif isinstance(message, BatchLocation):
        origin = f"0x0704 serial {header.serial} item"
        group.reports += [
            Report(fix, f"{origin} {i}") for i, fix in enumerate(message.locations, start=1)
        ]
        group.acks.append(header)
        group.tails += sum(1 for fix in message.locations if fix.raw_tail)
    else:
        group.reports.append(Report(message.location, f"0x0201 serial {header.serial}"))
        group.answers.append((message.answered_serial, message.location))
        group.tails += bool(message.location.raw_tail)
    return True


async def _flush(server: Jt808Server, conn: Connection, group: _Group) -> None:
    """Store the group's fixes, then acknowledge and record answers."""
    stats = server.stats
    session = group.session
    assert session is not None  # noqa: S101 - set with the first report
    identifier = session.device.identifier
    batch, errors = to_batch(identifier, group.reports)
    for error in errors:
        stats.fixes[f"quarantined_{error.reason}"] += 1
    if group.tails:
        stats.fixes["raw_tail"] += group.tails
    result = ReplyResult.SUCCESS
    try:
        stats.fixes["submitted"] += len(batch)
        await server.writer.submit(batch, protocol="jt808", errors=errors)
        stats.fixes["acknowledged"] += len(group.reports)
    except IngestUnavailable as exc:
        stats.events["ingest_unavailable"] += 1
        log.warning("jt808: %d fixes of %s not stored: %s", len(group.reports), identifier, exc)
        result = ReplyResult.FAILURE
    for header in group.acks:
        conn.reply(header, result)
    for serial, location in group.answers:
        answer = {
            "reply": "0x0201",
            "time": location.time.isoformat() if location.time else None,
            "lat": location.latitude,
            "lon": location.longitude,
            "speed_ms": location.speed_ms,
            "course": location.direction,
            "status": location.status,
            "alarm": location.alarm,
        }
        await _record_answer(server, conn, session, serial, 0x8201, 0, answer)


async def _one(server: Jt808Server, conn: Connection, header: Header, message: Message) -> None:
    """Every message that is not a location."""
    match message:
        case Register():
            await _register(server, conn, header, message)
        case Authentication():
            await _authenticate(server, conn, header, message)
        case Heartbeat():
            conn.reply(header, ReplyResult.SUCCESS)
        case Unregister():
            await _unregister(server, conn, header)
        case TerminalGeneralReply():
            await _record_answer(
                server,
                conn,
                conn.session,
                message.answered_serial,
                message.answered_id,
                int(message.result),
                {"reply": "0x0001", "result": message.result.name.lower()},
            )
        case _:
            server.stats.events["not_supported"] += 1  # per id: see stats.messages
            conn.reply(header, ReplyResult.NOT_SUPPORTED)


async def _register(server: Jt808Server, conn: Connection, header: Header, msg: Register) -> None:
    settings = server.settings

    def connected(device_id: int) -> bool:
        other = server.by_device.get(device_id)
        return other is not None and other is not conn and not other.closed

    holder = conn.session.device.device_id if conn.session is not None else None
    try:
        async with server.pool.connection() as db:
            outcome = await registration.register(
                db,
                normalise_phone(header.phone),
                msg,
                version=header.version,
                protocol_version=header.protocol_version,
                auto_register=settings.auto_register,
                auto_crs=settings.auto_register_crs,
                by_identifier=settings.match_identifier,
                quiet_s=settings.reregister_quiet_s,
                connected=connected,
                holder=holder,
                peer=conn.peer,
            )
    except DB_ERRORS as exc:
        log.warning("jt808: registration of %s failed: %s", header.phone, exc)
        server.stats.events["db_error"] += 1
        conn.reply(header, ReplyResult.FAILURE)
        return
    ok = outcome.auth_code != b""
    server.stats.events["registered" if ok else f"register_refused {outcome.why}"] += 1
    conn.send(RegisterReply(header.serial, outcome.result, outcome.auth_code), to=header)
    server.stats.replies[f"0x8100:{int(outcome.result)}"] += 1
    if not ok:  # refused registrations count like wrong codes: no endless DB work per socket
        _failed(server, conn)


async def _authenticate(
    server: Jt808Server, conn: Connection, header: Header, msg: Authentication
) -> None:
    phone = normalise_phone(header.phone)
    try:
        async with server.pool.connection() as db:
            device, why = await registration.authenticate(
                db, phone, msg.auth_code, by_identifier=server.settings.match_identifier
            )
    except DB_ERRORS as exc:
        log.warning("jt808: authentication of %s failed: %s", header.phone, exc)
        server.stats.events["db_error"] += 1
        conn.reply(header, ReplyResult.FAILURE)
        return
    if device is None:
        server.stats.events[f"auth_failed {why}"] += 1
        conn.reply(header, ReplyResult.FAILURE)
        _failed(server, conn)
        return
    session = Session(
        device, phone, header.phone, header.version, header.protocol_version, time.time()
    )
    server.bind(conn, session)
    server.stats.events["authenticated"] += 1
    conn.reply(header, ReplyResult.SUCCESS)


def _failed(server: Jt808Server, conn: Connection) -> None:
    """Count a refused registration or authentication; close after too many."""
    conn.auth_failures += 1
    if conn.auth_failures >= server.settings.max_auth_failures:
        conn.close("auth_failures")


async def _unregister(server: Jt808Server, conn: Connection, header: Header) -> None:
    session = conn.session
    assert session is not None  # noqa: S101 - only authenticated connections get here
    try:
        async with server.pool.connection() as db:
            device = session.device
            who = registration.terminal_principal(
                session.phone, device.device_id, device.home_village
            )
            await registration.unregister(db, device.device_id, actor=who)
    except DB_ERRORS as exc:
        log.warning("jt808: unregistering %s failed: %s", header.phone, exc)
        server.stats.events["db_error"] += 1
        conn.reply(header, ReplyResult.FAILURE)
        return
    server.stats.events["unregistered"] += 1
    conn.reply(header, ReplyResult.SUCCESS)
    server.unbind(conn)


async def _record_answer(
    server: Jt808Server,
    conn: Connection,
    session: Session | None,
    serial: int,
    msg_id: int,
    result: int,
    answer: dict[str, Any],
) -> None:
    if session is None:
        return
    command_id = conn.take_command(serial, msg_id)
    try:
        async with server.pool.connection() as db:
            answered = await commands.record_answer(
                db,
                command_id=command_id,
                device_id=session.device.device_id,
                msg_id=msg_id,
                serial=serial,
                result=result,
                answer=answer,
            )
    except DB_ERRORS as exc:
        log.warning("jt808: answer of %s not recorded: %s", session.phone, exc)
        server.stats.events["db_error"] += 1
        return
    if answered is None:
        server.stats.commands["answer_without_command"] += 1
    else:
        server.stats.commands[f"answered {hex_id(msg_id)}"] += 1
