"""Grid workers' sign-in: phone + password, or phone + a one-time code an admin prints.

A worker is a ``staff`` row with role ``worker``; signing in makes a ``staff_token`` (only its
hash stored) that ``api.auth`` resolves to a principal of role ``worker`` whose scope is the
worker's grids. Passwords are argon2 (``api.auth.check_password``: off the event loop, the same
cost for an unknown phone). A code is 6 digits, lives ``GRIDPATROL_MOBILE_CODE_MINUTES``, is
used once, and dies after ``GRIDPATROL_MOBILE_CODE_MAX_FAILURES`` wrong tries; issuing a new
one replaces the old. The caller limits attempts per phone and address
(``app.state.login_limiter``), as the front door does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import audit
from api.auth import (
    Principal,
    check_password,
    hash_password_async,
    new_token,
    notify_token_change,
    token_hash,
)
from api.errors import NotFound, Unauthorized, Unprocessable
from api.scope import Scope
from api.settings import MobileSettings

CODE_DIGITS = 6
_PHONE = re.compile(r"^\+?[0-9]{5,20}$")


def normalise_phone(phone: str) -> str:
    """A phone as stored (spaces and dashes dropped, as the staff import does)."""
    return re.sub(r"[\s-]", "", phone or "")


def valid_phone(phone: str) -> bool:
    return bool(_PHONE.match(phone))


def code_hash(staff_id: int, code: str) -> str:
    """Codes are short, so their hash is bound to the staff member (no table of all codes)."""
    return hashlib.sha256(f"{staff_id}:{code}".encode()).hexdigest()


def worker_principal(staff_id: int, name: str, grids: list[str] | None = None) -> Principal:
    return Principal(
        name=f"网格员 {name}",
        role="worker",
        scope=Scope(grids=tuple(grids or ())),
        staff_id=staff_id,
    )


async def _issue_session(
    pool: AsyncConnectionPool, staff_id: int, name: str, how: str, settings: MobileSettings
) -> str:
    token = new_token()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO staff_token (staff_id, token_hash, label, expires_at) "
            "VALUES (%s, %s, %s, now() + %s * interval '1 hour')",
            (staff_id, token_hash(token), f"login:{how}", settings.session_hours),
        )
        await notify_token_change(conn)
        await audit.record(
            conn,
            worker_principal(staff_id, name),
            "staff.login",
            object_type="staff",
            object_id=staff_id,
            detail={"with": how},
        )
    return token


SIGN_IN_ROW = """
SELECT id, name, password_hash, code_hash, code_expires_at > now() AS code_live, code_failures
  FROM staff WHERE phone = %s AND active AND role = 'worker'
