"""Terminal registration (0x0100), authentication (0x0102) and unregistration (0x0003).

Identity. A terminal is named by its phone number (终端手机号), BCD in the header: 12 digits in
2013, 20 in 2019, left-padded with zeros. ``normalise_phone`` strips the leading zeros, so both
editions of one number are one key (``device.jt808_phone``). A terminal belongs to the device an
operator bound it to: the device whose ``jt808_phone`` is that key (``gridpatrol jt808 bind``,
audited). Only when the opt-in setting ``match_identifier`` is on
(off by default) does a terminal also belong to the device whose ``identifier`` is that key and
which has no other 808 phone; with it on, any numeric identifier (an IMEI …) of a device not yet
bound can be claimed by the first terminal that registers with it. Unknown terminals are refused
(0x8100 result 4) unless auto-registration is on: then a device is created with identifier and
``jt808_phone`` = the key and the reported plate.

Registration issues a fresh random ASCII auth code and keeps only its SHA-256; authentication
compares the digests with ``hmac.compare_digest``. A device registered by one terminal (maker +
terminal id) refuses another terminal (result 1, vehicle registered) until the first sends 0x0003
or an admin resets it (``gridpatrol jt808 reset``); a terminal id registered on another device is
refused with result 3.

Re-registration. Maker and terminal id travel in clear, so a registration that copies them is no
proof of being the terminal. A device that holds a registration is therefore registered anew only
when its terminal is neither connected (to this process, on another connection than the one
asking) nor heard from within ``quiet_s`` (its latest stored fix, ``device_state.received_at``,
any process); otherwise the answer is result 3 (terminal already registered) and the old code
stays valid. The connection authenticated as the device may always register again (it proved
the code). A terminal that lost its code registers again once silent for ``quiet_s``, or at once
after an operator's reset. Every registration that names a device — first or repeated, accepted
or refused — is written to the audit log (``jt808.register`` / ``jt808.register_refused``, by
``jt808:<phone>``) in the registration's transaction, and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.rows import dict_row

from api import audit
from api.auth import Principal
from api.protocols.jt808.header import Version
from api.protocols.jt808.messages import Register, RegisterResult
from api.scope import Scope

log = logging.getLogger("gridpatrol.jt808")

_LAST_HEARD = """
SELECT received_at, received_at > now() - make_interval(secs => %(quiet)s) AS recent
  FROM device_state
 WHERE device_id = %(id)s
"""
_FIND = """
SELECT id, identifier, enabled, home_village, jt808_auth_hash, jt808_manufacturer,
       jt808_terminal_id, jt808_registered_at
  FROM device
 WHERE jt808_phone = %(phone)s
    OR (%(by_identifier)s AND jt808_phone IS NULL AND identifier = %(phone)s)
 ORDER BY jt808_phone IS NULL
 LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class TerminalDevice:
    """The device a terminal phone resolves to.

    Attributes
    ----------
    device_id : int
        ``device.id``.
    identifier : str
        ``device.identifier``, the key fixes are stored under.
    enabled : bool
        Disabled devices cannot register or authenticate.
    home_village : str or None
        The scope key of the device.
    """

    device_id: int
    identifier: str
    enabled: bool
    home_village: str | None


@dataclass(frozen=True, slots=True)
class Registration:
    """The outcome of a 0x0100: the 0x8100 result, the code (on success) and why."""

    result: RegisterResult
    auth_code: bytes = b""
    device: TerminalDevice | None = None
    why: str = "registered"


def normalise_phone(phone: str) -> str:
    """The device key of a header phone: its digits without leading zeros (``"0"`` if none).

    Parameters
    ----------
    phone : str
        BCD digits as in ``Header.phone``.

    Returns
    -------
    str
        E.g. ``"013912345678"`` and ``"00000000013912345678"`` both give ``"13912345678"``.
    """
    return phone.lstrip("0") or "0"


def new_auth_code() -> bytes:
    """A fresh auth code: 16 upper-case hex characters (64 random bits), ASCII as terminals
    store and echo it."""
    return secrets.token_hex(8).upper().encode("ascii")


