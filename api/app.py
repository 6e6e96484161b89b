"""The FastAPI application factory (``create_app``) and its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import __version__, layout_ops
from api.auth import SYSTEM, TokenStore
from api.coverage.update import CoverageUpdater
from api.db import database_url
from api.dispatch.escalation import DispatchTicker
from api.errors import install_handlers
from api.ingest import partitions
from api.ingest.store import Ingestor
from api.ingest.writer import GroupWriter
from api.limits import BodyGuard
from api.protocols.jt808.server import Jt808Server
from api.protocols.osmand_server import OsmAndServer
from api.ratelimit import SignInLimiter, ingest_limiter
from api.routers import (
    admin_areas,
    collections,
    coverage,
    devices,
    grids,
    health,
    incidents,
    jt808,
    maps,
    pages,
    positions,
    redraw,
    reports,
    users,
)
from api.routers import tiles as tile_routes
from api.settings import Settings, get_settings
from api.tasks import Periodic

log = logging.getLogger("gridpatrol")
STATIC = Path(__file__).parent / "static"


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


def _pool(url: str, settings: Settings) -> AsyncConnectionPool:
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


def _start_periodic(app: FastAPI, settings: Settings, pool: AsyncConnectionPool) -> Periodic:
    """Background jobs: partitions ahead, coverage upkeep, scheduled layout switches."""
    periodic = Periodic()
    updater = CoverageUpdater(settings.coverage)
    app.state.coverage = updater

    async def partitions_ahead() -> None:
        async with pool.connection() as conn:
            await partitions.ensure_ahead(
                conn, behind=1, ahead=settings.ingest.partitions_ahead_days
            )

    async def coverage_update() -> None:
        async with pool.connection() as conn:
            await updater.run(conn, max_steps=20)  # bounded; the rest next time

    async def scheduled_layouts() -> None:
        async with pool.connection() as conn:
            await layout_ops.activate_due(conn, SYSTEM)

    periodic.start("partitions", 3600.0, partitions_ahead)
    periodic.start("coverage", settings.coverage.update_interval_s, coverage_update)
    periodic.start("layouts", 60.0, scheduled_layouts)
    ticker = DispatchTicker(settings.dispatch)
    app.state.dispatch = ticker

    async def dispatch_tick() -> None:  # escalation (网格预警 → 吹哨 → 报到) and the webhook
        async with pool.connection() as conn:
            await ticker.tick(conn)

    periodic.start("dispatch", settings.dispatch.tick_s, dispatch_tick)
    return periodic


def create_app(settings: Settings | None = None, *, database: str | None = None) -> FastAPI:
    """Build the app. ``database`` overrides the URL from settings (tests, ``gridpatrol serve``)."""
    settings = settings or get_settings()
    url = database or database_url(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = _pool(url, settings)
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        app.state.tokens = tokens = TokenStore(
            pool, ttl=settings.api.token_cache_seconds, listen_url=url
        )
        await tokens.start()  # LISTEN for token changes from every process
        ingestor = Ingestor(settings.ingest, osmand_require_key=settings.osmand.require_key)
        writer = GroupWriter(url, ingestor, max_batch=settings.ingest.writer_max_batch)
        app.state.ingestor, app.state.writer = ingestor, writer
        await writer.start()
        periodic = _start_periodic(app, settings, pool)
        osmand = (
            OsmAndServer(settings.osmand, writer, limiter=app.state.ingest_limiter)
            if settings.osmand.enabled
            else None
        )
        app.state.osmand = osmand
        if osmand is not None:
            await osmand.start()
        jt808_server = Jt808Server(settings.jt808, writer, pool) if settings.jt808.enabled else None
        app.state.jt808 = jt808_server
        if jt808_server is not None:
            await jt808_server.start()
        # What startup made (modules, the app, caches) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise scan all of it (≈ 180 ms with the
        # libraries loaded, a stall every device waiting on a commit would feel). Collect first:
        # garbage frozen now would never be freed (an app started again in the same process).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if jt808_server is not None:
                await jt808_server.stop()
            if osmand is not None:
                await osmand.stop()
            await periodic.stop()
            await writer.stop()
            await tokens.stop()
            await pool.close()

    app = FastAPI(
        title="GridPatrol",
        version=__version__,
        summary="网格化管理与巡逻轨迹 · grid management and patrol tracking",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.login_limiter = SignInLimiter()  # per name and per address
    app.state.ingest_limiter = ingest_limiter(settings)
    install_handlers(app)
    pages.install_web_security(app)  # trusted proxies checked; a refused ?token= → 401 page
    # authenticate before any body is read; body limits per route (api/limits.py)
    app.add_middleware(BodyGuard, settings=settings)
    routers = (
        health,
        admin_areas,
        users,
        devices,
        positions,
        grids,
        redraw,
        coverage,
        incidents,
        jt808,
        pages,
        reports,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(redraw.alerts)
    app.include_router(tile_routes.router)
    app.include_router(collections.router)
    app.include_router(maps.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