"""


async def login(
    pool: AsyncConnectionPool,
    phone: str,
    settings: MobileSettings,
    *,
    password: str | None = None,
    code: str | None = None,
) -> str:
    """A new session token for a worker's phone and password (or one-time code).

    Raises
    ------
    Unauthorized
        For an unknown phone, a wrong password, a wrong, used, expired or void code: the same
        answer for all, so it does not tell which phones exist.
    """
    phone = normalise_phone(phone)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SIGN_IN_ROW, (phone,))
        row = await cur.fetchone()
    wrong = Unauthorized("wrong phone number, password or code")
    if code is not None:
        if row is None or not await _use_code(pool, row, code.strip(), settings):
            raise wrong
        return await _issue_session(pool, row["id"], row["name"], "code", settings)
    stored = row["password_hash"] if row is not None else None
    if not await check_password(stored, password or "") or row is None:
        raise wrong
    return await _issue_session(pool, row["id"], row["name"], "password", settings)


async def _use_code(
    pool: AsyncConnectionPool, row: dict[str, Any], code: str, settings: MobileSettings
) -> bool:
    """Spend the worker's code if ``code`` is it (once: the row is updated only while the code
    is still there); a wrong code counts a failure and voids the code at the limit."""
    staff_id = row["id"]
    given = code_hash(staff_id, code)
    live = row["code_hash"] is not None and row["code_live"]
    async with pool.connection() as conn:
        if live and hmac.compare_digest(given, row["code_hash"]):
            used = await (
                await conn.execute(
                    "UPDATE staff SET code_hash = NULL, code_expires_at = NULL, code_failures = 0 "
                    "WHERE id = %s AND code_hash = %s AND code_expires_at > now() RETURNING id",
                    (staff_id, given),
                )
            ).fetchone()
            return used is not None
        if live:
            await conn.execute(
                "UPDATE staff SET code_failures = code_failures + 1, "
                "code_hash = CASE WHEN code_failures + 1 >= %s THEN NULL ELSE code_hash END "
                "WHERE id = %s AND code_hash IS NOT NULL",
                (settings.code_max_failures, staff_id),
            )
    return False


async def _worker_row(
    conn: AsyncConnection[Any],
    scope: Scope,
    *,
    staff_id: int | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """A staff member the scope covers (by village), locked for a change; 404 otherwise."""
    key, value = (
        ("id", staff_id) if staff_id is not None else ("phone", normalise_phone(phone or ""))
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT id, name, phone, role, village_code, active FROM staff WHERE {key} = %s "  # noqa: S608 - a fixed column name
            "FOR UPDATE",
            (value,),
        )
        row = await cur.fetchone()
    if row is None or not scope.covers_area(row["village_code"]):
        raise NotFound(f"no staff member {staff_id if staff_id is not None else phone}")
    if row["role"] != "worker":
        raise Unprocessable(
            f"{row['name']} is a {row['role']}; only grid workers (role worker) sign in on the "
            "phone page",
            field="role",
        )
    if not row["active"]:
        raise Unprocessable(f"{row['name']} is not active", field="active")
    return row


async def issue_code(
    conn: AsyncConnection[Any],
    actor: Principal,
    settings: MobileSettings,
    *,
    staff_id: int | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """A fresh one-time sign-in code for a worker in the actor's scope (the previous one dies).

    Returns ``{"staff_id", "name", "phone", "code", "expires_at"}``; only the code's hash is
    stored, so this is the one time it is shown."""
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    async with conn.transaction():
        row = await _worker_row(conn, actor.scope, staff_id=staff_id, phone=phone)
        stamp = await (
            await conn.execute(
                "UPDATE staff SET code_hash = %s, code_failures = 0, "
                "code_expires_at = now() + %s * interval '1 minute' WHERE id = %s "
                "RETURNING code_expires_at",
                (code_hash(row["id"], code), settings.code_minutes, row["id"]),
            )
        ).fetchone()
        assert stamp is not None  # noqa: S101 - the row is locked
        await audit.record(
            conn, actor, "staff.sign_in_code", object_type="staff", object_id=row["id"]
        )
    expires: datetime = stamp[0]
    return {
        "staff_id": row["id"],
        "name": row["name"],
        "phone": row["phone"],
        "code": code,
        "expires_at": expires,
    }


async def set_password(
    conn: AsyncConnection[Any], actor: Principal, staff_id: int, password: str
) -> dict[str, Any]:
    """Set a worker's password: an admin for a worker in scope, or the worker for themself.
    The worker's other sessions end (a password set after a lost phone locks the phone out)."""
    try:
        pw_hash = await hash_password_async(password)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="password") from exc
    scope = Scope.everything() if actor.staff_id == staff_id else actor.scope
    async with conn.transaction():
        row = await _worker_row(conn, scope, staff_id=staff_id)
        await conn.execute("UPDATE staff SET password_hash = %s WHERE id = %s", (pw_hash, staff_id))
        revoked = await conn.execute(
            "UPDATE staff_token SET revoked_at = now() WHERE staff_id = %s AND revoked_at IS NULL "
            "AND id IS DISTINCT FROM %s",
            (staff_id, actor.token_id if actor.staff_id == staff_id else None),
        )
        await notify_token_change(conn)
        await audit.record(
            conn,
            actor,
            "staff.password",
            object_type="staff",
            object_id=staff_id,
            detail={"sessions_ended": revoked.rowcount},
        )
    return {"staff_id": row["id"], "name": row["name"], "sessions_ended": revoked.rowcount}


async def end_session(conn: AsyncConnection[Any], token: str) -> None:
    """Revoke a worker's session token (recorded in the audit log); nothing when it was no
    live worker's session."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE staff_token t SET revoked_at = now() FROM staff s "
                "WHERE t.token_hash = %s AND t.revoked_at IS NULL AND s.id = t.staff_id "
                "RETURNING s.id, s.name",
                (token_hash(token),),
            )
        ).fetchone()
        if row is None:
            return
        await notify_token_change(conn)
        await audit.record(
            conn,
            worker_principal(int(row[0]), str(row[1])),
            "staff.logout",
            object_type="staff",
            object_id=int(row[0]),
        )


ME = """
SELECT s.id AS staff_id, s.name, s.phone, s.village_code, v.name_zh AS village_name,
       s.password_hash IS NOT NULL AS has_password
  FROM staff s LEFT JOIN admin_area v ON v.code = s.village_code
 WHERE s.id = %(staff)s
"""
MY_GRIDS = """
SELECT DISTINCT ON (g.code) g.code, g.name, g.village_code, v.name_zh AS village_name
  FROM grid g JOIN grid_layout l ON l.id = g.layout_id
  LEFT JOIN admin_area v ON v.code = g.village_code
 WHERE g.code = ANY(%(grids)s) AND l.status = 'active' AND l.purpose = 'patrol'
 ORDER BY g.code, length(nbs_prefix(l.area_code)) DESC
"""


async def me(
    conn: AsyncConnection[Any], principal: Principal, settings: MobileSettings
) -> dict[str, Any]:
    """Who the worker is, their grids and the event kinds they may report."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ME, {"staff": principal.staff_id})
        row = await cur.fetchone()
        if row is None:
            raise NotFound("no such worker")
        await cur.execute(MY_GRIDS, {"grids": list(principal.scope.grids)})
        grids = await cur.fetchall()
    return {**row, "grids": grids, "event_kinds": settings.kinds}
