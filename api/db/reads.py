"""Reads that may go to a streaming replica (``DATABASE_READ_URL``): tiles, coverage figures,
reports.

Without a replica every read uses the primary's pool and nothing here costs anything. With one,
a read asks ``Reads.connection()``. What a read needs written first (a layout's ``grid_visit``
days built on first use, ``api.coverage.materialize``) is written on the primary; the read then
passes that connection as ``after`` and gets a replica connection only once the replica has
replayed the primary's WAL that far — read-your-writes — waiting at most
``GRIDPATROL_DB_READ_WAIT_S``, else the primary serves that read (counted in ``fallbacks``). A
replica that cannot be reached is the same: the primary serves and the pool keeps trying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)
POLL_S = 0.01  # how often a waiting read asks the replica how far it has replayed
CHECKOUT_S = 2.0  # a replica connection not had by then: the read goes to the primary


class Reads:
    """Where reads that may lag go: ``replica`` when there is one, else ``primary``."""

    def __init__(
        self,
        primary: AsyncConnectionPool,
        replica: AsyncConnectionPool | None = None,
        *,
        wait_s: float = 2.0,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.wait_s = wait_s
        self.replica_reads = 0
        self.fallbacks = 0

    @asynccontextmanager
    async def connection(
        self, *, after: AsyncConnection[Any] | None = None
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection to read on; with ``after`` (a primary connection, autocommit), one that
        sees everything committed on it so far. ``after`` itself is lent when there is no
        replica (no second connection for one request)."""
        if self.replica is None:
            async with self._on_primary(after) as conn:
                yield conn
            return
        lsn = None
        if after is not None:
            row = await (await after.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
            lsn = row[0] if row else None
        replica = await self._replica_at(lsn)
        if replica is None:
            self.fallbacks += 1
            async with self._on_primary(after) as conn:
                yield conn
            return
        try:
            self.replica_reads += 1
            yield replica
        finally:
            await self.replica.putconn(replica)

    @asynccontextmanager
    async def _on_primary(
        self, after: AsyncConnection[Any] | None
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """``after`` itself (no second connection for one request), else one of the pool's."""
        if after is not None:
            yield after
        else:
            async with self.primary.connection() as conn:
                yield conn

    async def _replica_at(self, lsn: str | None) -> AsyncConnection[Any] | None:
        """A replica connection that has replayed ``lsn`` (None: any), or None."""
        assert self.replica is not None  # noqa: S101 - called only with a replica
        try:
            conn = await self.replica.getconn(timeout=CHECKOUT_S)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("replica unavailable, reading on the primary: %s", exc)
            return None
        if lsn is None:
            return conn
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                row = await (
                    await conn.execute(
                        # a primary given as the "replica" has all it wrote: no waiting
                        "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, "
                        "NOT pg_is_in_recovery())",
                        (lsn,),
                    )
                ).fetchone()
                if row and row[0]:
                    return conn
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
        except psycopg.Error as exc:
            log.warning("replica failed while waiting for WAL %s: %s", lsn, exc)
        await self.replica.putconn(conn)
        log.info("replica has not replayed %s in %.1f s: reading on the primary", lsn, self.wait_s)
        return None
