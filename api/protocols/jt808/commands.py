"""Platform → terminal commands on record: the ``jt808_command`` table.

A command row is written *before* its frame goes out (so an answer can never arrive for a row
that does not exist yet) with the message id, the platform serial and the parameters; the
terminal's answer fills ``answered_at``, ``result`` (0 success, 1 failure, 2 message error,
3 not supported) and ``answer`` (JSON: which reply, and for 0x0201 the position reported).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import Conflict
from api.protocols.jt808.messages import ReplyResult

COLUMNS = (
    "c.id, c.device_id, d.identifier, c.msg_id, c.serial, c.params, c.requested_by, c.sent_at, "
    "c.answered_at, c.result, c.answer"
)
KINDS = {0x8201: "query_position", 0x8202: "track", 0x8300: "text"}


class TerminalOffline(Conflict):
    """The device's terminal has no authenticated connection to this server (HTTP 409)."""

    code = "terminal_offline"


def result_name(result: int | None) -> str | None:
    """``success``, ``failure``, ``message_error``, ``not_supported`` (None while unanswered)."""
    if result is None:
        return None
    try:
        return ReplyResult(result).name.lower()
    except ValueError:
        return str(result)


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["kind"] = KINDS.get(row["msg_id"], f"0x{row['msg_id']:04X}")
    row["result_name"] = result_name(row["result"])
    return row


async def record_sent(
    conn: AsyncConnection[Any],
    *,
    device_id: int,
    msg_id: int,
    serial: int,
    params: dict[str, Any],
    requested_by: str | None,
) -> int:
    """Insert a command about to be sent; returns its id.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection.
    device_id, msg_id, serial : int
        Device, message id and the platform serial the frame carries.
    params : dict
        The command's parameters (JSON).
    requested_by : str or None
        Who asked (user name), for the record.

    Returns
    -------
    int
        ``jt808_command.id``.
    """
    cur = await conn.execute(
        "INSERT INTO jt808_command (device_id, msg_id, serial, params, requested_by) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (device_id, msg_id, serial, Jsonb(params), requested_by),
    )
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - RETURNING yields the row
    return int(row[0])


async def record_answer(
    conn: AsyncConnection[Any],
    *,
    command_id: int | None,
    device_id: int,
    msg_id: int,
    serial: int,
    result: int,
    answer: dict[str, Any],
) -> int | None:
    """Store a terminal's answer on its command.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection.
    command_id : int or None
        The command when the connection remembers it; else the newest unanswered command of
        the device with that message id and serial is taken.
    device_id, msg_id, serial : int
        What the answer names (answered id and serial).
    result : int
        The reply's result (0 for a 0x0201 position).
    answer : dict
        JSON describing the answer.

    Returns
    -------
    int or None
        The command answered, or None when no pending command matches (counted by the caller).
    """
    cur = await conn.execute(
        """
        UPDATE jt808_command SET answered_at = now(), result = %(result)s, answer = %(answer)s
         WHERE id = (SELECT id FROM jt808_command
                      WHERE (%(id)s::bigint IS NOT NULL AND id = %(id)s)
                         OR (%(id)s::bigint IS NULL AND device_id = %(device)s
                             AND msg_id = %(msg)s AND serial = %(serial)s
                             AND answered_at IS NULL)
                      ORDER BY sent_at DESC LIMIT 1)
        RETURNING id
        """,
        {
            "id": command_id,
            "device": device_id,
            "msg": msg_id,
            "serial": serial,
            "result": result,
            "answer": Jsonb(answer),
        },
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def get_command(conn: AsyncConnection[Any], command_id: int) -> dict[str, Any] | None:
    """One command with its answer, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {COLUMNS} FROM jt808_command c JOIN device d ON d.id = c.device_id "  # noqa: S608 - constant columns
            "WHERE c.id = %s",
            (command_id,),
        )
        row = await cur.fetchone()
    return None if row is None else _row(row)


async def list_commands(
    conn: AsyncConnection[Any], device_id: int, *, since: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """A device's commands, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {COLUMNS} FROM jt808_command c JOIN device d ON d.id = c.device_id "  # noqa: S608 - constant columns
            "WHERE c.device_id = %s AND (%s::timestamptz IS NULL OR c.sent_at >= %s) "
            "ORDER BY c.sent_at DESC, c.id DESC LIMIT %s",
            (device_id, since, since, limit),
        )
        return [_row(r) for r in await cur.fetchall()]
