"""Users and their tokens: create, list, change scope, issue and revoke tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import audit
from api.auth import (
    ROLES,
    SYSTEM,
    Principal,
    check_password,
    hash_password_async,
    new_token,
    notify_token_change,
    token_hash,
)
from api.errors import Conflict, NotFound, Unauthorized, Unprocessable
from api.scope import Scope


@dataclass(frozen=True)
class NewUser:
    id: int
    name: str
    role: str
    scope: list[str]
    token: str


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise Unprocessable(
            f"unknown role {role!r}; choose one of {', '.join(ROLES)}", field="role"
        )


def _parse_scope(codes: list[str] | None) -> Scope:
    """A user's scope from codes; ``None`` (not given) means everything, but an empty list (or
    only blank codes) is refused: it must never widen to ``*`` nor leave a user who sees nothing.
    """
    if codes is None:
        codes = ["*"]
    if not any(str(code).strip() for code in codes):
        raise Unprocessable(
            "scope is empty; name at least one NBS or grid code, or * for everything",
            field="scope",
        )
    try:
        return Scope.parse(codes)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="scope") from exc


async def create_user(
    conn: AsyncConnection[Any],
    actor: Principal,
    name: str,
    *,
    role: str,
    scope: list[str] | None = None,
    password: str | None = None,
    display_name: str | None = None,
) -> NewUser:
    """Create a user and a first token. A scope can only be granted inside the actor's own.

    Raises
    ------
    Conflict
        When the name is taken.
    Unprocessable
        For an unknown role, a malformed scope code or a too-short password.
    """
    _check_role(role)
    parsed = _parse_scope(scope)
    if not actor.scope.contains(parsed):
        raise Unprocessable("a user's scope must lie inside your own scope", field="scope")
    try:
        pw_hash = await hash_password_async(password) if password else None
    except ValueError as exc:
        raise Unprocessable(str(exc), field="password") from exc
    token = new_token()
    try:
        async with conn.transaction():
            row = await (
                await conn.execute(
                    "INSERT INTO users (name, display_name, password_hash, role, scope) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (name, display_name, pw_hash, role, parsed.codes),
                )
            ).fetchone()
            assert row is not None  # noqa: S101 - RETURNING always yields the row
            user_id = int(row[0])
            await conn.execute(
                "INSERT INTO api_token (user_id, token_hash, label) VALUES (%s, %s, %s)",
                (user_id, token_hash(token), "created with user"),
            )
            await notify_token_change(conn)
            await audit.record(
                conn,
                actor,
                "user.create",
                object_type="user",
                object_id=user_id,
                detail={"name": name, "role": role, "scope": parsed.codes},
            )
    except errors.UniqueViolation as exc:
        raise Conflict(f"a user named {name!r} already exists", field="name") from exc
    return NewUser(id=user_id, name=name, role=role, scope=parsed.codes, token=token)


async def issue_token(
    conn: AsyncConnection[Any], actor: Principal, user_name: str, *, label: str | None = None
) -> str:
    """A new token for an existing user (e.g. for the map pages)."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                "SELECT id, scope FROM users WHERE name = %s AND NOT disabled", (user_name,)
            )
        ).fetchone()
        if row is None or not actor.scope.contains(Scope.parse(row[1])):
            raise NotFound(f"no user named {user_name!r}")
        token = new_token()
        await conn.execute(
            "INSERT INTO api_token (user_id, token_hash, label) VALUES (%s, %s, %s)",
            (row[0], token_hash(token), label),
        )
        await notify_token_change(conn)
        await audit.record(conn, actor, "token.issue", object_type="user", object_id=row[0])
    return token


async def login(pool: AsyncConnectionPool, name: str, password: str) -> str:
    """Exchange a name and password for a new token.

    An unknown name, a disabled user and a user without a password cost one argon2
    verification (against a dummy hash) like a known one, and get the same answer. No database
    connection is held while the hash is checked (on a worker thread)."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id, password_hash, role, scope FROM users WHERE name = %s AND NOT disabled",
                (name,),
            )
        ).fetchone()
    if not await check_password(row[1] if row is not None else None, password) or row is None:
        raise Unauthorized("wrong name or password")
    token = new_token()
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO api_token (user_id, token_hash, label, expires_at) "
            "VALUES (%s, %s, 'login', now() + interval '12 hours')",
            (row[0], token_hash(token)),
        )
        await notify_token_change(conn)
        who = Principal(name=name, role=row[2], scope=Scope.parse(row[3] or []), user_id=row[0])
        await audit.record(conn, who, "token.login", object_type="user", object_id=row[0])
    return token


async def _lock_user(
    conn: AsyncConnection[Any], actor: Principal, user_name: str, *, enabled_only: bool
) -> int:
    """Lock a user row for a change by ``actor``; its id. A user reaching beyond the actor's
    scope is not theirs to change, so it is as if absent (404), like a missing one."""
    row = await (
        await conn.execute(
            "SELECT id, scope FROM users WHERE name = %s AND (NOT disabled OR NOT %s) FOR UPDATE",
            (user_name, enabled_only),
        )
    ).fetchone()
    if row is None or not actor.scope.contains(Scope.parse(row[1])):
        raise NotFound(f"no user named {user_name!r}")
    return int(row[0])


async def disable_user(conn: AsyncConnection[Any], actor: Principal, user_name: str) -> int:
    """Disable a user and revoke all their tokens (a user is never deleted: the audit log
    names them). Returns the number of tokens revoked."""
    async with conn.transaction():
        user_id = await _lock_user(conn, actor, user_name, enabled_only=True)
        if user_id == actor.user_id:
            raise Conflict("you cannot disable yourself")
        await conn.execute("UPDATE users SET disabled = true WHERE id = %s", (user_id,))
        revoked = await conn.execute(
            "UPDATE api_token SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
            (user_id,),
        )
        await notify_token_change(conn)  # every process drops its cache at commit
        await audit.record(
            conn,
            actor,
            "user.disable",
            object_type="user",
            object_id=user_id,
            detail={"tokens_revoked": revoked.rowcount},
        )
    return revoked.rowcount


async def list_users(conn: AsyncConnection[Any], actor: Principal) -> list[dict[str, Any]]:
    """Users whose whole scope lies inside the actor's."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, name, display_name, role, scope, disabled, created_at FROM users "
            "ORDER BY id"
        )
        rows = await cur.fetchall()
    return [r for r in rows if actor.scope.contains(Scope.parse(r["scope"]))]


async def set_scope(
    conn: AsyncConnection[Any], actor: Principal, user_name: str, scope: list[str]
) -> list[str]:
    parsed = _parse_scope(scope)
    if not actor.scope.contains(parsed):
        raise Unprocessable("a user's scope must lie inside your own scope", field="scope")
    async with conn.transaction():
        user_id = await _lock_user(conn, actor, user_name, enabled_only=False)
        await conn.execute("UPDATE users SET scope = %s WHERE id = %s", (parsed.codes, user_id))
        await notify_token_change(conn)
        await audit.record(
            conn,
            actor,
            "user.scope",
            object_type="user",
            object_id=user_id,
            detail={"scope": parsed.codes},
        )
    return parsed.codes


async def ensure_admin(conn: AsyncConnection[Any], name: str = "admin") -> NewUser | None:
    """Create the first admin (scope everything) when no admin exists; None when one does."""
    row = await (await conn.execute("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1")).fetchone()
    if row is not None:
        return None
    return await create_user(conn, SYSTEM, name, role="admin", scope=["*"])