def auth_hash(code: bytes) -> bytes:
    """SHA-256 of an auth code (what is stored)."""
    return hashlib.sha256(code).digest()


def _device(row: dict[str, Any]) -> TerminalDevice:
    return TerminalDevice(row["id"], row["identifier"], row["enabled"], row["home_village"])


async def find(
    conn: AsyncConnection[Any], phone: str, *, by_identifier: bool = False
) -> dict[str, Any] | None:
    """The device row of a normalised phone (see the module docstring), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FIND, {"phone": phone, "by_identifier": by_identifier})
        return await cur.fetchone()


def terminal_principal(phone: str, device_id: int, village: str | None) -> Principal:
    """The audit log's actor for what a terminal does itself: ``jt808:<phone>``."""
    scope = Scope.parse([village]) if village else Scope()
    return Principal(name=f"jt808:{phone}", role="device", scope=scope, device_id=device_id)


def _text(value: str) -> str:
    """A terminal's string as JSON text can hold it: NUL (which ``jsonb`` refuses) as U+FFFD."""
    return value.replace("\x00", "\ufffd")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What the audit entry of one registration says besides its outcome."""

    phone: str
    message: Register
    peer: str | None

    async def record(
        self,
        conn: AsyncConnection[Any],
        row: dict[str, Any],
        outcome: Registration,
        **detail: Any,
    ) -> Registration:
        """Audit and log the outcome (in the caller's transaction) and return it."""
        ok = outcome.result == RegisterResult.SUCCESS
        again = row.get("jt808_auth_hash") is not None
        who = terminal_principal(self.phone, row["id"], row.get("home_village"))
        msg = self.message
        await audit.record(
            conn,
            who,
            "jt808.register" if ok else "jt808.register_refused",
            object_type="device",
            object_id=row["id"],
            detail={
                "result": int(outcome.result),
                "reason": outcome.why,
                "reregistration": again,
                "phone": self.phone,
                "peer": self.peer,
                "manufacturer": _text(msg.manufacturer),
                "model": _text(msg.model),
                "terminal_id": _text(msg.terminal_id),
                "plate": _text(msg.plate),
                "previous_registered_at": _iso(row.get("jt808_registered_at")),
                "previous_terminal": (
                    [row.get("jt808_manufacturer"), row.get("jt808_terminal_id")] if again else None
                ),
                **detail,
            },
        )
        if not ok:
            log.warning(
                "jt808: %sregistration of device %s by phone %s from %s refused (%s, result %d)",
                "re-" if again else "",
                row["identifier"],
                self.phone,
                self.peer,
                outcome.why,
                int(outcome.result),
            )
        elif again:
            log.warning(
                "jt808: device %s re-registered by phone %s from %s (maker %s, terminal %s); "
                "the previous auth code no longer works",
                row["identifier"],
                self.phone,
                self.peer,
                msg.manufacturer,
                msg.terminal_id,
            )
        return outcome


async def _refusal(
    cur: AsyncCursor[dict[str, Any]],
    row: dict[str, Any],
    message: Register,
    *,
    quiet_s: float,
    connected: Callable[[int], bool] | None,
    holder: int | None,
) -> tuple[Registration | None, datetime | None]:
    """Why a registration of the device ``row`` is refused (None: it is not), and when its
    terminal was last heard from (when that was looked up)."""
    terminal = (message.manufacturer, message.terminal_id)
    last_heard: datetime | None = None
    why: str | None = None
    result = RegisterResult.TERMINAL_REGISTERED
    if not row.get("enabled", True):
        why, result = "disabled_device", RegisterResult.NO_SUCH_TERMINAL
    elif row.get("jt808_auth_hash") is not None:
        if (row["jt808_manufacturer"], row["jt808_terminal_id"]) != terminal:
            why, result = "other_terminal", RegisterResult.VEHICLE_REGISTERED
        elif holder != row["id"]:  # a re-registration by someone not holding the code
            await cur.execute(_LAST_HEARD, {"id": row["id"], "quiet": quiet_s})
            heard = await cur.fetchone()
            last_heard = heard["received_at"] if heard else None
            if connected is not None and connected(row["id"]):
                why = "terminal_connected"
            elif heard is not None and quiet_s > 0 and heard["recent"]:
                why = "heard_recently"
    if why is None:
        await cur.execute(
            "SELECT 1 FROM device WHERE jt808_manufacturer = %s AND jt808_terminal_id = %s "
            "AND jt808_auth_hash IS NOT NULL AND id <> %s",
            (*terminal, row["id"]),
        )
        if await cur.fetchone() is not None:
            why = "terminal_elsewhere"
    return (None if why is None else Registration(result, why=why)), last_heard


async def register(
    conn: AsyncConnection[Any],
    phone: str,
    message: Register,
    *,
    version: Version,
    protocol_version: int,
    auto_register: bool,
    auto_crs: str,
    by_identifier: bool = False,
    quiet_s: float = 0.0,
    connected: Callable[[int], bool] | None = None,
    holder: int | None = None,
    peer: str | None = None,
) -> Registration:
    """Handle a 0x0100: bind the terminal to its device and issue a new auth code.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection; the registration and its audit entry are one transaction.
    phone : str
        The normalised phone.
    message : Register
        The decoded registration.
    version, protocol_version : int
        Edition and 2019 version byte of the frame, remembered on the device.
    auto_register : bool
        Create a device for an unknown phone instead of refusing it.
    auto_crs : str
        The CRS of an auto-registered device.
    by_identifier : bool, default False
        Also match a device whose identifier is the phone (``match_identifier``, opt-in).
    quiet_s : float, default 0
        A registered device heard from (a stored fix) within this many seconds is not
        registered again (0: only a connected terminal protects its registration).
    connected : callable, optional
        ``connected(device_id)``: whether that device's terminal is connected on another
        connection (of this process).
    holder : int, optional
        The device the asking connection is authenticated as (it may always register again).
    peer : str, optional
        The terminal's address, for the audit log.

    Returns
    -------
    Registration
        Result 0 with the code; 1, 3 or 4 otherwise, with ``why`` for the counters.
    """
    code = new_auth_code()
    maker, terminal_id = message.manufacturer, message.terminal_id
    plate = message.plate if message.plate_colour else None  # colour 0: the field is a VIN
    attempt = _Attempt(phone, message, peer)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FIND + " FOR UPDATE", {"phone": phone, "by_identifier": by_identifier})
        row = await cur.fetchone()
        if row is None:
            if not auto_register:
                log.info("jt808: registration by unknown phone %s from %s refused", phone, peer)
                return Registration(RegisterResult.NO_SUCH_TERMINAL, why="unknown_terminal")
            try:
                async with conn.transaction():
                    await cur.execute(
                        "INSERT INTO device (identifier, kind, name, plate, crs, jt808_phone) "
                        "VALUES (%(phone)s, 'vehicle', %(name)s, %(plate)s, %(crs)s, %(phone)s) "
                        "RETURNING id, identifier, enabled, home_village",
                        {"phone": phone, "name": f"JT808 {phone}", "plate": plate, "crs": auto_crs},
                    )
                    row = await cur.fetchone()
            except errors.UniqueViolation:
                return Registration(RegisterResult.NO_SUCH_TERMINAL, why="identifier_taken")
            assert row is not None  # noqa: S101 - RETURNING yields the row
        refused, last_heard = await _refusal(
            cur, row, message, quiet_s=quiet_s, connected=connected, holder=holder
        )
        if refused is not None:
            return await attempt.record(conn, row, refused, last_heard=_iso(last_heard))
        await cur.execute(
            """
            UPDATE device SET jt808_phone = %(phone)s, jt808_auth_hash = %(hash)s,
                   jt808_registered_at = now(), jt808_province = %(province)s,
                   jt808_city = %(city)s, jt808_manufacturer = %(maker)s,
                   jt808_model = %(model)s, jt808_terminal_id = %(terminal)s,
                   jt808_plate_colour = %(colour)s, jt808_plate = %(plate)s,
                   jt808_version = %(version)s, jt808_protocol_version = %(pv)s,
                   updated_at = now()
             WHERE id = %(id)s
            """,
            {
                "id": row["id"],
                "phone": phone,
                "hash": auth_hash(code),
                "province": message.province,
                "city": message.city,
                "maker": maker,
                "model": message.model,
                "terminal": terminal_id,
                "colour": message.plate_colour,
                "plate": message.plate,
                "version": version,
                "pv": protocol_version,
            },
        )
        accepted = Registration(RegisterResult.SUCCESS, code, _device(row))
        await attempt.record(conn, row, accepted, last_heard=_iso(last_heard))
    return accepted


