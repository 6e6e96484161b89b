"""The FastAPI application factory (``create_app``) and its lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import __version__
from api.db import database_url
from api.dispatch.live import process_hub
from api.errors import install_handlers
from api.limits import BodyGuard
from api.ratelimit import SignInLimiter, ingest_limiter
from api.roles import ALL_IN_ONE, API, services
from api.routers import (
    admin_areas,
    collections,
    coverage,
    coverage_map,
    devices,
    grids,
    health,
    home,
    incidents,
    jt808,
    live,
    maps,
    mobile,
    mobile_pages,
    pages,
    positions,
    redraw,
    reports,
    users,
)
from api.routers import tiles as tile_routes
from api.settings import Settings, get_settings

log = logging.getLogger("gridpatrol")
STATIC = Path(__file__).parent / "static"


def create_app(
    settings: Settings | None = None,
    *,
    database: str | None = None,
    roles: Collection[str] = ALL_IN_ONE,
) -> FastAPI:
    """Build the app. ``database`` overrides the URL from settings (tests, ``gridpatrol serve``).

    ``roles``: what runs in this process besides the routes (``api.roles``). The default, every
    role, is one process doing it all (the tests' app, ``uvicorn --factory``);
    ``gridpatrol serve --role api`` passes ``{"api"}``: no device listeners, no periodic jobs.
    """
    settings = settings or get_settings()
    url = database or database_url(settings)
    unknown = set(roles) - set(ALL_IN_ONE)
    if unknown or API not in roles:
        raise ValueError(f"roles must include 'api' and be among {sorted(ALL_IN_ONE)}: {roles}")
    wanted = frozenset(roles)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services.running(
            settings, url, wanted, ingest_limiter=app.state.ingest_limiter
        ) as running:
            state = app.state
            state.roles = wanted
            state.pool, state.tokens, state.coverage = (
                running.pool,
                running.tokens,
                running.coverage,
            )
            state.reads = running.reads
            state.ingestor, state.writer = running.ingestor, running.writer
            state.osmand, state.dispatch = running.osmand, running.dispatch
            state.jt808 = running.terminals  # the local 808 server, or the relay to ingest
            # What startup made (modules, the app, caches) lives as long as the process: keep it
            # out of the collector's full passes, which otherwise scan all of it (≈ 180 ms with
            # the libraries loaded, a stall every device waiting on a commit would feel). Collect
            # first: garbage frozen now would never be freed (an app started again in the same
            # process).
            # the console's snapshots name every vehicle's grid from an in-memory index: built
            # now, in the background, not when the first dispatcher after a restart waits for it
            locator = process_hub(state).locator
            locator.warm(state.pool)
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                await locator.stop()

    app = FastAPI(
        title="GridPatrol",
        version=__version__,
        summary="网格化管理与巡逻轨迹 · grid management and patrol tracking",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc from our own copies (api/routers/home.py), no CDN
        redoc_url=None,
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
        home,
        admin_areas,
        users,
        devices,
        positions,
        grids,
        redraw,
        coverage,
        incidents,
        live,  # Server-Sent Events for the dispatcher console
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
    app.include_router(coverage_map.router)
    app.include_router(mobile.router)  # the grid worker's phone page: sign-in, /api/v1/m
    app.include_router(mobile_pages.router)  # … the page itself (/m/) and its service worker
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
