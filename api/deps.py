"""Small dependencies routers receive: the pool, a connection, the settings; upload bodies."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.db.reads import Reads
from api.errors import PayloadTooLarge
from api.settings import Settings

SPOOL_BYTES = 1024 * 1024  # an upload past this goes to a temporary file while it arrives


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_reads(request: Request) -> Reads:
    """Where reads that may lag go (a replica under ``DATABASE_READ_URL``; ``api.db.reads``)."""
    reads: Reads = request.app.state.reads
    return reads


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection for the request, returned when the response is done."""
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn:
        yield conn


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]
ReadPool = Annotated[Reads, Depends(get_reads)]
Conn = Annotated[AsyncConnection[Any], Depends(get_conn)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]


async def read_body(request: Request, max_mb: float) -> bytes:
    """An upload's body, refused with 413 as soon as it exceeds ``max_mb`` (``Content-Length``
    first, then counted while it arrives; ``api.limits.BodyGuard`` refused larger ones before
    the route ran). While it arrives it is spooled — at most ``SPOOL_BYTES`` in memory, the rest
    in a temporary file under ``<state dir>/uploads``, removed at once — so slow or concurrent
    uploads hold no memory; the parser gets the bytes only once the body is complete."""
    limit = int(max_mb * 1024 * 1024)
    message = f"the body is larger than {max_mb:g} MB; split the upload"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(message, limit_mb=max_mb)
    settings: Settings = request.app.state.settings
    spool_dir = Path(settings.api.state_dir) / "uploads"
    spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=str(spool_dir)) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(message, limit_mb=max_mb)
            spool.write(chunk)
        spool.seek(0)
        return spool.read()