async def authenticate(
    conn: AsyncConnection[Any], phone: str, code: bytes, *, by_identifier: bool = False
) -> tuple[TerminalDevice | None, str]:
    """Check a 0x0102 auth code against the stored digest.

    Parameters
    ----------
    conn : AsyncConnection
        A connection.
    phone : str
        The normalised phone.
    code : bytes
        The code as sent.
    by_identifier : bool, default False
        Also match a device whose identifier is the phone (``match_identifier``, opt-in).

    Returns
    -------
    tuple
        The device (None when refused) and a counter key: ``authenticated``,
        ``unknown_terminal``, ``disabled_device``, ``not_registered`` or ``wrong_code``.
    """
    row = await find(conn, phone, by_identifier=by_identifier)
    if row is None:
        return None, "unknown_terminal"
    if not row["enabled"]:
        return None, "disabled_device"
    stored = row["jt808_auth_hash"]
    if stored is None:
        return None, "not_registered"
    if not hmac.compare_digest(bytes(stored), auth_hash(code)):
        return None, "wrong_code"
    return _device(row), "authenticated"


async def bind(
    conn: AsyncConnection[Any], device_id: int, phone: str, *, actor: Principal | None = None
) -> None:
    """Map a terminal phone to a device explicitly (``device.jt808_phone``): the operator's
    binding, the only way a terminal finds its device unless ``match_identifier`` is on.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection.
    device_id : int
        ``device.id``.
    phone : str
        ASCII digits, at most 20; leading zeros are dropped (``normalise_phone``).
    actor : Principal, optional
        Who binds; recorded as ``jt808.bind`` in the audit log in the same transaction.

    Raises
    ------
    ValueError
        For a phone that is not 1–20 digits, or one bound to another device already.
    """
    if not (phone.isascii() and phone.isdigit() and len(phone) <= 20):
        raise ValueError(f"a terminal phone is 1–20 digits, not {phone!r}")
    key = normalise_phone(phone)
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE device SET jt808_phone = %s, updated_at = now() WHERE id = %s",
                (key, device_id),
            )
            if actor is not None:
                await audit.record(
                    conn,
                    actor,
                    "jt808.bind",
                    object_type="device",
                    object_id=device_id,
                    detail={"phone": key},
                )
    except errors.UniqueViolation:
        raise ValueError(f"phone {phone} is bound to another device") from None


async def unregister(
    conn: AsyncConnection[Any], device_id: int, *, actor: Principal | None = None
) -> bool:
    """Forget a device's terminal registration (0x0003, or an admin reset).

    The auth code stops working and another terminal may register; the phone mapping stays.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection.
    device_id : int
        ``device.id``.
    actor : Principal, optional
        Who resets it (not the terminal itself); recorded as ``jt808.reset`` in the audit log
        in the same transaction.

    Returns
    -------
    bool
        True when the device existed.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE device SET jt808_auth_hash = NULL, jt808_registered_at = NULL, "
            "jt808_manufacturer = NULL, jt808_model = NULL, jt808_terminal_id = NULL, "
            "updated_at = now() WHERE id = %s",
            (device_id,),
        )
        found = cur.rowcount > 0
        if found and actor is not None:
            await audit.record(
                conn, actor, "jt808.reset", object_type="device", object_id=device_id
            )
    return found
