"""Authentication (bearer tokens, hashed passwords) and authorisation (roles + data scope).

Every non-public route declares its role with one of the ``Annotated`` aliases below
(``Viewer``, ``Dispatcher``, ``Planner``, ``Admin``, ``DeviceWriter``); the dependency resolves the
token once per request into a ``Principal`` carrying role and ``Scope``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.errors import Forbidden, Unauthorized
from api.scope import Scope

TOKEN_PREFIX = "gp_"  # noqa: S105 - a prefix, not a secret
COOKIE = "gp_token"
ROLES = ("admin", "planner", "dispatcher", "viewer")

# Which principals' roles satisfy a route's declared role. Admin satisfies everything.
SATISFIES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"viewer", "dispatcher", "planner", "admin"}),
    "dispatcher": frozenset({"dispatcher", "admin"}),
    "planner": frozenset({"planner", "admin"}),
    "admin": frozenset({"admin"}),
    "device": frozenset({"device", "admin"}),
}

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A fresh bearer token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens carry 256 random bits, so a fast hash suffices for lookup (passwords use argon2)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with a role) or a device, and the scope they act in."""

    name: str
    role: str
    scope: Scope
    user_id: int | None = None
    device_id: int | None = None
    token_id: int | None = None

    def audit_fields(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "user_name": self.name, "user_scope": self.scope.codes}


SYSTEM = Principal(name="system", role="admin", scope=Scope.everything())


@dataclass
class TokenStore:
    """Resolves tokens to principals with a short cache, so a hot path costs no query per call."""

    pool: AsyncConnectionPool
    ttl: float = 5.0
    _cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)

    async def resolve(self, token: str) -> Principal | None:
        digest = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.pool.connection() as conn:
            principal = await lookup_token(conn, digest)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl, principal)
        return principal

    def forget(self) -> None:
        self._cache.clear()


async def lookup_token(conn: AsyncConnection[Any], digest: str) -> Principal | None:
    """User tokens first, then device tokens (the device table arrives with GPS ingest)."""
    row = await (
        await conn.execute(
            """
            UPDATE api_token t SET last_used_at = now()
              FROM users u
             WHERE t.token_hash = %s AND u.id = t.user_id
               AND t.revoked_at IS NULL AND NOT u.disabled
               AND (t.expires_at IS NULL OR t.expires_at > now())
            RETURNING t.id, u.id, u.name, u.role, u.scope, t.scope
            """,
            (digest,),
        )
    ).fetchone()
    if row is not None:
        token_id, user_id, name, role, user_scope, token_scope = row
        scope = Scope.parse(user_scope or [])
        if token_scope is not None:
            scope = scope.narrow(Scope.parse(token_scope))
        return Principal(name=name, role=role, scope=scope, user_id=user_id, token_id=token_id)
    return await lookup_device_token(conn, digest)


async def lookup_device_token(conn: AsyncConnection[Any], digest: str) -> Principal | None:
    has_device = await (await conn.execute("SELECT to_regclass('device') IS NOT NULL")).fetchone()
    if not has_device or not has_device[0]:
        return None
    row = await (
        await conn.execute(
            "SELECT id, identifier, home_village FROM device WHERE token_hash = %s AND enabled",
            (digest,),
        )
    ).fetchone()
    if row is None:
        return None
    device_id, identifier, village = row
    scope = Scope.parse([village]) if village else Scope()
    return Principal(name=f"device:{identifier}", role="device", scope=scope, device_id=device_id)


def bearer_token(request: Request) -> str | None:
    """Token from ``Authorization: Bearer``, else (GET only) the page cookie or ``?token=``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method in ("GET", "HEAD"):
        return request.cookies.get(COOKIE) or request.query_params.get("token")
    return None


class RequireRole:
    """Dependency that authenticates the caller and checks the route's declared role(s)."""

    def __init__(self, role: str, *also: str) -> None:
        for name in (role, *also):
            if name not in SATISFIES:
                raise ValueError(f"unknown role {name!r}")
        self.role = role
        self.allowed: frozenset[str] = frozenset().union(*(SATISFIES[r] for r in (role, *also)))

    async def __call__(self, request: Request) -> Principal:
        token = bearer_token(request)
        if not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer …)")
        store: TokenStore = request.app.state.tokens
        principal = await store.resolve(token)
        if principal is None:
            raise Unauthorized("invalid, expired or revoked token")
        if principal.role not in self.allowed:
            raise Forbidden(f"this needs the {self.role} role; your role is {principal.role}")
        request.state.principal = principal
        return principal

    def __repr__(self) -> str:
        return f"RequireRole({self.role!r})"


def require_role(role: str) -> Any:
    """``Depends`` on a role, for ``dependencies=[...]`` lists."""
    return Depends(RequireRole(role))


Viewer = Annotated[Principal, Depends(RequireRole("viewer"))]
Dispatcher = Annotated[Principal, Depends(RequireRole("dispatcher"))]
Planner = Annotated[Principal, Depends(RequireRole("planner"))]
Admin = Annotated[Principal, Depends(RequireRole("admin"))]
DeviceWriter = Annotated[Principal, Depends(RequireRole("device"))]
ViewerOrDevice = Annotated[Principal, Depends(RequireRole("viewer", "device"))]
