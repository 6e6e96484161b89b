"""Terminal registration (0x0100), authentication (0x0102) and unregistration (0x0003).

Identity. A terminal is named by its phone number (终端手机号), BCD in the header: 12 digits in
2013, 20 in 2019, left-padded with zeros. ``normalise_phone`` strips the leading zeros, so both
editions of one number are one key (``device.jt808_phone``). A terminal belongs to the device
whose ``jt808_phone`` is that key, or else (setting ``match_identifier``, on by default) to the
device whose ``identifier`` is that key and which has no other 808 phone: register a device with
identifier ``13912345678`` and its terminal is known. Switch that off when numeric identifiers of
other devices (IMEIs …) must not be claimable by an 808 registration; then only an explicit
``jt808_phone`` (``gridpatrol jt808 bind``) maps a terminal. Unknown terminals are refused
(0x8100 result 4) unless auto-registration is on: then a device is created with identifier and
``jt808_phone`` = the key and the reported plate.

Registration issues a fresh random ASCII auth code and keeps only its SHA-256; authentication
compares the digests with ``hmac.compare_digest``. A device registered by one terminal (maker +
terminal id) refuses another terminal (result 1, vehicle registered) until the first sends 0x0003
or an admin resets it (``gridpatrol jt808 reset``); a terminal id registered on another device is
refused with result 3.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row

from api.protocols.jt808.header import Version
from api.protocols.jt808.messages import Register, RegisterResult

_FIND = """
SELECT id, identifier, enabled, home_village, jt808_auth_hash, jt808_manufacturer,
       jt808_terminal_id
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
    conn: AsyncConnection[Any], phone: str, *, by_identifier: bool = True
) -> dict[str, Any] | None:
    """The device row of a normalised phone (see the module docstring), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FIND, {"phone": phone, "by_identifier": by_identifier})
        return await cur.fetchone()


async def register(
    conn: AsyncConnection[Any],
    phone: str,
    message: Register,
    *,
    version: Version,
    protocol_version: int,
    auto_register: bool,
    auto_crs: str,
    by_identifier: bool = True,
) -> Registration:
    """Handle a 0x0100: bind the terminal to its device and issue a new auth code.

    Parameters
    ----------
    conn : AsyncConnection
        An autocommit connection; the registration is one transaction.
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
    by_identifier : bool, default True
        Also match a device whose identifier is the phone (``match_identifier``).

    Returns
    -------
    Registration
        Result 0 with the code; 1, 3 or 4 otherwise, with ``why`` for the counters.
    """
    code = new_auth_code()
    maker, terminal_id = message.manufacturer, message.terminal_id
    plate = message.plate if message.plate_colour else None  # colour 0: the field is a VIN
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FIND + " FOR UPDATE", {"phone": phone, "by_identifier": by_identifier})
        row = await cur.fetchone()
        if row is None:
            if not auto_register:
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
        elif not row["enabled"]:
            return Registration(RegisterResult.NO_SUCH_TERMINAL, why="disabled_device")
        elif row["jt808_auth_hash"] is not None and (
            (row["jt808_manufacturer"], row["jt808_terminal_id"]) != (maker, terminal_id)
        ):
            return Registration(RegisterResult.VEHICLE_REGISTERED, why="other_terminal")
        await cur.execute(
            "SELECT 1 FROM device WHERE jt808_manufacturer = %s AND jt808_terminal_id = %s "
            "AND jt808_auth_hash IS NOT NULL AND id <> %s",
            (maker, terminal_id, row["id"]),
        )
        if await cur.fetchone() is not None:
            return Registration(RegisterResult.TERMINAL_REGISTERED, why="terminal_elsewhere")
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
    return Registration(RegisterResult.SUCCESS, code, _device(row))


async def authenticate(
    conn: AsyncConnection[Any], phone: str, code: bytes, *, by_identifier: bool = True
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
    by_identifier : bool, default True
        Also match a device whose identifier is the phone.

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


async def bind(conn: AsyncConnection[Any], device_id: int, phone: str) -> None:
    """Map a terminal phone to a device explicitly (``device.jt808_phone``).

    Parameters
    ----------
    conn : AsyncConnection
        A connection.
    device_id : int
        ``device.id``.
    phone : str
        ASCII digits, at most 20; leading zeros are dropped (``normalise_phone``).

    Raises
    ------
    ValueError
        For a phone that is not 1–20 digits, or one bound to another device already.
    """
    if not (phone.isascii() and phone.isdigit() and len(phone) <= 20):
        raise ValueError(f"a terminal phone is 1–20 digits, not {phone!r}")
    try:
        await conn.execute(
            "UPDATE device SET jt808_phone = %s, updated_at = now() WHERE id = %s",
            (normalise_phone(phone), device_id),
        )
    except errors.UniqueViolation:
        raise ValueError(f"phone {phone} is bound to another device") from None


async def unregister(conn: AsyncConnection[Any], device_id: int) -> bool:
    """Forget a device's terminal registration (0x0003, or an admin reset).

    The auth code stops working and another terminal may register; the phone mapping stays.

    Parameters
    ----------
    conn : AsyncConnection
        A connection.
    device_id : int
        ``device.id``.

    Returns
    -------
    bool
        True when the device existed.
    """
    cur = await conn.execute(
        "UPDATE device SET jt808_auth_hash = NULL, jt808_registered_at = NULL, "
        "jt808_manufacturer = NULL, jt808_model = NULL, jt808_terminal_id = NULL, "
        "updated_at = now() WHERE id = %s",
        (device_id,),
    )
    return cur.rowcount > 0
