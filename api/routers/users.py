"""``/api/v1/users`` (admin) and ``/api/v1/auth`` (sign-in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api import users
from api.auth import Admin, Viewer
from api.deps import Conn
from api.forwarded import client_address
from api.ratelimit import SignInLimiter

router = APIRouter(tags=["users"])


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.@-]+$")
    role: str = Field(description="admin, planner, dispatcher or viewer")
    scope: list[str] = Field(default_factory=lambda: ["*"], description="NBS or grid codes, or *")
    password: str | None = Field(default=None, min_length=8)
    display_name: str | None = None


class UserCreated(BaseModel):
    id: int
    name: str
    role: str
    scope: list[str]
    token: str = Field(description="shown once")


class ScopeIn(BaseModel):
    scope: list[str] = Field(min_length=1)


class LoginIn(BaseModel):
    name: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret


@router.post("/api/v1/users", response_model=UserCreated, status_code=201)
async def create_user(body: UserIn, principal: Admin, conn: Conn) -> UserCreated:
    new = await users.create_user(
        conn,
        principal,
        body.name,
        role=body.role,
        scope=body.scope,
        password=body.password,
        display_name=body.display_name,
    )
    return UserCreated(id=new.id, name=new.name, role=new.role, scope=new.scope, token=new.token)


@router.get("/api/v1/users")
async def list_users(principal: Admin, conn: Conn) -> list[dict[str, Any]]:
    return await users.list_users(conn, principal)


@router.put("/api/v1/users/{name}/scope")
async def set_scope(name: str, body: ScopeIn, principal: Admin, conn: Conn) -> dict[str, Any]:
    scope = await users.set_scope(conn, principal, name, body.scope)
    return {"name": name, "scope": scope}


@router.delete("/api/v1/users/{name}", summary="Disable a user and revoke their tokens")
async def disable_user(name: str, principal: Admin, conn: Conn, request: Request) -> dict[str, Any]:
    revoked = await users.disable_user(conn, principal, name)
    request.app.state.tokens.forget()  # no cached principal outlives the revocation
    return {"name": name, "disabled": True, "tokens_revoked": revoked}


@router.post("/api/v1/auth/token", response_model=TokenOut)
async def login(body: LoginIn, request: Request) -> TokenOut:
    """Sign in. Limited per user name and per address (a forwarded address only from the
    proxies in ``GRIDPATROL_API_TRUSTED_PROXIES``); the password is checked off the event loop."""
    limiter: SignInLimiter = request.app.state.login_limiter
    limiter.check(client_address(request), body.name)
    return TokenOut(token=await users.login(request.app.state.pool, body.name, body.password))


@router.get("/api/v1/me")
async def me(principal: Viewer) -> dict[str, Any]:
    return {
        "name": principal.name,
        "role": principal.role,
        "scope": principal.scope.codes,
        "device_id": principal.device_id,
    }
