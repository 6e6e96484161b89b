"""Small dependencies routers receive: the pool, a connection, the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.settings import Settings


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection for the request, returned when the response is done."""
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        yield conn


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
Conn = Annotated[AsyncConnection[Any], Depends(get_conn)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
