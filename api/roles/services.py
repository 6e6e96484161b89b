"""What a process starts for its roles, and stops in reverse order.

========  ======================================================================================
role      runs
========  ======================================================================================
api       the connection pool, the token store (LISTEN for token changes), the ``Ingestor`` of
          the batch/file upload routes (they store in the request's own transaction), a
          ``CoverageUpdater`` for reads (materialising a layout's stale days), and — when no
          808 server runs here — ``RemoteTerminals``, relaying commands to the ingest process
          that holds the terminal (``api.roles.relay``); a replica pool when
          ``DATABASE_READ_URL`` is set (``api.db.reads``)
ingest    the OsmAnd and JT/T 808 listeners (``SO_REUSEPORT``: start several), the group-commit
          writer, and the ``CommandOwner`` that sends relayed commands to terminals held here
worker    the periodic jobs (``api.roles.jobs``): coverage update, dispatch escalation and
          webhook, scheduled layout switches, partitions ahead, reports (these read on the
          replica when there is one)
========  ======================================================================================
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from api.auth import TokenStore
from api.coverage.update import CoverageUpdater
from api.db.reads import Reads
from api.dispatch.escalation import DispatchTicker
from api.ingest.store import Ingestor
from api.ingest.writer import GroupWriter
from api.protocols.jt808.server import Jt808Server
from api.protocols.osmand_server import OsmAndServer
from api.ratelimit import RateLimiter
from api.roles import API, INGEST, WORKER
from api.roles.jobs import start_jobs
from api.roles.relay import CommandOwner, RemoteTerminals
from api.settings import Settings
from api.tasks import Periodic


class _SweepingCheck:
    """The pool's check of a connection before handing it out. One broken connection (the
    database restarted, sessions terminated) means the idle rest are broken too: sweep them all
    at once (``pool.check``) rather than let the next requests find them one by one behind the
    pool's growing back-off — with ten dead connections that exceeds a request's timeout."""

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool | None = None
        self._sweep: asyncio.Task[None] | None = None

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and (self._sweep is None or self._sweep.done()):
                self._sweep = asyncio.create_task(self.pool.check(), name="pool-sweep")
            raise


async def _drop_read_only(conn: AsyncConnection[Any]) -> None:
    """On return to the pool: a session that began read-only (the database set read-only, a
    standby) stays so after the database takes writes again; close it, the pool replaces it."""
    if conn.info.parameter_status("default_transaction_read_only") == "on":
        await conn.close()


def make_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    check = _SweepingCheck()
    check.pool = AsyncConnectionPool(
        url,
        min_size=settings.db.pool_min,
        max_size=settings.db.pool_max,
        kwargs={
            "autocommit": True,
            # JIT compilation costs more than it saves on our short aggregate queries
            "options": f"-c statement_timeout={settings.db.statement_timeout_ms} -c jit=off",
        },
        open=False,
        name="gridpatrol",
        check=check,  # a connection broken by a database restart is never handed out
        reset=_drop_read_only,
    )
    return check.pool


def tagged(url: str, roles: frozenset[str]) -> str:
    """The URL with ``application_name`` naming the process's roles (``pg_stat_activity``)."""
    name = "gridpatrol-" + "+".join(r for r in (API, INGEST, WORKER) if r in roles)
    return make_conninfo(url, application_name=name)


@dataclass
class Services:
    """The running parts of one process (None: not this process's role)."""

    pool: AsyncConnectionPool
    coverage: CoverageUpdater
    reads: Reads
    tokens: TokenStore | None = None
    ingestor: Ingestor | None = None
    writer: GroupWriter | None = None
    osmand: OsmAndServer | None = None
    jt808: Jt808Server | None = None
    terminals: Jt808Server | RemoteTerminals | None = None
    dispatch: DispatchTicker | None = None
    periodic: Periodic | None = None


@asynccontextmanager
async def running(
    settings: Settings,
    url: str,
    roles: frozenset[str],
    *,
    ingest_limiter: RateLimiter | None = None,
) -> AsyncIterator[Services]:
    """Start what ``roles`` need (see the module docstring); stop it all on exit."""
    url = tagged(url, roles)
    async with AsyncExitStack() as stack:
        pool = make_pool(url, settings)
        await pool.open(wait=True, timeout=30)
        stack.push_async_callback(pool.close)
        replica = None
        if settings.db.read_url and (API in roles or WORKER in roles):
            replica = make_pool(tagged(settings.db.read_url, roles), settings)
            await replica.open(wait=False)  # a replica down at start: reads use the primary
            stack.push_async_callback(replica.close)
        services = Services(
            pool=pool,
            coverage=CoverageUpdater(settings.coverage),
            reads=Reads(pool, replica, wait_s=settings.db.read_wait_s),
        )
        if API in roles:
            services.tokens = TokenStore(pool, ttl=settings.api.token_cache_seconds, listen_url=url)
            await services.tokens.start()  # LISTEN for token changes from every process
            stack.push_async_callback(services.tokens.stop)
        if API in roles or INGEST in roles:
            services.ingestor = Ingestor(
                settings.ingest, osmand_require_key=settings.osmand.require_key
            )
        if INGEST in roles:
            assert services.ingestor is not None  # noqa: S101 - made just above
            writer = GroupWriter(url, services.ingestor, max_batch=settings.ingest.writer_max_batch)
            await writer.start()
            stack.push_async_callback(writer.stop)  # after the listeners: drains what they sent
            services.writer = writer
        if WORKER in roles:
            services.dispatch = DispatchTicker(settings.dispatch)
            services.periodic = start_jobs(
                settings, url, pool, services.coverage, services.dispatch, services.reads
            )
            stack.push_async_callback(services.periodic.stop)
        if INGEST in roles:
            assert services.writer is not None  # noqa: S101 - made just above
            if settings.osmand.enabled:
                osmand = OsmAndServer(settings.osmand, services.writer, limiter=ingest_limiter)
                await osmand.start()
                stack.push_async_callback(osmand.stop)
                services.osmand = osmand
            if settings.jt808.enabled:
                jt808 = Jt808Server(settings.jt808, services.writer, pool)
                await jt808.start()
                stack.push_async_callback(jt808.stop)
                services.jt808 = services.terminals = jt808
                if API not in roles:  # commands come from API processes
                    owner = CommandOwner(jt808, url, pool, osmand=services.osmand)
                    await owner.start()
                    stack.push_async_callback(owner.stop)
        elif API in roles and settings.jt808.enabled:
            remote = RemoteTerminals(url, pool)
            await remote.start()
            stack.push_async_callback(remote.stop)
            services.terminals = remote
        yield services
